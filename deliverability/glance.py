"""A sending domain at a glance: its state, its rate now against the rate allowed, its warm-up step, the detector's verdict.

What the admin's home page lists for each domain (dispatch/cockpit.py) and what the domain's own page shows on
top (deliverability/admin.py). ``domains_at_a_glance`` reads the given domains' counters (the last two minutes,
the last hour, today) in one grouped query and their newest detector evidence in one more, whatever the number
of domains; the rest is arithmetic on the rows already read (``domain_rate``, ``ramp_factor``, the warm-up step).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import F, Q, QuerySet, Sum
from django.utils import timezone

from deliverability import detector
from deliverability.models import DomainMinute, PauseEvidence, ProviderStream, SendingDomain, SendingSwitch
from deliverability.services import domain_rate, ramp_factor

# States, each shown as a word and a colour (never the colour alone).
RUNNING, RAMPING, PAUSED, STOPPED = "running", "ramping", "paused", "stopped"  # stopped: the global switch holds it
# How a verdict reads: fine, worth a look, acted on.
OK, WATCH, ALERT = "ok", "watch", "alert"
RECENT = timedelta(hours=24)  # a detector pause this recent still colours the verdict after its resume


@dataclass(frozen=True)
class Counters:
    sent_now: int  # the last complete minute and the current one so far
    sent_hour: int
    bounced_hour: int
    complained_hour: int
    sent_today: int  # since midnight UTC: what a warm-up step's daily cap counts


@dataclass(frozen=True)
class Warmup:
    step: int  # from 1
    steps: int
    rate: float  # messages a second the step allows
    daily_cap: int | None
    since: date | None  # the day the step was last judged (services/warmup.py)

    @property
    def last(self) -> bool:
        return self.step == self.steps


@dataclass(frozen=True)
class Glance:
    domain: SendingDomain
    state: str
    state_line: str  # one line: who paused it and why, how far the ramp is, what the switch says
    rate_now: float  # messages a second sent over the last complete minute and the current one
    allowed: float  # messages a second allowed now (ramp and warm-up applied); 0 while paused or stopped
    warmup: Warmup | None
    verdict: str  # the detector's, one line
    tone: str  # OK, WATCH or ALERT
    evidence: PauseEvidence | None  # the detector's newest pause of the domain or one of its streams
    counters: Counters

    @property
    def last_hour(self) -> str:
        c = self.counters
        if not c.sent_hour:
            return "nothing sent"
        return f"{c.sent_hour:,} sent, bounces {c.bounced_hour / c.sent_hour:.1%}, complaints {c.complained_hour / c.sent_hour:.2%}"

    @property
    def limits(self) -> str:
        bounce, complaint = detector.DEFAULT.ceiling[0], detector.DEFAULT.ceiling[1]
        return f"It pauses a domain past {bounce:.0%} bounces or {complaint:.1%} complaints, or on a sharp rise over its own baseline."

    @property
    def usage(self) -> float:
        """Rate now as a share of the rate allowed (capped at 1 for the bar; 0 when nothing is allowed)."""
        return min(self.rate_now / self.allowed, 1.0) if self.allowed else 0.0


def domains_at_a_glance(domains: list[SendingDomain], *, switch: SendingSwitch, now: datetime | None = None) -> list[Glance]:
    """Each domain of ``domains``, in their order: two queries whatever their number."""
    now = now or timezone.now()
    ids = [d.pk for d in domains]
    counters, evidence = _counters(ids, now), _newest_evidence(ids)
    seconds = 60 + now.second + now.microsecond / 1e6
    empty = Counters(0, 0, 0, 0, 0)
    return [_glance(d, counters.get(d.pk, empty), evidence.get(d.pk), switch, now, seconds) for d in domains]


def _glance(
    domain: SendingDomain, counters: Counters, evidence: PauseEvidence | None, switch: SendingSwitch, now: datetime, seconds: float
) -> Glance:
    state, line = _state(domain, switch, now)
    verdict, tone = _verdict(domain, evidence, counters, now)
    return Glance(
        domain=domain, state=state, state_line=line, rate_now=counters.sent_now / seconds,
        allowed=0.0 if state in (PAUSED, STOPPED) else domain_rate(domain), warmup=_warmup(domain), verdict=verdict, tone=tone,
        evidence=evidence, counters=counters,
    )


def _state(domain: SendingDomain, switch: SendingSwitch, now: datetime) -> tuple[str, str]:
    if domain.paused:
        since = f" since {domain.paused_at:%Y-%m-%d %H:%M} UTC" if domain.paused_at else ""
        return PAUSED, f"Paused by {domain.paused_by or 'someone'}{since}: {domain.paused_reason or 'no reason given'}"
    if switch.paused:
        return STOPPED, f"All sending is paused by {switch.paused_by}: {switch.paused_reason}"
    factor = ramp_factor(domain, now)
    if factor < 1.0 and domain.ramp_started_at is not None:
        full = domain.ramp_started_at + timedelta(minutes=domain.ramp_minutes)
        return RAMPING, f"Ramping up after a resume: {factor:.0%} of its rate now, all of it at {full:%H:%M} UTC"
    return RUNNING, "Sending at its full rate" if _warmup(domain) is None else "Sending within its warm-up step"


def _verdict(domain: SendingDomain, evidence: PauseEvidence | None, counters: Counters, now: datetime) -> tuple[str, str]:
    if domain.paused and domain.paused_by == "detector":
        return "Paused this domain: resume with force only after reading its evidence", ALERT
    if domain.override_until is not None and domain.override_until > now:
        return f"Overridden until {domain.override_until:%H:%M} UTC: it pauses again then if the signals still say so", WATCH
    if evidence is not None and evidence.created_at >= now - RECENT:
        what = "this domain" if evidence.provider is None else f"the stream to {evidence.provider or 'other receivers'}"
        resumed = f", resumed at {evidence.resumed_at:%H:%M} UTC" if evidence.resumed_at else ", still paused"
        return f"Paused {what} at {evidence.created_at:%Y-%m-%d %H:%M} UTC{resumed}", WATCH
    if not counters.sent_hour:
        return "No anomaly: nothing sent in the last hour", OK
    bounces, complaints = counters.bounced_hour / counters.sent_hour, counters.complained_hour / counters.sent_hour
    return f"No anomaly: bounces {bounces:.1%}, complaints {complaints:.2%} of {counters.sent_hour:,} sent in the last hour", OK


def _warmup(domain: SendingDomain) -> Warmup | None:
    schedule = domain.warmup_schedule or []
    if not schedule or domain.warmup_started_on is None:
        return None
    index = min(domain.warmup_step, len(schedule) - 1)
    caps = domain.warmup_daily_caps or []
    cap = int(caps[min(index, len(caps) - 1)]) if caps else None  # as services/warmup.step_cap reads it
    return Warmup(step=index + 1, steps=len(schedule), rate=float(schedule[index]), daily_cap=cap, since=domain.warmup_step_since)


def _counters(ids: list[int], now: datetime) -> dict[int, Counters]:
    minute = now.replace(second=0, microsecond=0)
    recent, hour = minute - timedelta(minutes=1), minute - timedelta(minutes=59)
    midnight = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
    bounced = F("bounced_hard") + F("bounced_soft") + F("bounced_reputation")
    rows = (
        DomainMinute.objects.filter(sending_domain_id__in=ids, minute__gte=min(midnight, hour))
        .values("sending_domain_id")
        .annotate(
            sent_now=Sum("sent", filter=Q(minute__gte=recent)), sent_hour=Sum("sent", filter=Q(minute__gte=hour)),
            bounced_hour=Sum(bounced, filter=Q(minute__gte=hour)), complained_hour=Sum("complained", filter=Q(minute__gte=hour)),
            sent_today=Sum("sent", filter=Q(minute__gte=midnight)),
        )
        .order_by()
    )
    names = ("sent_now", "sent_hour", "bounced_hour", "complained_hour", "sent_today")
    return {row["sending_domain_id"]: Counters(*(row[name] or 0 for name in names)) for row in rows}


def _newest_evidence(ids: list[int]) -> dict[int, PauseEvidence]:
    rows = PauseEvidence.objects.filter(sending_domain_id__in=ids).order_by("sending_domain_id", "-created_at", "-id")
    return {row.sending_domain_id: row for row in rows.distinct("sending_domain_id")}


def troubled_streams(domain: SendingDomain | None = None) -> QuerySet[ProviderStream]:
    """Streams a provider paused or slowed (one domain's, or every domain's): where on-call looks when one provider refuses us."""
    troubled = ProviderStream.objects.filter(Q(paused=True) | Q(rate_factor__lt=1.0)).select_related("sending_domain")
    if domain is not None:
        troubled = troubled.filter(sending_domain=domain)
    return troubled.order_by("-paused", "sending_domain__domain", "provider")
