"""Change detection on each sending domain's bounce, complaint and reputation rates, all domains at once.

Pure numpy, no database: ``deliverability.services.detection`` feeds it the
per-minute counters and persists the state (its two vocabularies, ``Signal``
and ``Rule``, are Django ``TextChoices`` so ``PauseEvidence`` can use them as
choices; they are plain str and need no settings); ``tests/test_detector_scenarios.py``
and ``ops/bench/detector`` drive it directly.

Per domain and signal, every minute:

1. **Baseline.** A Beta posterior of the domain's own rate: a prior worth
   three pseudo-events plus the domain's counts, forgotten with a half-life.
   A minute is learned only once it is known to be in control (its CUSUM
   excursion ended back at 0), so an incident, even a slow drift, is never
   learned as normal. The CUSUM tests against the posterior mean plus
   ``baseline_z`` standard deviations: while a domain's own data is thin (cold
   start, a few messages an hour) its p0 stays high and it is judged leniently;
   a domain sending thousands a minute gets a tight p0 within the hour.
2. **CUSUM per message.** The minute's log-likelihood ratio of "rate p1" over
   "rate p0" for k events in n messages is k ln(p1/p0) + (n - k) ln((1 - p1)/(1 - p0)),
   divided by the design effect of the minute-to-minute noise of the true rate
   (quasi-likelihood: bounces cluster by campaign and list segment, so a minute
   of 2,000 messages carries less than 2,000 independent messages' evidence).
   p1 is at least max(factor * p0, p0 + delta) and adapts to the rate seen in
   the excursion so far (from earlier minutes only). A domain sending 2
   messages a minute and one sending 2,000 are judged by the same per-message
   evidence. S = max(0, S + llr); the domain is paused when S >= h and the
   excursion (since S last was 0) holds at least ``min_events`` events.
3. **Ceilings.** On top, an absolute rate per signal (10% bounce as Amazon SES,
   0.3% complaint as Gmail) over an exponentially weighted window, with a
   minimum volume, decided only when the rate's lower confidence bound is over
   the ceiling: a domain whose normal is unacceptable is caught even though the
   CUSUM learned it.

A domain that decides is marked paused (no further decisions) until ``reset``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import numpy as np
from django.db.models import TextChoices


class Signal(TextChoices):
    """What a decision is about; the order is the signal axis of every per-signal array."""

    BOUNCE = "bounce", "Bounce rate"
    COMPLAINT = "complaint", "Complaint rate"
    REPUTATION = "reputation", "Reputation refusals (blocks, spam, authentication)"  # zeros where unknown


class Rule(TextChoices):
    """Which test decided."""

    CUSUM = "cusum", "CUSUM: a shift from the domain's own baseline"
    CEILING = "ceiling", "Ceiling: an absolute limit"
    BATCH = "batch", "CUSUM on the worker's own batches: refusals heard while sending"
    STREAMS = "streams", "Streams: two or more of the domain's provider streams shifted in the same minute"


SIGNALS: tuple[Signal, ...] = tuple(Signal)
_N_SIGNALS = len(SIGNALS)
_FORMAT = 2  # bumped when the saved arrays change meaning; from_bytes reads 1 (arrays by name) and 2 (rows), refuses another
_P_MIN, _P_MAX = 1e-7, 0.5  # p0 is kept where the logarithms are finite and p1 > p0 stays meaningful
_P1_MAX = 0.95  # a p1 near 1 would make every delivered message a huge penalty


@dataclass(frozen=True)
class DetectorConfig:
    """Every tunable, per signal where a tuple (bounce, complaint, reputation)."""

    # Prior mean rate: a typical healthy domain (bounce ~2%, complaints ~0.05%, blocklist-class ~0.2%).
    prior_rate: tuple[float, float, float] = (0.02, 0.0005, 0.002)
    # Prior weight in pseudo-events (3 events = 150 bounce trials at 2%): a few hundred of the
    # domain's own messages outweigh it, yet with baseline_z a cold p0 is ~2.4x the prior mean
    # (4.9% bounce, 0.12% complaint, 0.5% reputation), which keeps a healthy domain at up to ~4%
    # bounce quiet before it has data of its own. One pseudo-event let a small domain whose first
    # 200 messages happened not to bounce learn 0.4% and be paused when its usual 2% came back.
    prior_events: float = 3.0
    # CUSUM p0 = posterior mean + z * posterior sd: lenient while uncertain, ~mean once known.
    baseline_z: float = 2.5
    # Forgetting of the baseline (minutes): slow against a 1-2 hour drift (which must be caught,
    # not learned) but follows a daily cycle and a drift over days. What is learned: each minute
    # once its excursion has ended with the CUSUM back at 0 (in control in hindsight); a minute
    # inside an excursion waits, so an incident, even a slow one, is never learned as normal.
    baseline_half_life_minutes: float = 720.0
    # Shift the CUSUM is tuned to: p1 = max(factor * p0, p0 + delta). Bounces: a doubling, and at
    # least +1 point (0.3% -> 0.6% on a clean domain is not worth a pause). Complaints and
    # blocklist bounces: a tripling, at least +0.2 / +1 point (incidents there are large jumps).
    shift_factor: tuple[float, float, float] = (2.0, 3.0, 3.0)
    shift_delta: tuple[float, float, float] = (0.01, 0.002, 0.01)
    # The shift then adapts to the excursion: p1 = max(floor, (events + k0) / (trials + k0 / floor)).
    # A list import at 30% is then judged against ~30%, not 2 p0, and decides after ~7 bounces
    # instead of ~17; k0 = 2 pseudo-events keeps one early bounce from setting p1 to 100%.
    shift_prior_events: float = 2.0
    # Decision threshold h on the log-likelihood ratio: with an exact p0, e^-h bounds the chance
    # that one excursion of a healthy domain reaches h (Ville). 12 keeps thousands of healthy
    # generated domain-days quiet, where 10 paused a few, and still decides after ~7-20 bad events.
    threshold: float = 12.0
    # The same test between minutes (``bounce_between``) looks several times a minute, at counts
    # too small for the minute's noise model to have settled; a higher bar keeps its false pauses
    # on healthy generated traffic at the minute pass's (tests/test_detector_between_minutes.py).
    between_threshold: float = 14.0
    # Minute-to-minute relative noise of a domain's true rate (campaigns and list segments differ):
    # the minute's llr is divided by the design effect 1 + (n - 1) p0 sigma^2 / (1 - p0) of that
    # noise, so a big domain's single odd minute weighs what it is worth (at most ~(r ln f - f + 1)
    # / sigma^2 for a rate r times p0), while a small domain's messages count fully.
    rate_noise: float = 0.3
    # Never decide on fewer bad events than this in the excursion (or ceiling window): one or
    # two bounces on a tiny domain are never an incident.
    min_events: tuple[int, int, int] = (5, 3, 5)
    # Absolute ceilings: Amazon SES reviews at 10% bounces, Gmail's bulk-sender limit is 0.3%
    # complaints; 5% of all mail refused for reputation means a large provider blocks the domain.
    ceiling: tuple[float, float, float] = (0.10, 0.003, 0.05)
    # Minimum (weighted) messages in the ceiling window: SES-like, no rate on a handful.
    ceiling_min_volume: tuple[float, float, float] = (100.0, 1000.0, 100.0)
    # A ceiling decides when the Wilson lower bound (z) of the window's rate is over it.
    ceiling_z: float = 3.0
    # The ceiling window: exponentially weighted, half-life in minutes (~43 minutes of data).
    window_half_life_minutes: float = 30.0

    def column(self, name: str) -> np.ndarray:
        """A per-signal setting as a (signals, 1) array that broadcasts over domains."""
        return np.asarray(getattr(self, name), dtype=np.float64).reshape(_N_SIGNALS, 1)


DEFAULT = DetectorConfig()

# name -> (per signal?, dtype): the arrays the state is made of, as read and saved. Every array has the domain as its
# last axis; ``DetectorState`` keeps them packed by entity (``_COLUMNS``) and exposes each under its name.
_ARRAYS: dict[str, tuple[bool, Any]] = {
    "minutes_seen": (False, np.int64),  # minutes since the domain started cold
    "paused": (False, np.bool_),  # decided; no further decisions until reset
    "cusum": (True, np.float64),
    "base_events": (True, np.float64),  # the baseline's data (forgotten); the prior lives in the config
    "base_trials": (True, np.float64),
    "exc_events": (True, np.float64),  # since the CUSUM last was 0: the evidence
    "exc_trials": (True, np.float64),
    "exc_minutes": (True, np.int64),
    "win_events": (True, np.float64),  # exponentially weighted window for the ceilings
    "win_trials": (False, np.float64),
}
# Where each array lives in a row of ``DetectorState._rows`` (one row per entity, float64; whole minutes are exact).
_COLUMNS: dict[str, slice | int] = {
    "cusum": slice(0, 3),
    "base_events": slice(3, 6),
    "base_trials": slice(6, 9),
    "exc_events": slice(9, 12),
    "exc_trials": slice(12, 15),
    "exc_minutes": slice(15, 18),
    "win_events": slice(18, 21),
    "win_trials": 21,
}
_BASE, _WINDOW, _EXC = slice(3, 9), slice(18, 22), slice(9, 15)
_LAST = 22  # the clock when the row was last brought up to date (a float: exact for any realistic count of minutes)
_WIDTH = 24  # one spare column: a row is three 64-byte cache lines
_CHUNK = 8192  # entities advanced together: a chunk's rows and temporaries stay in the L2 cache


class _Arrays(Protocol):
    """What the minute's arithmetic reads and updates in place: a whole state, or a chunk of one."""

    @property
    def cusum(self) -> np.ndarray: ...
    @property
    def base_events(self) -> np.ndarray: ...
    @property
    def base_trials(self) -> np.ndarray: ...
    @property
    def exc_events(self) -> np.ndarray: ...
    @property
    def exc_trials(self) -> np.ndarray: ...
    @property
    def exc_minutes(self) -> np.ndarray: ...
    @property
    def win_events(self) -> np.ndarray: ...
    @property
    def win_trials(self) -> np.ndarray: ...
    @property
    def paused(self) -> np.ndarray: ...


class DetectorState:
    """Everything the detector remembers, for n entities (domains, or streams): arrays of shape (n,) or (len(SIGNALS), n).

    Read them by name (``state.cusum``, ``state.base_trials``, ...): each is the entity's value after the last
    minute, as the detector defines it (``reference_step``, every entity every minute). Only ``paused`` is the
    state's own array, to be written in place (``state.paused[i] = False``); the others are read-only snapshots,
    changed through ``reset``, ``restart_excursion``, ``copy_from`` and ``detector_step``.

    Inside, an entity's row holds its values as of the last minute it had traffic (or could decide): a minute
    without counts only forgets (the baseline and the window by their factors, ``factor ** minutes`` in one
    multiplication when the entity next has traffic or is read) and counts the minutes of an open excursion.
    """

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        """From the arrays by name (``_ARRAYS``), every entity up to date. Which could decide is not known: all may."""
        n = len(arrays["minutes_seen"])
        rows = np.zeros((n, _WIDTH))
        for name, column in _COLUMNS.items():
            rows[:, column] = np.asarray(arrays[name]).T
        self._set(rows, 0, -np.asarray(arrays["minutes_seen"], dtype=np.int64), np.array(arrays["paused"], dtype=np.bool_),
                  np.ones(n, dtype=np.bool_), _keeps(DEFAULT))

    def _set(
        self, rows: np.ndarray, clock: int, birth: np.ndarray, paused: np.ndarray, armed: np.ndarray, keeps: np.ndarray,
        armed_for: str | None = None,
    ) -> None:
        self._rows = rows  # (n, _WIDTH), see _COLUMNS
        self._clock = clock  # minutes stepped
        self._birth = birth  # minutes_seen = clock - birth
        self._paused = paused
        # Could decide without new counts: a CUSUM over h with its events, or a ceiling window over its volume, events
        # and rate, when last brought up to date. Idle, neither can start to hold (the CUSUM stands still, the window's
        # rate stays and its volume and events only shrink), so an idle entity can decide only when armed and its
        # pause was lifted (``paused[i] = False``); those are advanced with the entities that have traffic.
        self._armed = armed
        self._armed_for = armed_for  # repr of the config ``armed`` was judged by; None: right under any
        self._keeps = keeps  # (baseline, window) forgetting factors a minute, of the config last stepped with
        self._config: DetectorConfig | None = None
        self._snapshot: np.ndarray | None = None

    @classmethod
    def empty(cls, n: int, config: DetectorConfig = DEFAULT) -> DetectorState:
        """n domains, all cold (the prior lives in ``config``, so the state holds only data)."""
        state = cls.__new__(cls)
        state._set(np.zeros((n, _WIDTH)), 0, np.zeros(n, np.int64), np.zeros(n, np.bool_), np.zeros(n, np.bool_), _keeps(config))
        return state

    def __len__(self) -> int:
        return len(self._rows)

    # --- the arrays by name -------------------------------------------------------------------------

    @property
    def paused(self) -> np.ndarray:
        return self._paused

    @property
    def minutes_seen(self) -> np.ndarray:
        return _read_only(self._clock - self._birth)

    @property
    def cusum(self) -> np.ndarray:
        return self._current()[0:3]

    @property
    def base_events(self) -> np.ndarray:
        return self._current()[3:6]

    @property
    def base_trials(self) -> np.ndarray:
        return self._current()[6:9]

    @property
    def exc_events(self) -> np.ndarray:
        return self._current()[9:12]

    @property
    def exc_trials(self) -> np.ndarray:
        return self._current()[12:15]

    @property
    def exc_minutes(self) -> np.ndarray:
        return _read_only(self._current()[15:18].astype(np.int64))

    @property
    def win_events(self) -> np.ndarray:
        return self._current()[18:21]

    @property
    def win_trials(self) -> np.ndarray:
        return self._current()[21]

    def idle_minutes(self, index: np.ndarray) -> np.ndarray:
        """Minutes since these entities last had counts (0: in the last step; a new or reset entity counts as fresh)."""
        return self._clock - self._rows[index, _LAST]

    def _current(self) -> np.ndarray:
        """Every entity brought up to now, as (_WIDTH, n) read-only; kept until the state changes."""
        if self._snapshot is None:
            columns = np.ascontiguousarray(self._rows.T)
            _catch_up(columns, self._clock, self._keeps)
            self._snapshot = _read_only(columns)
        return self._snapshot

    def _changed(self) -> None:
        self._snapshot = None

    # --- changes ------------------------------------------------------------------------------------

    def grow(self, n: int) -> None:
        """Append cold domains up to n in all."""
        extra = n - len(self)
        if extra < 0:
            raise ValueError(f"cannot grow {len(self)} domains to {n}")
        rows = np.zeros((extra, _WIDTH))
        rows[:, _LAST] = self._clock
        self._rows = np.concatenate([self._rows, rows])
        self._birth = np.concatenate([self._birth, np.full(extra, self._clock, np.int64)])
        self._paused = np.concatenate([self._paused, np.zeros(extra, np.bool_)])
        self._armed = np.concatenate([self._armed, np.zeros(extra, np.bool_)])
        self._changed()

    def reset(self, index: np.ndarray) -> None:
        """These domains start cold again (a person resumed them): no data, no excursion, not paused."""
        self._rows[index] = 0.0
        self._rows[index, _LAST] = self._clock
        self._birth[index] = self._clock
        self._paused[index] = False
        self._armed[index] = False
        self._changed()

    def restart_excursion(self, index: np.ndarray) -> None:
        """These domains' evidence starts again from now (an operator overrode a pause); the baseline stays learned."""
        for name in ("cusum", "exc_events", "exc_trials", "exc_minutes"):
            self._rows[index, _COLUMNS[name]] = 0.0
        self._changed()  # (armed stays: it may only ever hold more entities than can decide)

    def copy_from(self, other: DetectorState, *, source: np.ndarray, target: np.ndarray) -> None:
        """Take the entries ``source`` of ``other`` as this state's entries ``target``."""
        if not np.array_equal(other._keeps, self._keeps):
            other._bring_up_to_date()
        rows = other._rows[source]
        rows[:, _LAST] += self._clock - other._clock
        self._rows[target] = rows
        self._birth[target] = other._birth[source] + (self._clock - other._clock)
        self._paused[target] = other._paused[source]
        self._armed[target] = other._armed[source]
        self._changed()

    def _bring_up_to_date(self) -> None:
        """Every row to now (before the forgetting factors change: idle minutes forget by the config they passed under)."""
        self._rows[:] = self._current().T
        self._rows[:, _LAST] = self._clock
        self._changed()

    def _adopt(self, config: DetectorConfig) -> None:
        if config is self._config:
            return
        keeps = _keeps(config)
        if not np.array_equal(keeps, self._keeps):
            self._bring_up_to_date()
            self._keeps = keeps
        judged_by = repr(config)
        if self._armed_for is not None and judged_by != self._armed_for:
            self._armed[:] = True  # other thresholds: which entities could decide is not known
        self._armed_for, self._config = judged_by, config

    # --- saved --------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The rows as they are (not brought up to date: a restored state continues bit for bit as this one would)."""
        buffer = io.BytesIO()
        np.savez(
            buffer, format=np.int64(_FORMAT), clock=np.int64(self._clock), rows=self._rows, birth=self._birth,
            paused=self._paused, armed=self._armed, keeps=self._keeps, armed_for=np.str_(self._armed_for or ""),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> DetectorState:
        """A state saved by ``to_bytes``; format 1 (the arrays by name, before the rows) loads too."""
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            version = int(saved["format"])
            if version == 1:
                return cls({name: saved[name].astype(dtype, copy=False) for name, (_, dtype) in _ARRAYS.items()})
            if version != _FORMAT:
                raise ValueError(f"detector state format {version}, expected {_FORMAT} (or 1)")
            rows = saved["rows"]
            if rows.ndim != 2 or rows.shape[1] != _WIDTH:
                raise ValueError(f"detector state rows of shape {rows.shape}, expected (n, {_WIDTH})")
            state = cls.__new__(cls)
            state._set(
                rows.astype(np.float64), int(saved["clock"]), saved["birth"].astype(np.int64), saved["paused"].astype(np.bool_),
                saved["armed"].astype(np.bool_), saved["keeps"].astype(np.float64), str(saved["armed_for"]) or None,
            )
            return state


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _keeps(config: DetectorConfig) -> np.ndarray:
    """Forgetting factors a minute: (baseline, ceiling window)."""
    return np.array([0.5 ** (1.0 / config.baseline_half_life_minutes), 0.5 ** (1.0 / config.window_half_life_minutes)])


def _catch_up(columns: np.ndarray, clock: int, keeps: np.ndarray) -> None:
    """Columns (_WIDTH, k) of rows last brought up to date at ``columns[_LAST]``: apply the minutes since, all without
    counts, in place. What ``reference_step`` does to an entity with no counts, minute after minute: the baseline and
    the window forget (factor ** minutes, for the repeated product: the same to ~1e-16 a minute), the CUSUM and the
    excursion's evidence stand still, an open excursion's minutes count on, and a closed one stays at zero."""
    idle = clock - columns[_LAST]
    if not idle.any():
        return
    base, window = _powers(keeps, idle)
    columns[_BASE] *= base
    columns[_WINDOW] *= window
    running = columns[0:3] > 0.0
    running |= idle == 0.0  # (an entity up to date keeps its values as they are)
    columns[15:18] += idle
    columns[15:18] *= running
    columns[9:12] *= running
    columns[12:15] *= running
    columns[_LAST] = clock


def _powers(keeps: np.ndarray, minutes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """keeps[0] ** minutes and keeps[1] ** minutes (whole minutes >= 0), from a table up to ``_TABLE`` minutes."""
    key = (float(keeps[0]), float(keeps[1]))
    table = _POWER_TABLES.get(key)
    if table is None:
        table = _POWER_TABLES[key] = np.power(keeps[:, None], np.arange(_TABLE, dtype=np.float64))
    at = minutes.astype(np.intp)
    if at.max() < _TABLE:
        return table[0][at], table[1][at]
    far = at >= _TABLE
    at[far] = 0
    base, window = table[0][at], table[1][at]
    base[far], window[far] = np.power(keeps[0], minutes[far]), np.power(keeps[1], minutes[far])
    return base, window


_TABLE = 1 << 15  # minutes (22 days) of powers tabled
_POWER_TABLES: dict[tuple[float, float], np.ndarray] = {}


class _Chunk:
    """Some entities' columns (_WIDTH, k) under the arrays' names (views: the arithmetic updates them in place)."""

    def __init__(self, columns: np.ndarray, paused: np.ndarray) -> None:
        self.cusum, self.base_events, self.base_trials = columns[0:3], columns[3:6], columns[6:9]
        self.exc_events, self.exc_trials, self.exc_minutes = columns[9:12], columns[12:15], columns[15:18]
        self.win_events, self.win_trials = columns[18:21], columns[21]
        self.paused = paused


class ReferenceState:
    """The detector's state as plain arrays, every entity updated every minute by ``reference_step``.

    The definition ``detector_step`` is held to (``tests/test_detector_fast_path.py``); ``ops/bench/detector``
    times both in the same run.
    """

    def __init__(self, n: int) -> None:
        for name, (per, dtype) in _ARRAYS.items():
            setattr(self, name, np.zeros(_shape(per, n), dtype))

    minutes_seen: np.ndarray
    paused: np.ndarray
    cusum: np.ndarray
    base_events: np.ndarray
    base_trials: np.ndarray
    exc_events: np.ndarray
    exc_trials: np.ndarray
    exc_minutes: np.ndarray
    win_events: np.ndarray
    win_trials: np.ndarray

    def __len__(self) -> int:
        return len(self.minutes_seen)


_Updated = _Chunk | ReferenceState  # what the minute's arithmetic updates in place


def _shape(per_signal: bool, n: int) -> tuple[int, ...]:
    return (_N_SIGNALS, n) if per_signal else (n,)


@dataclass(frozen=True)
class Decisions:
    """The domains to pause this minute, one entry each, with the numbers behind the decision."""

    index: np.ndarray  # domain indices
    signal: np.ndarray  # index into SIGNALS
    baseline: np.ndarray  # p0 tested against: the learned rate (posterior mean + z sd)
    observed: np.ndarray  # events / volume: the rate during the excursion (ceiling: in the window)
    statistic: np.ndarray  # the CUSUM S (ceiling: the rate's lower confidence bound)
    threshold: np.ndarray  # h (ceiling: the ceiling rate)
    volume: np.ndarray  # messages in the excursion (ceiling: weighted messages in the window)
    events: np.ndarray  # bad events in the excursion (ceiling: weighted, in the window)
    minutes: np.ndarray  # minutes the excursion lasted (ceiling: the window's mean span)
    rule: np.ndarray  # Rule values, as numpy str

    def __len__(self) -> int:
        return len(self.index)

    def evidence(self, k: int) -> dict[str, Any]:
        """Entry k as plain JSON-able values (without the domain index)."""
        values: dict[str, Any] = {f.name: getattr(self, f.name)[k].item() for f in fields(self) if f.name != "index"}
        values["signal"] = SIGNALS[values["signal"]]
        return values


def detector_step(
    state: DetectorState,
    sent: np.ndarray,
    bounced: np.ndarray,
    complained: np.ndarray,
    reputation: np.ndarray | None = None,
    config: DetectorConfig = DEFAULT,
) -> Decisions:
    """Feed one minute of counts for every domain (arrays of shape (n,)); update ``state`` in place.

    ``bounced`` includes the reputation-class bounces; ``reputation`` may be None (unknown).
    The same decisions as ``reference_step``, at the cost of the entities with counts this minute (and the
    few that could decide without: ``DetectorState._armed``), in chunks that stay in the cache.
    """
    n = len(state)
    counts = [np.asarray(sent), np.asarray(bounced), np.asarray(complained)] + ([] if reputation is None else [np.asarray(reputation)])
    for values in counts:
        if values.shape != (n,):
            raise ValueError(f"counts of shape {values.shape} for {n} entities")
    state._adopt(config)
    work = state._armed & ~state._paused
    if all(values.dtype.kind in "iu" for values in counts):  # counts as integers: one OR of them, then one test
        either = np.bitwise_or(counts[0], counts[1])
        for values in counts[2:]:
            either |= values
        work |= either != 0
    else:
        for values in counts:
            work |= values != 0
    index = np.flatnonzero(work)
    state._clock += 1
    state._changed()
    found = [_advance(state, index[start : start + _CHUNK], counts, config) for start in range(0, len(index), _CHUNK)]
    return _joined([d for d in found if len(d)])


def _advance(state: DetectorState, index: np.ndarray, counts: list[np.ndarray], config: DetectorConfig) -> Decisions:
    """These entities' minute (``state._clock`` is already the minute's): their rows out, up to date, advanced, back."""
    rows = state._rows[index]
    columns = np.ascontiguousarray(rows.T)
    _catch_up(columns, state._clock - 1, state._keeps)
    chunk = _Chunk(columns, state._paused[index])
    sent, bounced, complained, *reputation = (values[index] for values in counts)
    trials, events = _inputs(len(index), sent, bounced, complained, reputation[0] if reputation else None)
    p0 = _minute(chunk, trials, events, config)
    cusum_fires, possible = _fires(chunk, config)
    decisions = _decide(chunk, p0, config, cusum_fires, possible)
    columns[_LAST] = state._clock
    rows[...] = columns.T
    state._rows[index] = rows
    state._armed[index] = (cusum_fires | possible).any(axis=0)
    if not len(decisions):
        return decisions
    state._paused[index[decisions.index]] = True
    return replace(decisions, index=index[decisions.index])


def _joined(found: list[Decisions]) -> Decisions:
    if not found:
        return _NONE
    if len(found) == 1:
        return found[0]
    return Decisions(*(np.concatenate([getattr(d, f.name) for d in found]) for f in fields(Decisions)))


def reference_step(
    state: ReferenceState,
    sent: np.ndarray,
    bounced: np.ndarray,
    complained: np.ndarray,
    reputation: np.ndarray | None = None,
    config: DetectorConfig = DEFAULT,
) -> Decisions:
    """``detector_step``'s definition: every entity's minute, all at once, with or without counts."""
    trials, events = _inputs(len(state), sent, bounced, complained, reputation)
    p0 = _minute(state, trials, events, config)
    state.minutes_seen += 1
    return _decide(state, p0, config, *_fires(state, config))


def _minute(state: _Updated, trials: np.ndarray, events: np.ndarray, config: DetectorConfig) -> np.ndarray:
    """The minute's arithmetic on every entity of ``state`` (in place); returns the p0 it was tested against."""
    p0 = baseline_rate(state, config)
    llr = _log_likelihood_ratio(events, trials, p0, _alternative(state, p0, config), config)
    llr += state.cusum
    np.maximum(llr, 0.0, out=state.cusum)
    _learn(state, events, trials, p0, config)
    _track_excursion(state, events, trials)
    _slide_window(state, events, trials, config)
    return p0


def baseline_rate(state: _Arrays, config: DetectorConfig = DEFAULT) -> np.ndarray:
    """p0 per signal and domain (shape (signals, n)): posterior mean + z posterior sd."""
    prior_trials = config.prior_events / config.column("prior_rate")
    # In place where it can be: the detector's minute is a few dozen passes over arrays of every domain.
    weight = state.base_trials + prior_trials
    mean = state.base_events + config.prior_events
    mean /= weight
    p0 = 1.0 - mean
    p0 *= mean
    weight += 1.0
    p0 /= weight
    np.sqrt(p0, out=p0)
    p0 *= config.baseline_z
    p0 += mean
    return np.clip(p0, _P_MIN, _P_MAX, out=p0)


def _inputs(
    n: int, sent: np.ndarray, bounced: np.ndarray, complained: np.ndarray, reputation: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    events = np.empty((_N_SIGNALS, n), dtype=np.float64)
    events[0], events[1] = bounced, complained
    events[2] = 0.0 if reputation is None else reputation
    # Events are counted when they arrive, sends when they leave: a minute can hold more bounces
    # than sends. Count at least one trial per event, so (n - k) never goes negative.
    trials = np.maximum(np.asarray(sent, dtype=np.float64), events)
    return trials, events


def _alternative(state: _Arrays, p0: np.ndarray, config: DetectorConfig) -> np.ndarray:
    """p1: at least max(factor p0, p0 + delta), raised to the excursion's rate so far (shrunk towards
    that floor by ``shift_prior_events``). Estimated from earlier minutes only, so the likelihood ratio
    stays a martingale under p0 and the false-alarm bound of a fixed p1 holds (Lorden & Pollak)."""
    floor = config.column("shift_factor") * p0
    np.maximum(floor, p0 + config.column("shift_delta"), out=floor)
    k0 = config.shift_prior_events
    trials = k0 / floor
    trials += state.exc_trials
    estimate = state.exc_events + k0
    estimate /= trials
    np.maximum(floor, estimate, out=estimate)
    return np.minimum(estimate, _P1_MAX, out=estimate)


def _log_likelihood_ratio(
    events: np.ndarray, trials: np.ndarray, p0: np.ndarray, p1: np.ndarray, config: DetectorConfig
) -> np.ndarray:
    llr = p1 / p0
    np.log(llr, out=llr)
    llr *= events
    rest = 1.0 - p1
    rest /= 1.0 - p0
    np.log(rest, out=rest)
    rest *= trials - events
    llr += rest
    llr /= _design_effect(trials, p0, config)
    return llr


def _track_excursion(state: _Arrays, events: np.ndarray, trials: np.ndarray) -> None:
    running = state.cusum > 0.0
    for name, value in (("exc_events", events), ("exc_trials", trials), ("exc_minutes", 1)):
        array = getattr(state, name)
        array += value
        array *= running  # back to 0 where the excursion ended (a multiply: no gather and scatter of the rest)


def _learn(state: _Updated, events: np.ndarray, trials: np.ndarray, p0: np.ndarray, config: DetectorConfig) -> None:
    """Forget a little; then learn this minute, and the excursion it closes, where the CUSUM is back at 0.

    Counts enter as effective counts (divided by the design effect of an average minute), so a
    baseline learned from a few big minutes stays as uncertain as a few minutes of data are.
    Call before ``_track_excursion`` (the excursion still holds the data up to last minute).
    """
    keep = 0.5 ** (1.0 / config.baseline_half_life_minutes)
    settled = state.cusum == 0.0
    new_events = events + state.exc_events
    new_trials = trials + state.exc_trials
    weight = np.reciprocal(_design_effect(new_trials / (state.exc_minutes + 1.0), p0, config))
    weight *= settled  # 0 where the CUSUM is in an excursion: nothing learned there
    state.base_events *= keep
    new_events *= weight
    state.base_events += new_events
    state.base_trials *= keep
    new_trials *= weight
    state.base_trials += new_trials


def _design_effect(trials: np.ndarray, p0: np.ndarray, config: DetectorConfig) -> np.ndarray:
    """Variance of a minute's event count over the binomial's, when the true rate itself varies."""
    effect = trials - 1.0
    np.maximum(effect, 0.0, out=effect)
    effect *= p0
    effect *= config.rate_noise**2
    effect /= 1.0 - p0
    effect += 1.0
    return effect


def _slide_window(state: _Updated, events: np.ndarray, trials: np.ndarray, config: DetectorConfig) -> None:
    keep = 0.5 ** (1.0 / config.window_half_life_minutes)
    state.win_events *= keep
    state.win_events += events
    state.win_trials *= keep
    state.win_trials += trials[0]  # every signal's trials are the minute's sends


def _ceiling_bound(state: _Arrays, config: DetectorConfig, candidates: np.ndarray) -> np.ndarray:
    """Wilson lower bound of each window rate (shape (signals, n)), computed where ``candidates`` (0 elsewhere).

    The interval always holds the observed rate, so only a window whose rate is at its ceiling can have its
    bound there: the caller passes those, a handful a minute, rather than every domain's three windows.
    """
    bound = np.zeros(state.win_events.shape)
    signal, domain = np.nonzero(candidates)
    if signal.size:
        n = np.maximum(state.win_trials[domain], 1e-9)
        rate = np.minimum(state.win_events[signal, domain] / n, 1.0)
        z2 = config.ceiling_z**2
        spread = config.ceiling_z * np.sqrt(rate * (1.0 - rate) / n + z2 / (4.0 * n * n))
        bound[signal, domain] = np.maximum((rate + z2 / (2.0 * n) - spread) / (1.0 + z2 / n), 0.0)
    return bound


def _fires(state: _Arrays, config: DetectorConfig) -> tuple[np.ndarray, np.ndarray]:
    """(signals, n) each: the CUSUM decides; a ceiling may (its window's volume, events and observed rate are there)."""
    min_events = config.column("min_events")
    cusum_fires = (state.cusum >= config.threshold) & (state.exc_events >= min_events)
    possible = (
        (state.win_trials >= config.column("ceiling_min_volume")) & (state.win_events >= min_events)
        & (state.win_events >= config.column("ceiling") * state.win_trials)  # the observed rate at the ceiling: necessary for the bound
    )
    return cusum_fires, possible


def _decide(state: _Arrays, p0: np.ndarray, config: DetectorConfig, cusum_fires: np.ndarray, possible: np.ndarray) -> Decisions:
    ceiling = config.column("ceiling")
    bound = _ceiling_bound(state, config, possible)
    ceiling_fires = possible & (bound >= ceiling)
    index = np.flatnonzero((cusum_fires | ceiling_fires).any(axis=0) & ~state.paused)
    if not len(index):
        return _NONE
    state.paused[index] = True
    by_cusum = cusum_fires[:, index].any(axis=0)
    # The strongest evidence names the signal: the CUSUM furthest over h, else the ceiling furthest over.
    strongest_cusum = np.where(cusum_fires[:, index], state.cusum[:, index], -np.inf).argmax(axis=0)
    strongest_ceiling = np.where(ceiling_fires[:, index], bound[:, index] / ceiling, -np.inf).argmax(axis=0)
    signal = np.where(by_cusum, strongest_cusum, strongest_ceiling)
    at = (signal, index)
    win_span = 1.0 / (1.0 - 0.5 ** (1.0 / config.window_half_life_minutes))
    volume = np.where(by_cusum, state.exc_trials[at], state.win_trials[index])
    events = np.where(by_cusum, state.exc_events[at], state.win_events[at])
    return Decisions(
        index=index,
        signal=signal,
        baseline=p0[at],
        observed=events / np.maximum(volume, 1e-12),
        statistic=np.where(by_cusum, state.cusum[at], bound[at]),
        threshold=np.where(by_cusum, config.threshold, ceiling[signal, 0]),
        volume=volume,
        events=events,
        minutes=np.where(by_cusum, state.exc_minutes[at], round(win_span)).astype(np.int64),
        rule=np.where(by_cusum, Rule.CUSUM.value, Rule.CEILING.value),
    )


def _no_decisions() -> Decisions:
    none = np.empty(0)
    ints = np.empty(0, dtype=np.int64)
    return Decisions(ints, ints, none, none, none, none, none, none, ints, np.empty(0, dtype="<U7"))


_NONE = _no_decisions()


def replay(
    sent: np.ndarray,
    bounced: np.ndarray,
    complained: np.ndarray,
    reputation: np.ndarray | None = None,
    config: DetectorConfig = DEFAULT,
    on_minute: Callable[[int], None] | None = None,
) -> list[tuple[int, int, str, dict[str, Any]]]:
    """Counts of shape (domains, minutes), fed minute by minute from a cold state.

    Returns (domain index, first minute it pauses, signal, evidence) per paused
    domain, in decision order. Minute m's decision sees only minutes 0..m.
    ``on_minute(m)`` is called after each minute (a progress bar).
    """
    columns = [np.ascontiguousarray(np.asarray(a).T) for a in (sent, bounced, complained)]
    rep = None if reputation is None else np.ascontiguousarray(np.asarray(reputation).T)
    state = DetectorState.empty(columns[0].shape[1], config)
    paused: list[tuple[int, int, str, dict[str, Any]]] = []
    for minute in range(columns[0].shape[0]):
        decisions = detector_step(
            state, columns[0][minute], columns[1][minute], columns[2][minute], None if rep is None else rep[minute], config
        )
        for k, domain in enumerate(decisions.index.tolist()):
            evidence = decisions.evidence(k)
            paused.append((domain, minute, evidence["signal"], evidence))
        if on_minute is not None:
            on_minute(minute + 1)
    return paused


# --- the same test between minutes, on what the workers hear -----------------------------------


@dataclass(frozen=True)
class BounceWatch:
    """Per domain (arrays of shape (n,)): the bounce CUSUM's state after the last minute, for the workers."""

    cusum: np.ndarray
    p0: np.ndarray
    p1: np.ndarray
    exc_events: np.ndarray
    exc_trials: np.ndarray


def bounce_watch(state: DetectorState, config: DetectorConfig = DEFAULT) -> BounceWatch:
    p0 = baseline_rate(state, config)
    p1 = _alternative(state, p0, config)
    return BounceWatch(state.cusum[0].copy(), p0[0].copy(), p1[0].copy(), state.exc_events[0].copy(), state.exc_trials[0].copy())


def cold_bounce_watch(config: DetectorConfig = DEFAULT) -> tuple[float, float]:
    """(p0, p1) of the bounce signal for a domain with no data of its own."""
    watch = bounce_watch(DetectorState.empty(1, config), config)
    return float(watch.p0[0]), float(watch.p1[0])


def bounce_between_minutes(
    *, cusum: float, p0: float, p1: float, exc_events: float, trials: int, events: int, config: DetectorConfig = DEFAULT
) -> tuple[float, bool]:
    """(statistic, decided) for one domain: ``bounce_between`` on scalars."""
    statistic, decided = bounce_between(
        np.array([cusum]), np.array([p0]), np.array([p1]), np.array([exc_events]), np.array([float(trials)]),
        np.array([float(events)]), config,
    )
    return float(statistic[0]), bool(decided[0])


def bounce_between(
    cusum: np.ndarray, p0: np.ndarray, p1: np.ndarray, exc_events: np.ndarray, trials: np.ndarray, events: np.ndarray,
    config: DetectorConfig = DEFAULT,
) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, decided) per domain: the bounce CUSUM as the minute pass would find it, from the counts since its last minute.

    The minute pass waits for a minute to end (and for the beat); a list
    import at a third unknown users has sent hundreds by then. A worker that
    has just recorded refusals asks this instead, with the minute pass's p0,
    design effect, threshold and minimum of events. One difference: the
    minute pass's p1 is fixed from earlier minutes, so the first minute of an
    incident is judged against only twice the baseline. Here the counts since
    are judged against an equal mixture of alternatives from that p1 up to
    the highest rate (``_BETWEEN_GRID`` of them): a mixture of likelihood
    ratios is itself one under p0, so the false-alarm bound of the threshold
    holds (the evidence pays the mixture's log(grid) for not knowing the
    rate), and a jump to 30% is judged against 30% at once.
    """
    trials = np.maximum(trials, events)
    steps = np.linspace(0.0, 1.0, _BETWEEN_GRID)[:, None]
    grid = p1 * (np.maximum(_P1_MAX, p1) / p1) ** steps  # (grid, n), geometric from p1 to the highest rate
    llr = events * np.log(grid / p0) + (trials - events) * np.log((1.0 - grid) / (1.0 - p0))
    scaled = llr / (1.0 + np.maximum(trials - 1.0, 0.0) * p0 * config.rate_noise**2 / (1.0 - p0))
    top = scaled.max(axis=0)
    mixed = top + np.log(np.exp(scaled - top).mean(axis=0))
    statistic = np.maximum(cusum + mixed, 0.0)
    evidence = np.where(cusum > 0.0, exc_events, 0.0) + events
    return statistic, (statistic >= config.between_threshold) & (evidence >= config.min_events[0])


_BETWEEN_GRID = 16  # alternatives in the mixture: the evidence pays log(16) = 2.8 for not knowing the rate
