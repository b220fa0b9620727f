"""Between minutes: a worker that has just recorded refusals asks whether the domain's bounces already decide.

The minute pass (``detection.detector_run``) judges complete minutes once the
beat runs it; by then a list import at a third unknown users has sent
hundreds. After a batch that heard bounces, the worker calls ``batch_watch``:
the domain's address bounces since the minute pass's last minute, judged
with its state (``BatchWatch``, written by the pass) by
``detector.bounce_between``. Refusals about us (blocks, authentication) are
left to the provider's stream, which answers them at once, and to the pass.
A decision pauses the domain the way the minute pass does (``domain_pause``
with ``PauseEvidence``, rule ``batch``, the replies that decided), guarded by
the domain's epoch so a resume is never undone by old data.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from django.db.models import Sum
from django.utils import timezone

from deliverability import detector
from deliverability.models import BatchWatch, DetectorState, DomainMinute, EventType, FeedbackEvent, PauseEvidence, SendingDomain
from deliverability.services.counters import minute_of
from deliverability.services.pause import PauseOutcome, domain_pause, overridden

_STATE = "default"  # detection's state row
_REPLIES_SHOWN = 3
_WRITE_CHANGE = 0.02  # a row is rewritten when p0 or p1 moved by more than this (relative), or the CUSUM changed


def batch_watch(domain: SendingDomain) -> PauseOutcome | None:
    """Pause ``domain`` when its bounces since the minute pass's last minute decide; None when they do not."""
    if overridden(domain):
        return None  # an operator holds the detector off it; the minute pass keeps its view
    since = _since()
    # Address bounces only: a refusal about us (a block, failing authentication) is one provider's verdict, which
    # that provider's stream answers at once (services/streams.py); the minute pass still judges them domain-wide.
    counts = DomainMinute.objects.filter(sending_domain=domain, minute__gte=since).aggregate(
        sent=Sum("sent"), bounced=Sum("bounced_hard") + Sum("bounced_soft")
    )
    trials, events = counts["sent"] or 0, counts["bounced"] or 0
    if not events:
        return None
    cusum, p0, p1, exc_events = _watched(domain)
    statistic, decided = detector.bounce_between_minutes(
        cusum=cusum, p0=p0, p1=p1, exc_events=exc_events, trials=trials, events=events
    )
    if not decided:
        return None
    evidence = PauseEvidence(
        minute=minute_of(timezone.now()), signal=detector.Signal.BOUNCE, rule=detector.Rule.BATCH, baseline=p0,
        observed=events / max(trials, events), statistic=statistic, threshold=detector.DEFAULT.between_threshold,
        volume=max(trials, events), events=events, replies=_replies(domain, since),
    )
    return domain_pause(domain=domain, reason=evidence.summary(), evidence=evidence, expected_epoch=domain.detector_epoch)


def _since() -> datetime:
    """The first minute the minute pass has not judged yet (its backfill start when it never ran)."""
    last = DetectorState.objects.filter(name=_STATE).values_list("minute", flat=True).first()
    return last + timedelta(minutes=1) if last else minute_of(timezone.now())


def _watched(domain: SendingDomain) -> tuple[float, float, float, float]:
    """(cusum, p0, p1, excursion events) as the minute pass left them; a cold domain's where it left none."""
    row = BatchWatch.objects.filter(sending_domain=domain, epoch=domain.detector_epoch).first()
    if row is None:
        p0, p1 = detector.cold_bounce_watch()
        return 0.0, p0, p1, 0.0
    return row.cusum, row.p0, row.p1, row.exc_events


def _replies(domain: SendingDomain, since: datetime) -> list[str]:
    """A few of the refusals that decided, distinct, newest first: what on-call reads first."""
    replies = (
        FeedbackEvent.objects.filter(sending_domain=domain, event_type=EventType.BOUNCED, received_at__gte=since)
        .exclude(smtp_reply="").order_by("-id").values_list("smtp_reply", flat=True)[:50]
    )
    return list(dict.fromkeys(reply[:200] for reply in replies))[:_REPLIES_SHOWN]


def batch_watch_save(state: detector.DetectorState, ids: np.ndarray, epochs: np.ndarray, active: np.ndarray) -> int:
    """After a minute pass: write the bounce CUSUM state of the domains that had data (``active``: indexes of ``ids``)
    where it changed. Returns rows written. A domain without data keeps its row: its baseline only forgets, slowly."""
    watch = detector.bounce_watch(state)
    existing = {row.pk: row for row in BatchWatch.objects.filter(sending_domain_id__in=ids[active].tolist())}
    cold_p0, _ = detector.cold_bounce_watch()
    changed = []
    for i in active.tolist():
        domain_id = int(ids[i])
        values = {
            "epoch": int(epochs[i]), "cusum": float(watch.cusum[i]), "p0": float(watch.p0[i]), "p1": float(watch.p1[i]),
            "exc_events": float(watch.exc_events[i]), "exc_trials": float(watch.exc_trials[i]),
        }
        row = existing.get(domain_id)
        if row is None:
            if values["cusum"] or abs(values["p0"] - cold_p0) > _WRITE_CHANGE * cold_p0:  # else it reads as cold anyway
                changed.append(BatchWatch(sending_domain_id=domain_id, **values))
            continue
        if _moved(row, values):
            for name, value in values.items():
                setattr(row, name, value)
            changed.append(row)
    fields = ["epoch", "cusum", "p0", "p1", "exc_events", "exc_trials"]
    BatchWatch.objects.bulk_create(changed, update_conflicts=True, unique_fields=["sending_domain"], update_fields=fields)
    return len(changed)


def _moved(row: BatchWatch, values: dict[str, float]) -> bool:
    if row.epoch != values["epoch"] or row.cusum != values["cusum"] or row.exc_events != values["exc_events"]:
        return True
    return abs(row.p0 - values["p0"]) > _WRITE_CHANGE * row.p0 or abs(row.p1 - values["p1"]) > _WRITE_CHANGE * row.p1
