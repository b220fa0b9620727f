"""Running the anomaly detector over every domain: counters in, pauses with evidence out.

The beat task calls ``detector_run`` every minute. Under a lock on the one
``DetectorState`` row it feeds every complete minute since the last run (at
most ``BACKFILL_MINUTES``) to ``deliverability.detector.detector_step``,
pauses the domains it decides on through ``domain_pause`` (the on-call path)
and saves the state, all in one transaction: a crash loses nothing and
decides nothing twice. Notifications go out after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane import metrics
from deliverability import detector
from deliverability.models import DetectorState, PauseEvidence, SendingDomain
from deliverability.notify import pause_notify
from deliverability.selectors import MinuteSeries, domain_minute_series
from deliverability.services.counters import minute_of
from deliverability.services.pause import domain_pause, hand_overs_wait

_STATE = "default"
_IDS = np.int64


@dataclass(frozen=True)
class RunResult:
    minutes: int  # complete minutes fed to the detector
    domains: int
    paused: list[PauseEvidence]


@metrics.timed_detector_run
def detector_run(*, now: datetime | None = None) -> RunResult:
    """Feed every complete minute not yet seen; pause what the detector decides. Safe to run concurrently."""
    end = minute_of(now or timezone.now())  # the current minute is still filling
    with transaction.atomic():
        row = _locked_state_row()
        domain_ids = np.array(SendingDomain.objects.order_by("id").values_list("id", flat=True), dtype=_IDS)
        state = _aligned_state(row, domain_ids)
        start = _first_minute(row, end)
        if start >= end:
            return RunResult(0, len(domain_ids), [])
        series = domain_minute_series(start=start, end=end, domain_ids=domain_ids.tolist())
        paused = [_pause(domain_ids, series, m, decisions) for m, decisions in _steps(state, series)]
        evidence = [item for batch in paused for item in batch]
        row.state, row.domain_ids, row.minute = state.to_bytes(), domain_ids.tobytes(), end - timedelta(minutes=1)
        row.save(update_fields=["state", "domain_ids", "minute", "updated_at"])
        for item in evidence:
            transaction.on_commit(lambda item=item: pause_notify(item))
    metrics.detector_observed(state)
    for item in evidence:  # the pauses are visible now: wait out the chunks that were mid-hand-over
        hand_overs_wait(SendingDomain, item.sending_domain_id)
    return RunResult(len(series.minutes), len(domain_ids), evidence)


def detector_reset(*, domain_id: int) -> None:
    """Forget what the detector learned about one domain (a resume): it starts cold again."""
    with transaction.atomic():
        row = _locked_state_row()
        if not row.state:
            return
        ids = np.frombuffer(bytes(row.domain_ids), dtype=_IDS)
        where = np.flatnonzero(ids == domain_id)
        if where.size:
            state = detector.DetectorState.from_bytes(bytes(row.state))
            state.reset(where)
            row.state = state.to_bytes()
            row.save(update_fields=["state", "updated_at"])


def _locked_state_row() -> DetectorState:
    DetectorState.objects.get_or_create(name=_STATE)
    return DetectorState.objects.select_for_update().get(name=_STATE)


def _aligned_state(row: DetectorState, domain_ids: np.ndarray) -> detector.DetectorState:
    """The saved state with one entry per current domain, in ``domain_ids`` order; new domains start cold."""
    config = detector.DEFAULT
    if not row.state:
        return detector.DetectorState.empty(len(domain_ids), config)
    saved = detector.DetectorState.from_bytes(bytes(row.state))
    saved_ids = np.frombuffer(bytes(row.domain_ids), dtype=_IDS)
    if len(saved_ids) <= len(domain_ids) and np.array_equal(saved_ids, domain_ids[: len(saved_ids)]):
        saved.grow(len(domain_ids))  # the usual case: ids only grow, new domains come last
        return saved
    # A domain was deleted: keep the entries of the domains that remain, the rest start cold.
    fresh = detector.DetectorState.empty(len(domain_ids), config)
    position = {int(d): i for i, d in enumerate(saved_ids)}
    old = np.array([position.get(int(d), -1) for d in domain_ids])
    fresh.copy_from(saved, source=old[old >= 0], target=np.flatnonzero(old >= 0))
    return fresh


def _first_minute(row: DetectorState, end: datetime) -> datetime:
    earliest = end - timedelta(minutes=settings.SENDPLANE_DETECTOR["BACKFILL_MINUTES"])
    return earliest if row.minute is None else max(earliest, row.minute + timedelta(minutes=1))


def _steps(state: detector.DetectorState, series: MinuteSeries):  # type: ignore[no-untyped-def]
    c = series.counts
    bounced = c["bounced_hard"] + c["bounced_soft"] + c["bounced_reputation"]
    for m in range(len(series.minutes)):
        decisions = detector.detector_step(state, c["sent"][:, m], bounced[:, m], c["complained"][:, m], c["bounced_reputation"][:, m])
        if len(decisions.index):
            yield m, decisions


def _pause(domain_ids: np.ndarray, series: MinuteSeries, m: int, decisions: detector.Decisions) -> list[PauseEvidence]:
    minute = series.minutes[m].astype("datetime64[s]").astype(datetime).replace(tzinfo=UTC)
    paused = []
    for k, index in enumerate(decisions.index.tolist()):
        domain = SendingDomain.objects.get(pk=int(domain_ids[index]))
        evidence = PauseEvidence(
            minute=minute,
            signal=detector.SIGNALS[int(decisions.signal[k])],
            rule=str(decisions.rule[k]),
            baseline=float(decisions.baseline[k]),
            observed=float(decisions.observed[k]),
            statistic=float(decisions.statistic[k]),
            threshold=float(decisions.threshold[k]),
            volume=int(decisions.volume[k]),
            events=int(round(float(decisions.events[k]))),
        )
        outcome = domain_pause(domain=domain, reason=evidence.summary(), evidence=evidence)
        if outcome.changed:  # a person may have paused it already; then the evidence is not stored
            paused.append(evidence)
    return paused
