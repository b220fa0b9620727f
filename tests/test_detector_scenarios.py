"""The anomaly detector against generated incidents, side by side with a static-threshold peer.

No database: ``deliverability.detector`` is pure numpy. Run with ``-s`` to see
the figures. The peer (``tests.scenarios.static_first_pause``) pauses when a
trailing 60-minute window with >= 100 sends has >= 5% bounces or >= 0.3%
complaints. An incident a detector never catches counts as every message the
domain sent from its onset to the end of the data (and every minute).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from deliverability import detector
from deliverability.detector import DetectorConfig, DetectorState, detector_step, replay
from tests.scenarios import Scenario, generate, static_first_pause

SEEDS = (1, 2, 3)


@dataclass(frozen=True)
class Outcome:
    """One detector's record on one scenario: first pause minute per domain, -1 when never."""

    first: np.ndarray
    latency_first: np.ndarray  # first pause at or after the onset (the static peer may pause earlier too)

    def caught(self, sc: Scenario) -> int:
        return int((self.latency_first[sc.incidents] >= 0).sum())

    def false_pauses(self, sc: Scenario) -> int:
        return int((self.first[sc.healthy] >= 0).sum())

    def before_onset(self, sc: Scenario) -> int:
        at = sc.incidents
        return int(((self.first[at] >= 0) & (self.first[at] < sc.onset[at])).sum())

    def messages(self, sc: Scenario) -> np.ndarray:
        """Messages sent from the onset to the pause minute, inclusive (never: to the end)."""
        minutes = sc.sent.shape[1]
        end = np.where(self.latency_first >= 0, self.latency_first + 1, minutes)
        return np.array([sc.sent[d, sc.onset[d] : end[d]].sum() for d in sc.incidents])

    def minutes(self, sc: Scenario) -> np.ndarray:
        end = np.where(self.latency_first >= 0, self.latency_first, sc.sent.shape[1])
        return (end - sc.onset)[sc.incidents]


def ours(sc: Scenario) -> Outcome:
    first = np.full(len(sc.sent), -1)
    for domain, minute, _, _ in replay(sc.sent, sc.bounced, sc.complained, sc.reputation):
        first[domain] = minute
    return Outcome(first, first)


def static(sc: Scenario) -> Outcome:
    return Outcome(
        static_first_pause(sc.sent, sc.bounced, sc.complained),
        static_first_pause(sc.sent, sc.bounced, sc.complained, start=np.maximum(sc.onset, 0)),
    )


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def compared(request: pytest.FixtureRequest) -> tuple[int, Scenario, Outcome, Outcome]:
    sc = generate(request.param)
    result = request.param, sc, ours(sc), static(sc)
    _print_side_by_side(*result)
    return result


def _print_side_by_side(seed: int, sc: Scenario, mine: Outcome, peer: Outcome) -> None:
    n_inc, n_ok = len(sc.incidents), len(sc.healthy)
    kinds = ", ".join(f"{k} {int((sc.kind == k).sum())}" for k in np.unique(sc.kind[sc.incidents]))
    rows = [
        ("caught", lambda o: f"{o.caught(sc)}/{n_inc}"),
        ("false pauses (healthy)", lambda o: f"{o.false_pauses(sc)}/{n_ok}"),
        ("paused before onset", lambda o: str(o.before_onset(sc))),
        ("messages to pause, median", lambda o: f"{np.median(o.messages(sc)):.0f}"),
        ("messages to pause, p90", lambda o: f"{np.percentile(o.messages(sc), 90):.0f}"),
        ("minutes to pause, median", lambda o: f"{np.median(o.minutes(sc)):.0f}"),
        ("minutes to pause, p90", lambda o: f"{np.percentile(o.minutes(sc), 90):.0f}"),
    ]
    print(f"\nseed {seed}: {len(sc.sent)} domains x {sc.sent.shape[1]} minutes; incidents {n_inc} ({kinds}); healthy {n_ok}")
    print(f"  {'':28s}{'Sendplane':>12s}{'static 5%/0.3%':>16s}")
    for label, cell in rows:
        print(f"  {label:28s}{cell(mine):>12s}{cell(peer):>16s}")
    print("  (an incident never caught counts as every message and minute from its onset to the end)")


def test_every_incident_is_caught_at_or_after_its_onset(compared: tuple[int, Scenario, Outcome, Outcome]) -> None:
    _, sc, mine, _ = compared
    missed = [(int(d), str(sc.kind[d])) for d in sc.incidents if mine.first[d] < 0]
    early = [(int(d), int(mine.first[d]), int(sc.onset[d])) for d in sc.incidents if 0 <= mine.first[d] < sc.onset[d]]
    assert not missed, f"incidents never caught: {missed}"
    assert not early, f"paused before the onset (domain, pause, onset): {early}"


def test_no_healthy_domain_is_paused(compared: tuple[int, Scenario, Outcome, Outcome]) -> None:
    _, sc, mine, _ = compared
    paused = [(int(d), int(mine.first[d])) for d in sc.healthy if mine.first[d] >= 0]
    assert not paused, f"healthy domains paused (domain, minute): {paused}"


def test_median_messages_to_pause_is_at_most_half_the_static_rule(
    compared: tuple[int, Scenario, Outcome, Outcome],
) -> None:
    _, sc, mine, peer = compared
    ours_median, static_median = np.median(mine.messages(sc)), np.median(peer.messages(sc))
    assert ours_median <= 0.5 * static_median, f"median messages to pause {ours_median} vs static {static_median}"


# --- single behaviours -----------------------------------------------------------------


def _counts(rng: np.random.Generator, volume: np.ndarray, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sent = rng.poisson(volume)
    return sent, rng.binomial(sent, rate)


def test_two_and_two_thousand_messages_a_minute_are_both_caught_after_the_same_relative_jump() -> None:
    rng = np.random.default_rng(7)
    minutes, onset = 720, 240
    volume = np.array([[2.0], [2000.0]]) * np.ones(minutes)
    rate = np.where(np.arange(minutes) < onset, 0.01, 0.08) * np.ones((2, 1))  # 1% -> 8% on both
    sent, bounced = _counts(rng, volume, rate)
    paused = {d: (m, s) for d, m, s, _ in replay(sent, bounced, np.zeros_like(sent))}
    slow, fast = paused.get(0, (None,))[0], paused.get(1, (None,))[0]
    print(f"\n  1% -> 8% bounce: 2/min paused after {slow} , 2000/min after {fast} (onset {onset})")
    assert set(paused) == {0, 1}
    assert all(m >= onset and s == "bounce" for m, s in paused.values())


def test_a_single_bounce_never_pauses_a_tiny_domain() -> None:
    # 60 domains sending one message every 5 minutes; domain i's only bounce is at minute 5 i
    # (domain 0: its very first message, cold); domains 60-119 send that one message and nothing else.
    minutes = 720
    sent = np.zeros((120, minutes), dtype=np.int64)
    sent[:60, ::5] = 1
    sent[60 + np.arange(60), 5 * np.arange(60)] = 1
    bounced = np.zeros_like(sent)
    bounced[np.arange(120), 5 * (np.arange(120) % 60)] = 1
    assert replay(sent, bounced, np.zeros_like(sent), bounced) == []  # as a bounce and as a reputation bounce


def _run_until_paused(state: DetectorState, rng: np.random.Generator, minutes: int = 600) -> int:
    """Domain 0 at 1% then 30% bounces from minute 120, domain 1 at 1% throughout; minute domain 0 paused."""
    for minute in range(minutes):
        sent = rng.poisson([200.0, 200.0])
        rates = [0.3 if minute >= 120 else 0.01, 0.01]
        decisions = detector_step(state, sent, rng.binomial(sent, rates), np.zeros(2), np.zeros(2))
        if 0 in decisions.index:
            return minute
    raise AssertionError("domain 0 was never paused")


def test_reset_makes_a_domain_cold_and_it_can_be_paused_again() -> None:
    rng = np.random.default_rng(3)
    state = DetectorState.empty(2)
    _run_until_paused(state, rng)
    assert state.paused[0] and state.base_trials[0, 1] > 0
    other = {name: getattr(state, name)[..., 1].copy() for name in detector._ARRAYS}
    state.reset(np.array([0]))
    cold = DetectorState.empty(1)
    for name in detector._ARRAYS:
        assert np.array_equal(getattr(state, name)[..., 0], getattr(cold, name)[..., 0]), name
        assert np.array_equal(getattr(state, name)[..., 1], other[name]), name
    assert _run_until_paused(state, rng) >= 120  # decides again, and only once the incident is back
    state.grow(5)
    assert len(state) == 5 and not state.paused[2:].any() and not state.base_trials[:, 2:].any()


def _steps(state: DetectorState, sc: Scenario, start: int, stop: int) -> list[tuple[int, int, tuple[float, ...]]]:
    out = []
    for m in range(start, stop):
        d = detector_step(state, sc.sent[:, m], sc.bounced[:, m], sc.complained[:, m], sc.reputation[:, m])
        out += [(int(i), m, tuple(d.evidence(k).values())) for k, i in enumerate(d.index)]
    return out


def test_state_survives_to_bytes_and_continues_identically() -> None:
    sc = generate(4, domains=120)
    straight = DetectorState.empty(len(sc.sent))
    expected = _steps(straight, sc, 0, 720)
    restarted = DetectorState.empty(len(sc.sent))
    before = _steps(restarted, sc, 0, 400)
    restored = DetectorState.from_bytes(restarted.to_bytes())
    for name in detector._ARRAYS:
        assert np.array_equal(getattr(restored, name), getattr(restarted, name)), name
        assert getattr(restored, name).dtype == getattr(restarted, name).dtype, name
    after = _steps(restored, sc, 400, 720)
    assert any(m >= 400 for _, m, _ in expected)  # decisions happen after the restart point
    assert before + after == expected


def test_replay_uses_only_data_up_to_each_minute() -> None:
    sc = generate(5, domains=150)
    cut = 450
    head = replay(sc.sent[:, :cut], sc.bounced[:, :cut], sc.complained[:, :cut], sc.reputation[:, :cut])
    # A different future: every domain's bounces jump to 50% after the cut.
    future_bounced = sc.bounced.copy()
    future_bounced[:, cut:] = sc.sent[:, cut:] // 2
    whole = replay(sc.sent, future_bounced, sc.complained, sc.reputation)
    assert head, "no decision before the cut: the test would prove nothing"
    assert [(d, m) for d, m, _, _ in whole if m < cut] == [(d, m) for d, m, _, _ in head]
    assert len(whole) > len(head)  # the future did produce decisions, only later


def test_ceilings_pause_an_unacceptable_normal_that_the_cusum_learned() -> None:
    only_ceilings = DetectorConfig(threshold=1e12)  # the CUSUM never decides: the ceilings alone
    rng = np.random.default_rng(11)
    minutes = 240
    volume = np.full((4, minutes), 1000.0)
    bounce = np.array([[0.08], [0.13], [0.01], [0.01]]) * np.ones(minutes)
    complaint = np.array([[0.0002], [0.0002], [0.002], [0.005]]) * np.ones(minutes)
    sent, bounced = _counts(rng, volume, bounce)
    complained = rng.binomial(sent, complaint)
    paused = {d: (s, e) for d, _, s, e in replay(sent, bounced, complained, config=only_ceilings)}
    assert sorted(paused) == [1, 3]  # 13% bounces and 0.5% complaints, not 8% or 0.2%
    assert paused[1][0] == "bounce" and paused[3][0] == "complaint"
    assert all(e["rule"] == "ceiling" and e["statistic"] >= e["threshold"] for _, e in paused.values())
