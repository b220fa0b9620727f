"""Running the anomaly detector over every domain: counters in, pauses with evidence out.

The beat task calls ``detector_run`` every minute. Under a lock on the one
``DetectorState`` row it feeds every complete minute since the last run (at
most ``BACKFILL_MINUTES``) to ``deliverability.detector.detector_step``,
pauses the domains it decides on through ``domain_pause`` (the on-call path)
and saves the state, all in one transaction: a crash loses nothing and
decides nothing twice. Notifications go out after the commit.

**Resumes.** Calls and locks go one way: this module imports
``services/pause.py`` and locks ``DetectorState`` before any domain row;
``domain_resume`` locks only its domain row and never calls back here.
A resume bumps ``SendingDomain.detector_epoch`` instead. Each run reads
``(id, detector_epoch)`` of every domain, keeps the epochs it read beside
``domain_ids`` in the state row, and starts cold every domain whose epoch
differs from the one saved by the previous run (it was resumed in between).
A resume that commits after this run read the epochs is caught by
``domain_pause(expected_epoch=...)`` under the domain's row lock: the run's
decision rests on pre-resume data, so nothing is paused, and since the run
saves the epoch it read, the next run forgets the domain.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane import metrics
from deliverability import detector
from deliverability.models import DetectorState, PauseEvidence, SendingDomain
from deliverability.notify import pause_notify
from deliverability.selectors import MinuteSeries, domain_minute_series
from deliverability.services.batch_watch import batch_watch_save
from deliverability.services.counters import minute_of
from deliverability.services.handover import hand_overs_wait
from deliverability.services.pause import domain_pause, overridden, override_lapse

logger = logging.getLogger("sendplane.detector")
_STATE = "default"
_IDS = np.int64


@dataclass(frozen=True)
class Domains:
    """Every domain's id and ``detector_epoch`` as this run read them, ordered by id."""

    ids: np.ndarray
    epochs: np.ndarray


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
        domains = _domains()
        state = _aligned_state(row, domains)
        lapses = _lapse_index(domains, override_lapse(now=end))
        start = _first_minute(row, end)
        restarts = _lapse_index(domains, _overrides_begun(since=start - timedelta(minutes=1)))
        if start >= end:
            _return_view(state, lapses, until=None)
            row.state = state.to_bytes()
            row.save(update_fields=["state", "updated_at"])
            return RunResult(0, len(domains.ids), [])
        series = domain_minute_series(start=start, end=end, domain_ids=domains.ids.tolist())
        paused = [_pause(domains, series, m, decisions) for m, decisions in _steps(state, series, lapses, restarts)]
        _return_view(state, lapses, until=None)  # every override that lapsed by now has, whatever minutes there were
        evidence = [item for batch in paused for item in batch]
        row.state, row.minute = state.to_bytes(), end - timedelta(minutes=1)
        row.domain_ids, row.domain_epochs = domains.ids.tobytes(), domains.epochs.tobytes()
        row.save(update_fields=["state", "domain_ids", "domain_epochs", "minute", "updated_at"])
        active = np.flatnonzero(np.any([c.any(axis=1) for c in series.counts.values()], axis=0))  # the rest did not change
        batch_watch_save(state, domains.ids, domains.epochs, active)  # what the workers judge the minutes since by
        for item in evidence:
            transaction.on_commit(partial(pause_notify, item))
    metrics.detector_observed(state, detector.SIGNALS)
    for item in evidence:  # the pauses are visible now: wait out the chunks that were mid-hand-over
        hand_overs_wait(SendingDomain, item.sending_domain_id)
    return RunResult(len(series.minutes), len(domains.ids), evidence)


def _overrides_begun(*, since: datetime) -> dict[int, datetime]:
    rows = SendingDomain.objects.filter(override_from__gte=since).values_list("id", "override_from")
    return {domain_id: began for domain_id, began in rows if began is not None}


def _restart(state: detector.DetectorState, restarts: dict[int, np.datetime64], minute: np.datetime64) -> None:
    """An override began in this minute or before: the evidence its lapse is judged by starts with its time."""
    due = [index for index, since in restarts.items() if since < minute + np.timedelta64(60, "s")]
    if due:
        state.restart_excursion(np.array(due))
        for index in due:
            del restarts[index]


def _lapse_index(domains: Domains, lapsed: dict[int, datetime]) -> dict[int, np.datetime64]:
    """State index -> a time of its domain's (when its override lapsed, or began)."""
    position = {int(d): i for i, d in enumerate(domains.ids)}
    return {position[d]: np.datetime64(until.replace(tzinfo=None), "s") for d, until in lapsed.items() if d in position}


def _return_view(state: detector.DetectorState, lapses: dict[int, np.datetime64], *, until: np.datetime64 | None) -> None:
    """Overrides lapsed by ``until`` (all: None): the detector may decide on these domains again, from the view it
    kept meanwhile, at the minute the override ended rather than on the minutes it covered."""
    for index, lapse in list(lapses.items()):
        if until is None or lapse <= until:
            state.paused[index] = False
            del lapses[index]


def _locked_state_row() -> DetectorState:
    DetectorState.objects.get_or_create(name=_STATE)
    return DetectorState.objects.select_for_update().get(name=_STATE)


def _domains() -> Domains:
    """Read without a lock: a resume committing after this is caught by ``domain_pause(expected_epoch=)``."""
    rows = np.array(SendingDomain.objects.order_by("id").values_list("id", "detector_epoch"), dtype=_IDS).reshape(-1, 2)
    return Domains(ids=rows[:, 0].copy(), epochs=rows[:, 1].copy())


def _aligned_state(row: DetectorState, domains: Domains) -> detector.DetectorState:
    """The saved state with one entry per current domain, in id order; new and resumed domains start cold."""
    config = detector.DEFAULT
    if not row.state:
        return detector.DetectorState.empty(len(domains.ids), config)
    saved = detector.DetectorState.from_bytes(bytes(row.state))
    saved_ids = np.frombuffer(bytes(row.domain_ids), dtype=_IDS)
    # A state saved before epochs were kept knew every domain at epoch 0 (the column's default).
    saved_epochs = np.frombuffer(bytes(row.domain_epochs), dtype=_IDS) if row.domain_epochs else np.zeros(len(saved_ids), _IDS)
    n = len(saved_ids)
    if n <= len(domains.ids) and np.array_equal(saved_ids, domains.ids[:n]):
        saved.grow(len(domains.ids))  # the usual case: ids only grow, new domains come last
        resumed = np.flatnonzero(saved_epochs != domains.epochs[:n])
        if resumed.size:
            saved.reset(resumed)
        return saved
    # A domain was deleted: keep the entries of the domains that remain and were not resumed; the rest start cold.
    fresh = detector.DetectorState.empty(len(domains.ids), config)
    position = {int(d): i for i, d in enumerate(saved_ids)}
    old = np.array([position.get(int(d), -1) for d in domains.ids], dtype=_IDS)
    keep = np.flatnonzero(old >= 0)
    keep = keep[saved_epochs[old[keep]] == domains.epochs[keep]]
    fresh.copy_from(saved, source=old[keep], target=keep)
    return fresh


def _first_minute(row: DetectorState, end: datetime) -> datetime:
    earliest = end - timedelta(minutes=settings.SENDPLANE_DETECTOR["BACKFILL_MINUTES"])
    return earliest if row.minute is None else max(earliest, row.minute + timedelta(minutes=1))


def _steps(
    state: detector.DetectorState, series: MinuteSeries, lapses: dict[int, np.datetime64], restarts: dict[int, np.datetime64]
) -> Iterator[tuple[int, detector.Decisions]]:
    c = series.counts
    bounced = c["bounced_hard"] + c["bounced_soft"] + c["bounced_reputation"]
    for m in range(len(series.minutes)):
        minute = series.minutes[m].astype("datetime64[s]")
        _restart(state, restarts, minute)
        _return_view(state, lapses, until=minute + np.timedelta64(60, "s"))
        decisions = detector.detector_step(state, c["sent"][:, m], bounced[:, m], c["complained"][:, m], c["bounced_reputation"][:, m])
        if len(decisions.index):
            yield m, decisions


def _pause(domains: Domains, series: MinuteSeries, m: int, decisions: detector.Decisions) -> list[PauseEvidence]:
    minute = series.minutes[m].astype("datetime64[s]").astype(datetime).replace(tzinfo=UTC)
    paused = []
    for k, index in enumerate(decisions.index.tolist()):
        domain = SendingDomain.objects.get(pk=int(domains.ids[index]))
        if overridden(domain, minute):
            logger.info("not pausing %s: an operator overrides the detector until %s", domain.domain, domain.override_until)
            continue  # the state stays decided: when the override lapses, the view it holds then returns
        evidence = PauseEvidence(
            minute=minute,
            signal=detector.SIGNALS[int(decisions.signal[k])],
            rule=detector.Rule(str(decisions.rule[k])),
            baseline=float(decisions.baseline[k]),
            observed=float(decisions.observed[k]),
            statistic=float(decisions.statistic[k]),
            threshold=float(decisions.threshold[k]),
            volume=int(decisions.volume[k]),
            events=int(round(float(decisions.events[k]))),
        )
        outcome = domain_pause(domain=domain, reason=evidence.summary(), evidence=evidence, expected_epoch=int(domains.epochs[index]))
        if outcome.changed:  # a person may have paused it already, or resumed it since we read it: no evidence then
            paused.append(evidence)
    return paused
