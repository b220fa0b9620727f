"""What the reputation chart draws (``charts.reputation_chart``, ``controlplane/static/sendplane/charts.js``): reads only.

**Series.** One window per range, bucketed in SQL so that no series passes
1,440 points: 1 h and 24 h per minute, 7 d per 10 minutes, 30 d per hour. One
grouped query sums each provider stream's counters per bucket (the hour, then
the minute within it divided by the step: portable to SQLite); numpy places
the sums on the axis, so the cost is the rows the query returns, never a
Python loop over minutes. Volumes are messages a minute (a bucket's sum over
the minutes it covers, the current one included), so the ranges read on one
scale. Rates are over a trailing window (``rate_minutes``: 15 minutes on the
24 h chart) rather than per bucket: one bounce among 30 messages of a minute
is not a 3% bounce rate, and the detector's ceilings are judged over a window
too. Null where nothing was sent in it: a gap in the line, not a zero.

**Marks.** The audit trail says who paused or resumed the domain, one of its
provider streams, or all sending, and why; the detector's ``PauseEvidence``
adds its numbers (and stands in for a pause the trail lacks). A pause that
began before the window and still holds is marked at its start, so its band
covers the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db.models import F, Q, Sum, Value
from django.db.models.functions import ExtractMinute, Floor, TruncHour
from django.utils import timezone

from audit.models import AuditEntry
from audit.selectors import audit_entries
from deliverability import detector
from deliverability.models import DomainMinute, PauseEvidence, ProviderStream, SendingDomain, SendingSwitch
from deliverability.providers import OTHER_PROVIDERS, PROVIDER_DOMAINS


@dataclass(frozen=True)
class ChartRange:
    span: timedelta
    step_minutes: int  # divides 60: a bucket never straddles an hour
    rate_minutes: int  # the trailing window of the rates, a multiple of the step
    label: str


RANGES = {
    "1h": ChartRange(timedelta(hours=1), 1, 5, "last hour"),
    "24h": ChartRange(timedelta(hours=24), 1, 15, "last 24 hours"),
    "7d": ChartRange(timedelta(days=7), 10, 60, "last 7 days"),
    "30d": ChartRange(timedelta(days=30), 60, 60, "last 30 days"),
}
DEFAULT_RANGE = "24h"
PROVIDER_ORDER = [*PROVIDER_DOMAINS, ""]  # the groups, then every other receiver
_SUMMED = ("sent", "bounced_hard", "bounced_soft", "bounced_reputation", "complained")
# Who acted and why, as the audit trail records it: action -> (kind, what, scope).
_ACTIONS = {
    "domain.pause": ("pause", "Paused", "domain"),
    "domain.resume": ("resume", "Resumed", "domain"),
    "domain.override": ("resume", "Detector overridden", "domain"),
    "stream.pause": ("pause", "Paused", "stream"),
    "stream.resume": ("resume", "Resumed", "stream"),
    "sending.pause_all": ("pause", "Paused", "all"),
    "sending.resume_all": ("resume", "Resumed", "all"),
}


@dataclass(frozen=True)
class Window:
    start: datetime  # the first bucket's start
    end: datetime  # the last bucket's end (past now: the current bucket is drawn as far as it went)
    now: datetime  # the end of the current minute
    step_minutes: int

    @property
    def buckets(self) -> int:
        return int((self.end - self.start) / timedelta(minutes=self.step_minutes))


def chart_window(range_name: str, now: datetime | None = None) -> Window:
    """The range's buckets, ending with the one the current minute is in."""
    chosen = RANGES[range_name]
    current = (now or timezone.now()).astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    step = timedelta(minutes=chosen.step_minutes)
    end = current + (datetime.min.replace(tzinfo=UTC) - current) % step  # rounded up to a whole step
    return Window(start=end - chosen.span, end=end, now=current, step_minutes=chosen.step_minutes)


def reputation_chart_data(*, domain: SendingDomain, range_name: str = DEFAULT_RANGE, now: datetime | None = None) -> dict[str, Any]:
    """Everything one chart draws, as JSON-ready values (times in Unix seconds, rates as fractions)."""
    window = chart_window(range_name, now)
    lead = RANGES[range_name].rate_minutes // window.step_minutes - 1  # buckets before the window the first rate reads
    providers, read = stream_buckets(domain=domain, window=window, lead=lead)
    counts = {name: values[:, lead:] for name, values in read.items()}  # the window's own buckets
    trailing = {name: _trailing(values, lead + 1) for name, values in read.items()}
    minutes = _minutes_covered(window)
    total = {name: values.sum(axis=0) for name, values in counts.items()}
    total_trailing = {name: values.sum(axis=0) for name, values in trailing.items()}
    bounce, complaint = detector.DEFAULT.ceiling[0], detector.DEFAULT.ceiling[1]
    return {
        "domain": domain.domain,
        "range": range_name,
        "ranges": list(RANGES),
        "label": RANGES[range_name].label,
        "step_minutes": window.step_minutes,
        "rate_minutes": RANGES[range_name].rate_minutes,
        "start": int(window.start.timestamp()),
        "end": int(window.end.timestamp()),
        "now": int(window.now.timestamp()),
        "t": (window.start.timestamp() + 60 * window.step_minutes * np.arange(window.buckets)).astype(np.int64).tolist(),
        "sent_per_minute": _per_minute(total["sent"], minutes),
        "bounce_rate": _rate(_bounced(total_trailing), total_trailing["sent"]),
        "complaint_rate": _rate(total_trailing["complained"], total_trailing["sent"]),
        "providers": [
            {
                "key": provider or OTHER_PROVIDERS,
                "sent_per_minute": _per_minute(counts["sent"][row], minutes),
                "bounce_rate": _rate(_bounced(trailing, row), trailing["sent"][row]),
                "totals": _totals({name: values[row] for name, values in counts.items()}),
            }
            for row, provider in enumerate(providers)
        ],
        "totals": _totals(total),
        "thresholds": [
            {"key": "bounce_rate", "label": "bounce ceiling", "value": bounce},
            {"key": "complaint_rate", "label": "complaint ceiling", "value": complaint},
        ],
        "marks": chart_marks(domain=domain, window=window),
    }


def stream_buckets(*, domain: SendingDomain, window: Window, lead: int = 0) -> tuple[list[str], dict[str, np.ndarray]]:
    """Each provider stream with mail in the window (``PROVIDER_ORDER``) and its counters per bucket, from ``lead``
    buckets before the window: one grouped query."""
    step = window.step_minutes
    first_bucket = window.start - timedelta(minutes=step * lead)
    rows = list(
        DomainMinute.objects.filter(sending_domain=domain, minute__gte=first_bucket, minute__lt=window.end)
        .order_by()  # the model's ordering would split the groups
        .values("provider", hour=TruncHour("minute", tzinfo=UTC), part=Floor(ExtractMinute("minute", tzinfo=UTC) / Value(step)))
        .annotate(**{name: Sum(F(name)) for name in _SUMMED})
        .values_list("provider", "hour", "part", *_SUMMED)
    )
    providers = sorted({r[0] for r in rows}, key=lambda p: PROVIDER_ORDER.index(p) if p in PROVIDER_ORDER else len(PROVIDER_ORDER))
    counts = {name: np.zeros((len(providers), lead + window.buckets), dtype=np.int64) for name in _SUMMED}
    if not rows:
        return providers, counts
    row_of = {provider: index for index, provider in enumerate(providers)}
    columns = list(zip(*rows, strict=True))
    hours = np.array([hour.astimezone(UTC).replace(tzinfo=None) for hour in columns[1]], dtype="datetime64[m]")
    first = np.datetime64(first_bucket.replace(tzinfo=None), "m")
    index = ((hours - first).astype(np.int64) + np.asarray(columns[2], dtype=np.int64) * step) // step
    target = np.array([row_of[p] for p in columns[0]], dtype=np.int64)
    for offset, name in enumerate(_SUMMED, start=3):
        counts[name][target, index] = np.asarray(columns[offset], dtype=np.int64)
    return providers, counts


def _trailing(values: np.ndarray, width: int) -> np.ndarray:
    """Sums over each bucket and the ``width - 1`` before it, along the last axis (``width - 1`` fewer buckets)."""
    sums = np.cumsum(values, axis=-1)
    before = np.concatenate([np.zeros((*values.shape[:-1], 1), dtype=sums.dtype), sums[..., :-width]], axis=-1)
    return sums[..., width - 1 :] - before


def _minutes_covered(window: Window) -> np.ndarray:
    """Minutes of each bucket that have happened: the whole step, but the current bucket only up to now."""
    covered = np.full(window.buckets, window.step_minutes, dtype=np.float64)
    covered[-1] = window.step_minutes - (window.end - window.now) / timedelta(minutes=1)
    return covered


def _bounced(counts: dict[str, np.ndarray], row: int | None = None) -> np.ndarray:
    pick = (lambda a: a) if row is None else (lambda a: a[row])
    return pick(counts["bounced_hard"]) + pick(counts["bounced_soft"]) + pick(counts["bounced_reputation"])


def _per_minute(sent: np.ndarray, minutes: np.ndarray) -> list[float]:
    return np.round(sent / minutes, 2).tolist()


def _rate(events: np.ndarray, sent: np.ndarray) -> list[float | None]:
    """events / sent per bucket, None where nothing was sent (a gap in the line, not a zero)."""
    rates = np.round(np.divide(events, sent, out=np.zeros(len(sent)), where=sent > 0), 5)
    return [float(r) if n else None for r, n in zip(rates.tolist(), sent.tolist(), strict=True)]


def _totals(counts: dict[str, np.ndarray]) -> dict[str, Any]:
    sent, bounced, complained = int(counts["sent"].sum()), int(_bounced(counts).sum()), int(counts["complained"].sum())
    return {
        "sent": sent, "bounced": bounced, "complained": complained,
        "bounce_rate": bounced / sent if sent else None, "complaint_rate": complained / sent if sent else None,
    }


# --- marks: pauses and resumes, who and why ----------------------------------------------------------


def chart_marks(*, domain: SendingDomain, window: Window) -> list[dict[str, Any]]:
    """Pauses and resumes of the domain, its streams and all sending in the window, oldest first, with who and why."""
    entries = list(
        audit_entries(since=window.start, until=window.end).filter(
            Q(target_type=SendingDomain._meta.label_lower, target_id=str(domain.pk), action__in=list(_ACTIONS))
            | Q(target_type=SendingSwitch._meta.label_lower, action__in=["sending.pause_all", "sending.resume_all"])
        ).order_by("created_at", "id")
    )
    rows = PauseEvidence.objects.filter(sending_domain=domain, created_at__gte=window.start, created_at__lt=window.end)
    evidence = {row.pk: row for row in rows}
    marks = [_audit_mark(entry, evidence, window) for entry in entries]
    told = {entry.data.get("evidence") for entry in entries}
    marks += [_evidence_mark(row, window) for pk, row in evidence.items() if pk not in told]
    marks += _held_from_before(domain, window)
    return sorted(marks, key=lambda mark: mark["at"])


def _audit_mark(entry: AuditEntry, evidence: dict[int, PauseEvidence], window: Window) -> dict[str, Any]:
    kind, what, scope = _ACTIONS[entry.action]
    provider = entry.data.get("provider") if scope == "stream" else None
    found = evidence.get(entry.data.get("evidence"))
    reason = _reason(found) if found is not None else entry.reason
    if entry.action == "domain.override":
        reason = f"{entry.reason.strip() or 'no reason given'} (until {_when(datetime.fromisoformat(entry.data['until']), window)})"
    return _mark(kind, what, scope, provider, entry.created_at, entry.actor_label, reason, window, found)


def _evidence_mark(row: PauseEvidence, window: Window) -> dict[str, Any]:
    scope = "domain" if row.provider is None else "stream"
    return _mark("pause", "Paused", scope, row.provider, row.created_at, "detector", _reason(row), window, row)


def _held_from_before(domain: SendingDomain, window: Window) -> list[dict[str, Any]]:
    """Pauses that began before the window and still hold: their band starts at the window's left edge."""
    held: list[Any] = [domain] if domain.paused and domain.paused_at and domain.paused_at < window.start else []
    held += ProviderStream.objects.filter(sending_domain=domain, paused=True, paused_at__lt=window.start)
    held += SendingSwitch.objects.filter(paused=True, paused_at__lt=window.start)
    return [
        _mark(
            "pause", "Paused", _SCOPES[type(row)], getattr(row, "provider", None), row.paused_at, row.paused_by, row.paused_reason,
            window, None,
        )
        for row in held
    ]


_SCOPES = {SendingDomain: "domain", ProviderStream: "stream", SendingSwitch: "all"}


def _mark(
    kind: str, what: str, scope: str, provider: str | None, at: datetime, actor: str, reason: str, window: Window,
    found: PauseEvidence | None,
) -> dict[str, Any]:
    stream = provider or OTHER_PROVIDERS
    subject = {"domain": "", "stream": f" the {stream} stream", "all": " all sending"}[scope]
    why = reason.strip() or "no reason given"
    return {
        "kind": kind,
        "scope": scope,
        "provider": stream if scope == "stream" else None,
        "at": round(at.timestamp(), 3),  # to the millisecond: a pause and its resume within a second keep their order
        "actor": actor or "system",
        "reason": why,
        "text": f"{what}{subject} {_when(at, window)} by {actor or 'system'}: {why}",
        "evidence": _evidence(found),
    }


def _reason(row: PauseEvidence) -> str:
    """The evidence's summary without its "detector[ at x]: " lead (the mark names who acted)."""
    summary = row.summary()
    return summary.split(": ", 1)[1] if summary.startswith("detector") else summary


def _evidence(row: PauseEvidence | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "signal": row.signal, "rule": row.rule, "observed": row.observed, "baseline": row.baseline, "volume": row.volume,
        "events": row.events, "replies": row.replies,
    }


def _when(at: datetime, window: Window) -> str:
    """"14:02 UTC" on the window's last day, with the date before that (and "since" before the window)."""
    at = at.astimezone(UTC)
    text = f"{at:%H:%M} UTC" if at.date() == (window.now - timedelta(minutes=1)).date() else f"{at:%d %b %H:%M} UTC"
    return text if at >= window.start else f"since {text}"
