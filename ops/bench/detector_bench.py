"""The anomaly detector at scale: 100,000 domains x 1,440 minutes, against a static peer and a Python loop.

Run: ops/bench/detector [--domains N] [--minutes M] [--naive-domains K] [--smoke]. No
database, no Django: ``deliverability.detector`` is pure numpy.

1. Synthetic counts, drawn 60 minutes at a time (not timed): volumes
   log-uniform 0.1-3,000 messages a minute (Poisson) on a daily cycle, bounce
   baselines 0.3-4%, complaints 0.01-0.1%, reputation bounces a tenth of the
   bounces; 1% of the domains get a list import (30% bounces) at a random minute.
2. Sendplane: ``detector_step`` over every domain, minute by minute from a
   cold state. A full pass is the sum of the step times; the one-minute update
   is the median and p95 of those steps (all M of them, warm and cold).
   The beat task's cycle adds ``from_bytes`` + ``to_bytes`` of the state.
3. The peer, the same run: Amazon SES-style static thresholds (>= 5% bounces
   or >= 0.3% complaints over a trailing 60-minute window with >= 100 sends),
   vectorized with a rolling sum kept in a 60-minute ring buffer, one update
   per minute.
4. A naive per-domain Python loop of the same detector (``math``, one dict per
   domain) on K domains for 20 minutes, extrapolated linearly to N; its CUSUMs
   are checked against the vectorized ones on the same K domains.

Timings are wall-clock on this machine; compare ratios across machines. The
last line is RESULT ... for scripts. ``--smoke`` (CI) runs the same four parts
on 2,000 domains x 180 minutes and 200 loop domains, in seconds. Either form
exits 1 when the path broke: no step measured, or the loop's CUSUMs and
numpy's disagree.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from deliverability import detector  # noqa: E402
from deliverability.detector import DEFAULT, DetectorState, detector_step  # noqa: E402

BAR_MS = 100.0


class Traffic:
    """Per-domain parameters; ``chunks`` draws (sent, bounced, complained, reputation) minute rows."""

    def __init__(self, domains: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.volume = np.exp(rng.uniform(np.log(0.1), np.log(3000.0), domains))
        self.phase = rng.uniform(0, 1440, domains)
        self.bounce = np.exp(rng.uniform(np.log(0.003), np.log(0.04), domains))
        self.complaint = np.exp(rng.uniform(np.log(0.0001), np.log(0.001), domains))
        self.onset = np.where(rng.random(domains) < 0.01, rng.integers(120, 1440, domains), 1 << 40)

    def chunks(self, minutes: int, size: int = 60) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        for start in range(0, minutes, size):
            t = np.arange(start, min(start + size, minutes))
            cycle = 1.0 + 0.5 * np.sin(2 * np.pi * (t[:, None] + self.phase) / 1440.0)
            sent = self.rng.poisson(self.volume * cycle)
            rate = np.where(t[:, None] >= self.onset, 0.3, self.bounce)
            bounced = self.rng.binomial(sent, rate)
            yield start, sent, bounced, self.rng.binomial(sent - bounced, self.complaint), self.rng.binomial(bounced, 0.1)


class StaticPeer:
    """The static 60-minute rule as a streaming rolling sum: one O(n) update a minute."""

    def __init__(self, domains: int, window: int = 60) -> None:
        self.ring = np.zeros((3, window, domains), dtype=np.int64)
        self.sums = np.zeros((3, domains), dtype=np.int64)
        self.paused = np.zeros(domains, dtype=bool)
        self.window = window

    def step(self, minute: int, sent: np.ndarray, bounced: np.ndarray, complained: np.ndarray) -> np.ndarray:
        slot = minute % self.window
        for k, counts in enumerate((sent, bounced, complained)):
            self.sums[k] += counts - self.ring[k, slot]
            self.ring[k, slot] = counts
        s, b, c = self.sums
        fires = (s >= 100) & ((b >= 0.05 * s) | (c >= 0.003 * s)) & ~self.paused
        index = np.flatnonzero(fires)
        self.paused[index] = True
        return index


def naive_step(domains: list[dict[str, Any]], sent: list[int], events: list[list[int]]) -> list[int]:
    """The detector's step, one domain at a time in plain Python (the per-domain loop a first version writes)."""
    c, decided = DEFAULT, []
    keep = 0.5 ** (1.0 / c.baseline_half_life_minutes)
    wkeep = 0.5 ** (1.0 / c.window_half_life_minutes)
    for i, d in enumerate(domains):
        n_sent, fire = float(sent[i]), False
        d["win_trials"] = d["win_trials"] * wkeep + max(n_sent, float(events[0][i]))
        for s in range(len(detector.SIGNALS)):
            k = float(events[s][i])
            n = max(n_sent, k)
            prior_trials = c.prior_events / c.prior_rate[s]
            w = prior_trials + d["base_trials"][s]
            mean = (c.prior_events + d["base_events"][s]) / w
            p0 = min(max(mean + c.baseline_z * math.sqrt(mean * (1 - mean) / (w + 1)), 1e-7), 0.5)
            floor = max(c.shift_factor[s] * p0, p0 + c.shift_delta[s])
            est = (d["exc_events"][s] + c.shift_prior_events) / (d["exc_trials"][s] + c.shift_prior_events / floor)
            p1 = min(max(floor, est), 0.95)
            llr = (k * math.log(p1 / p0) + (n - k) * math.log((1 - p1) / (1 - p0))) / _effect(n, p0)
            cusum = max(0.0, d["cusum"][s] + llr)
            if cusum == 0.0:  # back in control: learn this minute and the excursion it closes
                new_k, new_n = k + d["exc_events"][s], n + d["exc_trials"][s]
                weight = 1 / _effect(new_n / (d["exc_minutes"][s] + 1), p0)
                d["base_events"][s] = d["base_events"][s] * keep + weight * new_k
                d["base_trials"][s] = d["base_trials"][s] * keep + weight * new_n
            else:
                d["base_events"][s] *= keep
                d["base_trials"][s] *= keep
            d["cusum"][s] = cusum
            running = cusum > 0
            d["exc_events"][s] = d["exc_events"][s] + k if running else 0.0
            d["exc_trials"][s] = d["exc_trials"][s] + n if running else 0.0
            d["exc_minutes"][s] = d["exc_minutes"][s] + 1 if running else 0
            d["win_events"][s] = d["win_events"][s] * wkeep + k
            fire |= cusum >= c.threshold and d["exc_events"][s] >= c.min_events[s]
        if fire and not d["paused"]:  # (the ceilings are left out: the loop is already the slow side)
            d["paused"] = True
            decided.append(i)
    return decided


def _effect(trials: float, p0: float) -> float:
    """Overdispersion: how many binomial trials' worth of noise ``trials`` sends carry at rate p0."""
    return 1 + max(trials - 1, 0) * p0 * DEFAULT.rate_noise**2 / (1 - p0)


def naive_domains(k: int) -> list[dict[str, Any]]:
    names = ("cusum", "base_events", "base_trials", "exc_events", "exc_trials", "exc_minutes", "win_events")
    return [{"paused": False, "win_trials": 0.0, **{name: [0.0, 0.0, 0.0] for name in names}} for _ in range(k)]


def ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[int(0.95 * (len(ordered) - 1))] * 1e3


def timed(call: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - start


def full_pass(args: argparse.Namespace) -> tuple[DetectorState, list[float], list[float], int, int]:
    traffic = Traffic(args.domains, args.seed)
    state, peer = DetectorState.empty(args.domains), StaticPeer(args.domains)
    ours_s, peer_s, ours_paused, peer_paused = [], [], 0, 0
    for start, sent, bounced, complained, reputation in traffic.chunks(args.minutes):
        for row in range(len(sent)):
            decisions, seconds = timed(detector_step, state, sent[row], bounced[row], complained[row], reputation[row])
            ours_s.append(seconds)
            ours_paused += len(decisions)
            index, seconds = timed(peer.step, start + row, sent[row], bounced[row], complained[row])
            peer_s.append(seconds)
            peer_paused += len(index)
    listed, healthy = traffic.onset < args.minutes, traffic.onset >= args.minutes
    print(f"  traffic: {args.domains:,} domains, {int(listed.sum()):,} with a list import; paused by Sendplane {ours_paused:,} "
          f"({int((state.paused & healthy).sum())} without one), by the peer {peer_paused:,} "
          f"({int((peer.paused & healthy).sum()):,} without one)")
    return state, ours_s, peer_s, ours_paused, peer_paused


def naive(args: argparse.Namespace) -> tuple[float, float]:
    """Seconds per minute of the Python loop on K domains, and the worst CUSUM gap to the vectorized step."""
    traffic = Traffic(args.naive_domains, args.seed + 1)
    domains, state = naive_domains(args.naive_domains), DetectorState.empty(args.naive_domains)
    samples = []
    _, sent, bounced, complained, reputation = next(traffic.chunks(20, size=20))
    for row in range(len(sent)):
        rows = [bounced[row].tolist(), complained[row].tolist(), reputation[row].tolist()]
        _, seconds = timed(naive_step, domains, sent[row].tolist(), rows)
        samples.append(seconds)
        detector_step(state, sent[row], bounced[row], complained[row], reputation[row])
    gap = max(abs(d["cusum"][s] - state.cusum[s, i]) for i, d in enumerate(domains) for s in range(3))
    assert np.count_nonzero(state.cusum), "no CUSUM moved: the comparison would prove nothing"
    return statistics.median(samples), gap


def serialization(state: DetectorState, repeat: int = 10) -> tuple[int, float, float]:
    blob = state.to_bytes()
    to_s = [timed(state.to_bytes)[1] for _ in range(repeat)]
    from_s = [timed(DetectorState.from_bytes, blob)[1] for _ in range(repeat)]
    return len(blob), statistics.median(to_s) * 1e3, statistics.median(from_s) * 1e3


SMOKE = {"domains": 2000, "minutes": 180, "naive_domains": 200}
# The loop and numpy compute the same float64 CUSUMs in a different order: they agree to rounding, not bit for bit.
CUSUM_TOLERANCE = 1e-6


def args_parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help=f"seconds: {SMOKE} unless given")
    parser.add_argument("--domains", type=int, default=100_000)
    parser.add_argument("--minutes", type=int, default=1440)
    parser.add_argument("--naive-domains", type=int, default=2000, help="domains for the Python loop (extrapolated)")
    parser.add_argument("--seed", type=int, default=1)
    if parser.parse_known_args()[0].smoke:
        parser.set_defaults(**SMOKE)  # explicit options still win
    return parser.parse_args()


def main() -> int:
    args = args_parse()
    print(f"detector bench: {args.domains:,} domains x {args.minutes:,} minutes (numpy {np.__version__})")
    state, ours_s, peer_s, _, _ = full_pass(args)
    if not ours_s:
        print("FAILED: no detector step was measured", file=sys.stderr)
        return 1
    ours_med, ours_p95 = ms(ours_s)
    peer_med, peer_p95 = ms(peer_s)
    size, to_ms, from_ms = serialization(state)
    naive_s, gap = naive(args)
    naive_ms = naive_s * 1e3 * args.domains / args.naive_domains
    ok = "yes" if ours_p95 < BAR_MS else "no"
    print(f"  Sendplane full pass       {sum(ours_s):8.1f} s   one-minute update median {ours_med:7.1f} ms  p95 {ours_p95:7.1f} ms  "
          f"(bar {BAR_MS:.0f} ms: {ok})")
    print(f"  static peer full pass     {sum(peer_s):8.1f} s   one-minute update median {peer_med:7.1f} ms  p95 {peer_p95:7.1f} ms")
    print(f"  Python loop, extrapolated from {args.naive_domains:,} domains x 20 minutes: {naive_ms:8.0f} ms a minute "
          f"({naive_ms / ours_med:.0f}x Sendplane's median; largest CUSUM gap to numpy {gap:.1e})")
    print(f"  state: {size:,} bytes ({size / args.domains:.0f} a domain); to_bytes {to_ms:.1f} ms, from_bytes {from_ms:.1f} ms; "
          f"beat cycle (from_bytes + step + to_bytes) ~{from_ms + ours_med + to_ms:.0f} ms")
    print(f"RESULT domains={args.domains} minutes={args.minutes} pass_s={sum(ours_s):.1f} update_ms_median={ours_med:.1f} "
          f"update_ms_p95={ours_p95:.1f} peer_update_ms_median={peer_med:.1f} naive_update_ms={naive_ms:.0f} "
          f"state_bytes={size} to_bytes_ms={to_ms:.1f} from_bytes_ms={from_ms:.1f} bar_ms={BAR_MS:.0f} ok={ok}")
    if not gap <= CUSUM_TOLERANCE:  # also catches NaN
        print(f"FAILED: the Python loop's CUSUMs differ from numpy's by {gap:.1e}: one of them changed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
