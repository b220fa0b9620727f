"""``detector_step`` (the entities with counts, idle minutes forgotten in one power) against ``reference_step``.

``reference_step`` is the detector's definition: every entity's minute, with or
without counts. ``detector_step`` advances only the entities with counts (and
those that could decide without: a lifted pause) and applies the idle minutes
when an entity next has traffic or is read. Over generated populations with
idle entities, bursts and incidents, with pauses lifted, entities reset,
excursions restarted, a save and a restore, they must decide the same: the
same entities, minutes, signals and rules, and the evidence and every array
to 1e-9 (relative; an idle entity's forgetting is one power instead of a
product a minute, which differs in the last bits).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from deliverability import detector
from deliverability.detector import Decisions, DetectorConfig, DetectorState, ReferenceState, detector_step, reference_step

RTOL = 1e-9
EXACT = ("index", "signal", "rule", "minutes")
CLOSE = ("baseline", "observed", "statistic", "threshold", "volume", "events")


class Population:
    """Domains from a few a day to thousands a minute (most minutes idle for most), bursts, and incidents."""

    def __init__(self, n: int, minutes: int, seed: int) -> None:
        rng = self.rng = np.random.default_rng(seed)
        self.volume = np.clip(np.exp(rng.normal(np.log(0.2), 2.2, n)), 0.002, 3000.0)
        self.volume[rng.random(n) < 0.05] = 0.0  # some never send at all
        self.bounce = np.exp(rng.uniform(np.log(0.003), np.log(0.04), n))
        self.complaint = np.exp(rng.uniform(np.log(0.0001), np.log(0.001), n))
        self.onset = np.where(rng.random(n) < 0.15, rng.integers(30, minutes, n), 1 << 40)
        self.kind = rng.integers(0, 3, n)  # list import, complaints, blocklist
        self.burst = np.where(rng.random(n) < 0.2, rng.integers(0, minutes, n), 1 << 40)

    def minute(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = self.rng
        bursting = (t >= self.burst) & (t < self.burst + 15)
        sent = rng.poisson(self.volume * np.where(bursting, 20.0, 1.0) * (1.0 + 0.5 * np.sin(t / 90.0)))
        bad = t >= self.onset
        bounced = rng.binomial(sent, np.where(bad & (self.kind == 0), 0.3, self.bounce))
        blocked = rng.binomial(sent - bounced, np.where(bad & (self.kind == 2), 0.25, 0.0))
        complained = rng.binomial(sent - bounced - blocked, np.where(bad & (self.kind == 1), 0.02, self.complaint))
        return sent, bounced + blocked, complained, rng.binomial(bounced, 0.1) + blocked


def assert_same(fast: Decisions, reference: Decisions, where: str) -> None:
    for name in EXACT:
        assert np.array_equal(getattr(fast, name), getattr(reference, name)), (where, name)
        assert getattr(fast, name).dtype == getattr(reference, name).dtype, (where, name)
    for name in CLOSE:
        np.testing.assert_allclose(getattr(fast, name), getattr(reference, name), rtol=RTOL, atol=0.0, err_msg=f"{where}: {name}")


def assert_state_close(fast: DetectorState, reference: ReferenceState, where: str) -> None:
    for name, (_, dtype) in detector._ARRAYS.items():
        ours, theirs = getattr(fast, name), getattr(reference, name)
        assert ours.shape == theirs.shape and ours.dtype == dtype, (where, name)
        if dtype == np.float64:
            np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=1e-300, err_msg=f"{where}: {name}")
        else:
            assert np.array_equal(ours, theirs), (where, name)


def reference_reset(state: ReferenceState, index: np.ndarray, names: tuple[str, ...] = tuple(detector._ARRAYS)) -> None:
    for name in names:
        getattr(state, name)[..., index] = 0


def run_both(n: int, minutes: int, seed: int, config: DetectorConfig = detector.DEFAULT) -> tuple[int, int]:
    """Both steps over one population, with the operations the services apply between minutes; (decisions, idle share %)."""
    population, rng = Population(n, minutes, seed), np.random.default_rng(seed + 100)
    fast, reference = DetectorState.empty(n), ReferenceState(n)
    decided, idle = 0, 0
    for t in range(minutes):
        if t % 37 == 20:  # an override lapses, or a person resumes: the decided may decide again (most are idle now)
            lifted = np.flatnonzero(reference.paused)[::2]
            fast.paused[lifted] = reference.paused[lifted] = False
        if t % 53 == 40:
            some = rng.choice(n, 5, replace=False)
            fast.reset(some)
            reference_reset(reference, some)
            other = rng.choice(n, 5, replace=False)
            fast.restart_excursion(other)
            reference_reset(reference, other, ("cusum", "exc_events", "exc_trials", "exc_minutes"))
        if t == minutes // 2:
            fast = DetectorState.from_bytes(fast.to_bytes())  # the beat task saves and restores every run
        counts = population.minute(t)
        idle += int((counts[0] == 0).sum())
        got, want = detector_step(fast, *counts, config=config), reference_step(reference, *counts, config=config)
        assert_same(got, want, f"seed {seed}, minute {t}")
        decided += len(want)
        if t % 100 == 99 or t == minutes - 1:
            assert_state_close(fast, reference, f"seed {seed}, minute {t}")
    return decided, round(100 * idle / (n * minutes))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_fast_step_decides_as_the_reference_over_a_population_mostly_idle(seed: int) -> None:
    decided, idle = run_both(1500, 480, seed)
    print(f"\n  seed {seed}: {decided} decisions, the same; {idle}% of the entity-minutes idle")
    assert decided >= 30 and idle >= 50  # the comparison covered decisions, and the idle path did the most of the work


def test_with_another_config_and_far_idle_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gaps longer than the tabled powers, and a config of other half-lives and thresholds."""
    monkeypatch.setattr(detector, "_TABLE", 8)
    monkeypatch.setattr(detector, "_POWER_TABLES", {})
    config = DetectorConfig(threshold=9.0, baseline_half_life_minutes=240.0, window_half_life_minutes=15.0)
    decided, _ = run_both(800, 300, 4, config)
    assert decided >= 10


def test_a_change_of_config_between_minutes_keeps_the_decisions() -> None:
    """Idle minutes forget by the config they passed under; new thresholds may arm an idle entity."""
    n, population = 600, Population(600, 300, 5)
    fast, reference = DetectorState.empty(n), ReferenceState(n)
    configs = [detector.DEFAULT, DetectorConfig(threshold=6.0, baseline_half_life_minutes=100.0), detector.DEFAULT]
    for t in range(300):
        counts = population.minute(t)
        config = configs[t // 100]
        assert_same(detector_step(fast, *counts, config=config), reference_step(reference, *counts, config=config), f"minute {t}")
    assert_state_close(fast, reference, "end")


def test_a_state_saved_in_format_1_loads_and_continues_as_the_reference() -> None:
    """What the detector saved before its rows (format 1: the arrays by name) still loads: a deploy keeps its state."""
    n, population = 500, Population(500, 240, 6)
    reference = ReferenceState(n)
    for t in range(120):
        reference_step(reference, *population.minute(t))
    buffer = io.BytesIO()
    np.savez(buffer, format=np.int64(1), **{name: getattr(reference, name) for name in detector._ARRAYS})
    fast = DetectorState.from_bytes(buffer.getvalue())
    assert_state_close(fast, reference, "loaded")
    for t in range(120, 240):
        counts = population.minute(t)
        assert_same(detector_step(fast, *counts), reference_step(reference, *counts), f"minute {t}")
    assert_state_close(fast, reference, "end")


def test_an_unknown_format_is_refused() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, format=np.int64(99))
    with pytest.raises(ValueError, match="format 99"):
        DetectorState.from_bytes(buffer.getvalue())


def test_the_arrays_read_by_name_are_snapshots_and_only_paused_is_written_in_place() -> None:
    state = DetectorState.empty(3)
    detector_step(state, np.array([100, 0, 0]), np.array([2, 0, 0]), np.zeros(3, np.int64), None)
    assert state.minutes_seen.tolist() == [1, 1, 1] and state.base_trials[:, 0].all() and not state.base_trials[:, 1:].any()
    with pytest.raises(ValueError):
        state.base_trials[0, 0] = 1.0
    state.paused[2] = True
    assert state.paused.tolist() == [False, False, True]


def test_copy_from_a_state_on_another_clock_keeps_each_entry_as_it_was() -> None:
    """``detection._aligned_state`` copies entries from the saved state into a fresh one when a domain was deleted."""
    n, population = 400, Population(400, 200, 7)
    saved = DetectorState.empty(n)
    for t in range(200):
        detector_step(saved, *population.minute(t))
    fresh = DetectorState.empty(n - 1)
    source, target = np.arange(1, n), np.arange(n - 1)
    fresh.copy_from(saved, source=source, target=target)
    for name in detector._ARRAYS:
        assert np.array_equal(getattr(fresh, name), getattr(saved, name)[..., source]), name
