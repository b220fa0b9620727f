"""Warm-up that follows reputation: a new domain's rate (and daily volume) grows only while its mail is received well.

A calendar warm-up (day n: rate n) keeps growing while a provider defers or
its users complain, which is how a new domain ruins its reputation. Here the
schedule is a list of steps (``warmup_schedule``: messages a second, and
optionally ``warmup_daily_caps``: messages a day). Once a day,
``warmup_review`` judges each warming domain's previous UTC day from its
counters and pauses:

- **advance** a step when the day was healthy (``_HEALTHY``) and the domain
  used its step (at least half its daily cap, or ``_MIN_VOLUME`` messages);
- **back off** a step when it was not (``_UNHEALTHY``: deferrals, complaints
  or bounces past a limit, or a detector pause of the domain or one of its
  streams that day);
- **hold** otherwise (a quiet day proves nothing).

Each provider stream is judged as well as the domain (one that sent at least
``_MIN_VOLUME`` that day): a provider that defers a new domain's mail holds
its warm-up back even when the others' volume would hide it in the sum.
Each decision is audited with the day's numbers (and the stream that decided). ``domain_rate`` reads the
step; the worker stops a day's sending at the step's cap (``daily_remaining``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from audit.services import DETECTOR, audit_record
from deliverability.models import DomainMinute, PauseEvidence, SendingDomain

_MIN_VOLUME = 100  # a day with less mail than this (and no cap to use half of) says nothing either way
# (bounce, complaint, deferral) rates: at most these for a healthy day; past these an unhealthy one.
_HEALTHY = (0.03, 0.001, 0.05)
_UNHEALTHY = (0.08, 0.003, 0.20)


@dataclass(frozen=True)
class Day:
    sent: int
    bounced: int
    complained: int
    deferred: int
    paused: bool  # the detector paused the domain that day

    def rates(self) -> tuple[float, float, float]:
        attempts = max(self.sent, 1)
        return self.bounced / attempts, self.complained / attempts, self.deferred / max(self.sent + self.deferred, 1)


def warmup_review(*, today: date | None = None) -> dict[str, str]:
    """Judge every warming domain's previous UTC day once: {domain: "advance" | "back off" | "hold"}."""
    today = today or timezone.now().date()
    decisions = {}
    for domain in SendingDomain.objects.filter(warmup_started_on__isnull=False).exclude(warmup_schedule=[]):
        if domain.warmup_step_since is not None and domain.warmup_step_since >= today:
            continue  # judged today already (the beat may run twice)
        decisions[domain.domain] = _review(domain, today)
    return decisions


def _review(domain: SendingDomain, today: date) -> str:
    day, streams = _day(domain, today - timedelta(days=1))
    decision, worst = _decide(domain, day), None
    for provider, stream in streams.items():
        if stream.sent < _MIN_VOLUME:
            continue  # too little mail to one provider to say anything of it
        verdict = _judge(stream, used=True)
        if _RANK[verdict] < _RANK[decision]:
            decision, worst = verdict, provider
    last = len(domain.warmup_schedule) - 1
    step = {"advance": min(domain.warmup_step + 1, last), "back off": max(domain.warmup_step - 1, 0)}.get(decision, domain.warmup_step)
    with transaction.atomic():
        SendingDomain.objects.filter(pk=domain.pk).update(warmup_step=step, warmup_step_since=today)
        bounce, complaint, deferral = day.rates()
        audit_record(
            action="domain.warmup", target=domain, actor=DETECTOR, reason=decision,
            data={
                "from_step": domain.warmup_step, "to_step": step, "sent": day.sent, "bounce_rate": round(bounce, 4),
                "complaint_rate": round(complaint, 5), "deferral_rate": round(deferral, 4), "paused": day.paused,
                **({} if worst is None else {"stream": worst or "other", "stream_rates": [round(r, 4) for r in streams[worst].rates()]}),
            },
        )
    return decision


_RANK = {"back off": 0, "hold": 1, "advance": 2}  # the worst of the domain's and its streams' verdicts decides


def _decide(domain: SendingDomain, day: Day) -> str:
    cap = step_cap(domain)
    return _judge(day, used=day.sent >= (cap / 2 if cap else _MIN_VOLUME))


def _judge(day: Day, *, used: bool) -> str:
    rates = day.rates()
    if day.paused or any(rate > limit for rate, limit in zip(rates, _UNHEALTHY, strict=True)):
        return "back off"
    if used and all(rate <= limit for rate, limit in zip(rates, _HEALTHY, strict=True)):
        return "advance"
    return "hold"


def _day(domain: SendingDomain, day: date) -> tuple[Day, dict[str, Day]]:
    """The domain's day, and each of its provider streams' (their pauses are the domain's: ``paused`` is False)."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    rows = DomainMinute.objects.filter(sending_domain=domain, minute__gte=start, minute__lt=start + timedelta(days=1))
    sums = rows.values("provider").annotate(
        sent=Sum("sent"), hard=Sum("bounced_hard"), soft=Sum("bounced_soft"), reputation=Sum("bounced_reputation"),
        complained=Sum("complained"), deferred=Sum("deferred"),
    )
    streams = {
        r["provider"]: Day(
            sent=r["sent"] or 0, bounced=(r["hard"] or 0) + (r["soft"] or 0) + (r["reputation"] or 0),
            complained=r["complained"] or 0, deferred=r["deferred"] or 0, paused=False,
        )
        for r in sums
    }
    # Any pause that day, the domain's or one of its streams'.
    paused = PauseEvidence.objects.filter(sending_domain=domain, created_at__gte=start, created_at__lt=start + timedelta(days=1))
    total = Day(
        sent=sum(d.sent for d in streams.values()), bounced=sum(d.bounced for d in streams.values()),
        complained=sum(d.complained for d in streams.values()), deferred=sum(d.deferred for d in streams.values()),
        paused=paused.exists(),
    )
    return total, streams


def step_cap(domain: SendingDomain) -> int | None:
    """Messages a day the domain's warm-up step allows; None when it has no daily cap."""
    caps = domain.warmup_daily_caps or []
    if not caps or domain.warmup_started_on is None:
        return None
    return int(caps[min(domain.warmup_step, len(caps) - 1)])


def daily_remaining(domain: SendingDomain, *, now: datetime | None = None) -> int | None:
    """Messages the domain may still send today under its warm-up cap (UTC day); None when uncapped."""
    cap = step_cap(domain)
    if cap is None:
        return None
    midnight = datetime.combine((now or timezone.now()).date(), time(), tzinfo=UTC)
    sent = DomainMinute.objects.filter(sending_domain=domain, minute__gte=midnight).aggregate(n=Sum("sent"))["n"] or 0
    return max(cap - sent, 0)
