"""The reputation chart of a domain, as inline SVG: no JavaScript, no external assets in the admin.

Three aligned strips over the same time axis: messages sent per step (bars),
bounce rate and complaint rate (lines), with a dashed red line at each
automatic pause and, when ``ceilings`` are given, a dotted line across each
rate strip at the detector's absolute ceiling for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from deliverability.models import PauseEvidence
from deliverability.selectors import ReputationPoint

WIDTH, STRIP, GAP, LEFT = 720, 70, 18, 60


def reputation_svg(
    points: Sequence[ReputationPoint], pauses: Sequence[PauseEvidence], *, ceilings: tuple[float, float] | None = None
) -> SafeString:
    """``ceilings``: (bounce, complaint) rates to draw as threshold lines, e.g. ``detector.DEFAULT.ceiling[:2]``."""
    if not points:
        return format_html("<p>{}</p>", "No traffic in this window.")
    step = (WIDTH - LEFT) / len(points)
    bounce_ceiling, complaint_ceiling = ceilings or (None, None)
    strips = [
        _bars("sent", [p.sent for p in points], step, top=0),
        _line("bounce rate", [p.bounce_rate for p in points], step, top=STRIP + GAP, colour="#b00", floor=0.05, ceiling=bounce_ceiling),
        _line(
            "complaint rate", [p.complaint_rate for p in points], step, top=2 * (STRIP + GAP), colour="#c60", floor=0.003,
            ceiling=complaint_ceiling,
        ),
    ]
    first = points[0].start
    end = points[-1].start + (points[-1].start - points[-2].start if len(points) > 1 else timedelta(minutes=1))
    marks = [_pause_mark(p.minute, first, end) for p in pauses if first <= p.minute < end]
    height = 3 * (STRIP + GAP)
    body = "".join(strips + marks)
    return mark_safe(  # noqa: S308 - every text fragment above went through escape()
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="reputation chart" style="font:11px sans-serif">{body}</svg>'
    )


def _frame(label: str, top: float, top_value: str) -> str:
    return (
        f'<text x="0" y="{top + 12}">{escape(label)}</text><text x="0" y="{top + 26}" fill="#666">{escape(top_value)}</text>'
        f'<line x1="{LEFT}" y1="{top + STRIP}" x2="{WIDTH}" y2="{top + STRIP}" stroke="#ccc"/>'
    )


def _bars(label: str, values: list[int], step: float, *, top: float) -> str:
    peak = max(values) or 1
    bars = "".join(
        f'<rect x="{LEFT + i * step:.1f}" y="{top + STRIP - STRIP * v / peak:.1f}" width="{max(step - 1, 1):.1f}" '
        f'height="{STRIP * v / peak:.1f}" fill="#7a9"/>'
        for i, v in enumerate(values)
        if v
    )
    return _frame(label, top, f"max {peak}") + bars


def _line(
    label: str, rates: list[float | None], step: float, *, top: float, colour: str, floor: float, ceiling: float | None = None
) -> str:
    # Headroom over a ceiling so its line sits inside the strip, not on the frame's top edge.
    peak = max([r for r in rates if r is not None] + [floor] + ([ceiling * 1.25] if ceiling else []))
    y: Callable[[float], float] = lambda r: top + STRIP - STRIP * r / peak  # noqa: E731
    points = " ".join(f"{LEFT + (i + 0.5) * step:.1f},{y(r):.1f}" for i, r in enumerate(rates) if r is not None)
    line = f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>' if points else ""
    return _frame(label, top, f"max {peak:.2%}") + line + (_threshold(y(ceiling), f"ceiling {ceiling:.1%}") if ceiling else "")


def _threshold(y: float, label: str) -> str:
    return (
        f'<line class="threshold" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH}" y2="{y:.1f}" stroke="#555" stroke-dasharray="1 3">'
        f"<title>{escape(label)}</title></line>"
        f'<text x="{WIDTH - 4}" y="{y - 3:.1f}" fill="#555" text-anchor="end">{escape(label)}</text>'
    )


def _pause_mark(minute: datetime, first: datetime, end: datetime) -> str:
    x = LEFT + (WIDTH - LEFT) * (minute - first).total_seconds() / (end - first).total_seconds()
    height = 3 * (STRIP + GAP) - GAP
    return (
        f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#d00" stroke-dasharray="4 3"/>'
        f'<text x="{x + 3:.1f}" y="{height}" fill="#d00">paused</text>'
    )
