"""A campaign's results as the admin draws them: a table of counts and, per rate, one bar per version with its interval.

Server-side SVG, no JavaScript: each bar has a ``<title>`` (hover) with the
count, the denominator and the 95% interval, and the chart an ``aria-label``.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from dispatch.models import CampaignResult
from dispatch.selectors import Rate, Result
from dispatch.services.results import micros_amount

CHARTED = ("bounce", "complaint", "unsubscribe", "click", "open")  # open last: Apple's proxy inflates it
_COLOURS = ("#447e9b", "#e08e0b", "#5a9e4b", "#a8479b", "#8a6d3b", "#417690")
_WIDTH, _LABEL, _ROW, _BAR = 640, 150, 14, 12


def results_html(total: Result, versions: list[Result]) -> SafeString:
    if not total.counts["accepted"]:
        return format_html("<p>{}</p>", "No message yet.")
    return format_html("{}{}<p class=\"help\">{}</p>", _table(total, versions), _chart(versions),
                       "Opens are inflated by Apple Mail Privacy Protection: shown, never decided on. "
                       "Each rate on its own scale; whiskers: 95% intervals.")


def _name(result: Result) -> str:
    return f"{result.variant} v{result.number}" if result.number is not None else "all"


def _table(total: Result, versions: list[Result]) -> SafeString:
    # A column per version and one for the total, a row per count: versions compare side by side, and the table
    # stays as narrow as the admin's field (a row per version, 13 columns wide, hid the cost past the page's edge).
    shown = [*versions, total]
    head = format_html_join("", "<th scope=\"col\">{}</th>", ((_name(r),) for r in shown))
    rows = format_html_join(
        "", "<tr><th scope=\"row\">{}</th>{}</tr>",
        (
            (name.replace("_", " "), format_html_join("", "<td>{}</td>", ((r.counts[name],) for r in shown)))
            for name in CampaignResult.COUNTS
        ),
    )
    cost = format_html(
        "<tr class=\"cost\"><th scope=\"row\">cost ({})</th>{}</tr>", settings.SENDPLANE_COST_CURRENCY,
        format_html_join("", "<td>{}</td>", ((micros_amount(r.cost_micros),) for r in shown)),
    )
    return format_html(
        "<table class=\"results\"><thead><tr><th scope=\"col\">count</th>{}</tr></thead><tbody>{}{}</tbody></table>",
        head, rows, cost,
    )


def _chart(versions: list[Result]) -> SafeString:
    rates = [(name, [(v, v.rates()[name]) for v in versions]) for name in CHARTED]
    parts, y = [], 0
    for name, group in rates:
        # Each rate on its own scale: on one scale, a 40% open rate left complaint bars of 0.1% under a pixel wide.
        # Set by the versions that had events: a rate with none anywhere is drawn as its "0.00%" alone (its interval's
        # upper end, 0.05% of 8,000 say, would otherwise span the chart); the hover title still gives the interval.
        top = max(((r.interval or (0.0, 0.0))[1] for _, r in group if r.events), default=0.0)
        scale = (_WIDTH - _LABEL - 60) / top if top else 0.0
        parts.append(format_html("<text x=\"0\" y=\"{}\" font-weight=\"bold\">{} rate</text>", y + 11, name))
        y += _ROW + 2
        for index, (version, rate) in enumerate(group):
            parts.append(_bar(version, rate, y, scale, _COLOURS[index % len(_COLOURS)]))
            y += _ROW
        y += 6
    label = "; ".join(
        f"{name} rate " + ", ".join(f"{_name(v)} {_percent(r)}" for v, r in group) for name, group in rates
    )
    return format_html(
        "<svg class=\"results-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" role=\"img\" "
        "aria-label=\"{}\" font-size=\"11\">{}</svg>",
        _WIDTH, y, label, format_html_join("", "{}", ((p,) for p in parts)),
    )


def _bar(version: Result, rate: Rate, y: int, scale: float, colour: str) -> SafeString:
    value = rate.value or 0.0
    low, high = rate.interval or (0.0, 0.0)
    x0 = _LABEL
    title = f"{_name(version)}: {rate.events} of {rate.trials}, {_percent(rate)}"
    if rate.interval:
        title += f" (95%: {low:.2%} to {high:.2%})"
    def at(x: float) -> str:  # format_html escapes its arguments to text first: numbers are formatted here
        return f"{x:.1f}"

    return format_html(
        "<g><title>{}</title><text x=\"10\" y=\"{}\">{}</text>"
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>"
        "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#333\"/>"
        "<text x=\"{}\" y=\"{}\">{}</text></g>",
        title, y + 10, _name(version),
        x0, y + 1, at(value * scale), _BAR, colour,
        at(x0 + low * scale), at(x0 + high * scale), y + 7, y + 7,
        at(x0 + high * scale + 4), y + 10, _percent(rate),
    )


def _percent(rate: Rate) -> str:
    return "n/a" if rate.value is None else f"{rate.value:.2%}"
