"""Running the anomaly detector over every domain: counters in, pauses with evidence out.

The beat task calls ``detector_run`` every minute. Under a lock on the one
``DetectorState`` row it feeds every complete minute since the last run (at
most ``BACKFILL_MINUTES``) to ``deliverability.detector.detector_step``,
pauses the domains it decides on through ``domain_pause`` (the on-call path)
and saves the state, all in one transaction: a crash loses nothing and
decides nothing twice. Notifications go out after the commit.

**Streams.** The counters are kept per (domain, provider group); the
detector runs twice a minute: over every stream (``ProviderStream`` rows, the
state row ``streams``) and over every domain. A stream that decides alone is
paused alone (``stream_pause_detected``: a Gmail-only block stops mail to
Gmail while the rest sends on), and its counters leave the domain's input
from that minute, as do the counters of streams paused before the run, so one
provider's trouble never pauses the whole domain twice over. Two or more of a
domain's streams deciding in the same minute is a domain-wide shift: the
domain is paused (rule ``streams``), as it is when the domain's own sum of the
remaining streams shifts. A stream's epoch for the detector is its own
``detector_epoch`` plus its domain's: a resume of either forgets its past.
Locks are taken streams first, then domains, as the worker's recording does.

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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane import metrics
from deliverability import detector
from deliverability.models import DetectorState, PauseEvidence, ProviderStream, SendingDomain
from deliverability.notify import pause_notify
from deliverability.selectors import MinuteSeries, StreamSeries, stream_minute_series
from deliverability.services.batch_watch import batch_watch_save
from deliverability.services.counters import minute_of
from deliverability.services.handover import hand_overs_wait
from deliverability.services.pause import domain_pause, overridden, override_lapse
from deliverability.services.streams import stream_pause_detected
from deliverability.stream_detector import COUNTS, TwoLevel

logger = logging.getLogger("sendplane.detector")
_STATE = "default"
_STREAMS_STATE = "streams"
_IDS = np.int64


@dataclass(frozen=True)
class Domains:
    """Every domain's (or stream's) id and ``detector_epoch`` as this run read them, ordered by id."""

    ids: np.ndarray
    epochs: np.ndarray


@dataclass(frozen=True)
class Streams:
    """Every provider stream as this run read it, ordered by id; ``domain`` is its domain's index in ``Domains``."""

    entities: Domains  # epochs: the stream's own plus its domain's
    keys: list[tuple[int, str]]  # (domain id, provider)
    domain: np.ndarray
    paused: np.ndarray  # bool: paused when read (by the replies it heard, the detector or a person)


@dataclass(frozen=True)
class Input:
    """One run's counters: per stream (in ``Streams`` order) and per domain (their sums)."""

    minutes: np.ndarray
    streams: dict[str, np.ndarray]
    domains: MinuteSeries


@dataclass(frozen=True)
class RunResult:
    minutes: int  # complete minutes fed to the detector
    domains: int
    paused: list[PauseEvidence]  # domains' and streams'
    streams: int = 0


@metrics.timed_detector_run
def detector_run(*, now: datetime | None = None) -> RunResult:
    """Feed every complete minute not yet seen; pause what the detector decides. Safe to run concurrently."""
    end = minute_of(now or timezone.now())  # the current minute is still filling
    with transaction.atomic():
        row, stream_row = _locked_state_row(_STATE), _locked_state_row(_STREAMS_STATE)
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
        raw = stream_minute_series(start=start, end=end, domain_ids=None)
        streams = _streams(raw, domains)
        stream_state = _aligned_state(stream_row, streams.entities)
        data = Input(minutes=raw.minutes, streams=raw.aligned(streams.keys), domains=raw.by_domain(domains.ids.tolist()))
        run = _Run(domains, streams, data, state, stream_state, lapses, restarts)
        for m in range(len(data.minutes)):
            run.step(m)
        run.return_views(until=None)  # every override that lapsed by now has, whatever minutes there were
        evidence = [*_pause_streams(streams, data, run), *_pause_domains(domains, streams, data, run)]
        _save(row, state, domains, end)
        _save(stream_row, stream_state, streams.entities, end)
        series = data.domains
        active = np.flatnonzero(np.any([c.any(axis=1) for c in series.counts.values()], axis=0))  # the rest did not change
        batch_watch_save(state, domains.ids, domains.epochs, active)  # what the workers judge the minutes since by
        for item in evidence:
            transaction.on_commit(partial(pause_notify, item))
    metrics.detector_observed(state, detector.SIGNALS)
    for domain_id in sorted({item.sending_domain_id for item in evidence}):  # the pauses are visible now:
        hand_overs_wait(SendingDomain, domain_id)  # wait out the chunks that were mid-hand-over
    return RunResult(len(data.minutes), len(domains.ids), evidence, len(streams.keys))


def _save(row: DetectorState, state: detector.DetectorState, entities: Domains, end: datetime) -> None:
    row.state, row.minute = state.to_bytes(), end - timedelta(minutes=1)
    row.domain_ids, row.domain_epochs = entities.ids.tobytes(), entities.epochs.tobytes()
    row.save(update_fields=["state", "domain_ids", "domain_epochs", "minute", "updated_at"])


class _Run:
    """One run's minutes over streams and domains (``stream_detector.TwoLevel``), with the overrides' times."""

    def __init__(
        self, domains: Domains, streams: Streams, data: Input, state: detector.DetectorState,
        stream_state: detector.DetectorState, lapses: dict[int, np.datetime64], restarts: dict[int, np.datetime64],
    ) -> None:
        self.data, self.state, self.stream_state = data, state, stream_state
        self.two = TwoLevel(stream_state, state, streams.domain, streams.paused)
        by_domain = streams.domain.tolist()
        # A domain's override covers its streams: their lapses and restarts follow the domain's.
        self.lapses, self.restarts = lapses, restarts
        self.stream_lapses = {s: lapses[d] for s, d in enumerate(by_domain) if d in lapses}
        self.stream_restarts = {s: restarts[d] for s, d in enumerate(by_domain) if d in restarts}
        self.stream_decided: dict[int, tuple[int, detector.Decisions, int]] = {}  # stream -> (minute, decisions, k)
        self.streams_alone: set[int] = set()  # the streams that decided alone: theirs to pause, not their domain's
        self.domain_decided: dict[int, tuple[int, detector.Decisions, int]] = {}
        self.domain_wide: dict[int, tuple[int, list[int]]] = {}  # domain -> (minute, its streams that decided)

    def return_views(self, *, until: np.datetime64 | None) -> None:
        _return_view(self.state, self.lapses, until=until)
        _return_view(self.stream_state, self.stream_lapses, until=until)

    def step(self, m: int) -> None:
        minute = self.data.minutes[m].astype("datetime64[s]")
        _restart(self.state, self.restarts, minute)
        _restart(self.stream_state, self.stream_restarts, minute)
        self.return_views(until=minute + np.timedelta64(60, "s"))
        streams = {name: self.data.streams[name][:, m] for name in COUNTS}
        decided = self.two.step(streams, {name: self.data.domains.counts[name][:, m] for name in COUNTS})
        for k, index in enumerate(decided.streams.index.tolist()):
            self.stream_decided[index] = (m, decided.streams, k)
        self.streams_alone.update(decided.alone)
        for k, index in enumerate(decided.domains.index.tolist()):
            self.domain_decided[index] = (m, decided.domains, k)
        for domain, members in decided.domain_wide.items():
            self.domain_wide[domain] = (m, members)


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


def _locked_state_row(name: str) -> DetectorState:
    DetectorState.objects.get_or_create(name=name)
    return DetectorState.objects.select_for_update().get(name=name)


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


def _streams(raw: StreamSeries, domains: Domains) -> Streams:
    """Every stream, with a row made for each stream that has counters and none yet (in this run's minutes)."""
    known = set(ProviderStream.objects.values_list("sending_domain_id", "provider"))
    missing = [key for key in raw.streams if key not in known]
    if missing:
        ProviderStream.objects.bulk_create(
            [ProviderStream(sending_domain_id=domain_id, provider=provider) for domain_id, provider in missing], ignore_conflicts=True
        )
    rows = list(ProviderStream.objects.order_by("id").values_list("id", "sending_domain_id", "provider", "detector_epoch", "paused"))
    position = {int(d): i for i, d in enumerate(domains.ids)}
    rows = [r for r in rows if r[1] in position]  # a domain made after this run read the domains waits for the next
    epochs = dict(zip(domains.ids.tolist(), domains.epochs.tolist(), strict=True))
    return Streams(
        entities=Domains(
            ids=np.array([r[0] for r in rows], dtype=_IDS), epochs=np.array([r[3] + epochs[r[1]] for r in rows], dtype=_IDS)
        ),
        keys=[(r[1], r[2]) for r in rows],
        domain=np.array([position[r[1]] for r in rows], dtype=_IDS),
        paused=np.array([r[4] for r in rows], dtype=bool),
    )


def _evidence(data: Input, decided: tuple[int, detector.Decisions, int]) -> PauseEvidence:
    m, decisions, k = decided
    return PauseEvidence(
        minute=data.minutes[m].astype("datetime64[s]").astype(datetime).replace(tzinfo=UTC),
        signal=detector.SIGNALS[int(decisions.signal[k])],
        rule=detector.Rule(str(decisions.rule[k])),
        baseline=float(decisions.baseline[k]),
        observed=float(decisions.observed[k]),
        statistic=float(decisions.statistic[k]),
        threshold=float(decisions.threshold[k]),
        volume=int(decisions.volume[k]),
        events=int(round(float(decisions.events[k]))),
    )


def _pause_streams(streams: Streams, data: Input, run: _Run) -> list[PauseEvidence]:
    """Each stream that decided alone, in id order (the lock order); a domain-wide shift is the domain's to pause."""
    paused = []
    for index in sorted(run.streams_alone):
        evidence = _evidence(data, run.stream_decided[index])
        domain = SendingDomain.objects.get(pk=streams.keys[index][0])
        if overridden(domain, evidence.minute):
            logger.info("not pausing %s's stream: an operator overrides the detector until %s", domain.domain, domain.override_until)
            continue
        stream_id, epoch = int(streams.entities.ids[index]), int(streams.entities.epochs[index])
        if stream_pause_detected(stream_id=stream_id, evidence=evidence, expected_epoch=epoch):
            paused.append(evidence)
    return paused




def _pause_domains(domains: Domains, streams: Streams, data: Input, run: _Run) -> list[PauseEvidence]:
    paused = []
    for index in sorted({*run.domain_decided, *run.domain_wide}):
        if index in run.domain_decided:
            evidence = _evidence(data, run.domain_decided[index])
        else:
            evidence = _domain_wide(data, streams, run, index)
        domain = SendingDomain.objects.get(pk=int(domains.ids[index]))
        if overridden(domain, evidence.minute):
            logger.info("not pausing %s: an operator overrides the detector until %s", domain.domain, domain.override_until)
            continue  # the state stays decided: when the override lapses, the view it holds then returns
        outcome = domain_pause(domain=domain, reason=evidence.summary(), evidence=evidence, expected_epoch=int(domains.epochs[index]))
        if outcome.changed:  # a person may have paused it already, or resumed it since we read it: no evidence then
            paused.append(evidence)
    return paused


def _domain_wide(data: Input, streams: Streams, run: _Run, index: int) -> PauseEvidence:
    """The domain's evidence when its streams shifted together: the largest stream's numbers, the volume and events
    of all of them, and which providers they were (one stream, the only one sending: its own evidence)."""
    _, members = run.domain_wide[index]
    if len(members) == 1:
        return _evidence(data, run.stream_decided[members[0]])
    largest = max(members, key=lambda s: int(run.stream_decided[s][1].volume[run.stream_decided[s][2]]))
    evidence = _evidence(data, run.stream_decided[largest])
    evidence.rule = detector.Rule.STREAMS
    evidence.volume = sum(int(run.stream_decided[s][1].volume[run.stream_decided[s][2]]) for s in members)
    evidence.events = sum(int(round(float(run.stream_decided[s][1].events[run.stream_decided[s][2]]))) for s in members)
    evidence.replies = [f"shifted together at {', '.join(streams.keys[s][1] or 'other receivers' for s in members)}"]
    return evidence
