"""The anomaly detector at scale: 100,000 domains x 1,440 minutes, then 100,000 domains x 5 provider streams.

Run: ops/bench/detector [--domains N] [--minutes M] [--naive-domains K] [--providers P]
[--provider-minutes M2] [--smoke]. No database, no Django: ``deliverability.detector`` is pure numpy.

1. Synthetic counts, drawn 60 minutes at a time (not timed): volumes
   log-uniform 0.1-3,000 messages a minute (Poisson) on a daily cycle, bounce
   baselines 0.3-4%, complaints 0.01-0.1%, reputation bounces a tenth of the
   bounces; 1% of the domains get a list import (30% bounces) at a random minute.
2. Sendplane: ``detector_step`` over every domain, minute by minute, from a
   cold state. A full pass is the sum of the step times; the one-minute update
   is the median and p95 of those steps (all M of them, warm and cold). The
   beat task's cycle adds ``from_bytes`` + ``to_bytes`` of the state. Beside
   it, on its own state, ``reference_step``: every domain every minute, the
   detector's definition and what the step did before it skipped the idle
   (the two in alternating order each minute, so the machine's noise hits both).
3. The peer, the same run: Amazon SES-style static thresholds (>= 5% bounces
   or >= 0.3% complaints over a trailing 60-minute window with >= 100 sends),
   vectorized with a rolling sum kept in a 60-minute ring buffer, one update
   per minute.
4. A naive per-domain Python loop of the same detector (``math``, one dict per
   domain) on K domains for 20 minutes, extrapolated linearly to N; its CUSUMs
   are checked against the vectorized ones on the same K domains.
5. Per stream (``--providers P``, 5 by default; 0 skips it): each domain's
   mail spread over P provider groups (Gmail 40%, Microsoft 25%, Yahoo 10%,
   Apple 10%, other 15%; each domain's own mix drawn around those), domain
   volumes lognormal (median 0.3 messages a minute: most domains send a few an
   hour, the largest thousands a minute) on a daily cycle, minute-to-minute
   lognormal noise on the rates, a tenth of the healthy domains bursting x10
   for 20 minutes. Incidents from minute 60, only where they are visible (at
   least ~30 excess bad events expected): 0.5% of the domains get ONE stream
   blocked (reputation refusals at 20-60% at that provider only), 0.5% a
   domain-wide list import (30% bounces on every stream). The one-minute
   update is the whole minute: the step over domains x P streams, the
   per-domain sums, and the step over the domains; median and p95 over M2
   minutes, with ``reference_step`` doing the same minute in the same process.
   Printed: false pauses on healthy streams and on healthy domains beside the
   static rule's (on the same streams and sums), and which incidents were
   caught, on the stream or on the domain.

Timings are wall-clock on this machine; compare ratios across machines. The
last line is RESULT ... for scripts. ``--smoke`` (CI) runs the same parts on
2,000 domains x 180 minutes, 200 loop domains and 2,000 domains x 5 streams x
120 minutes, in seconds. Either form exits 1 when the path broke: no step
measured, the loop's CUSUMs and numpy's disagree, or ``detector_step`` and
``reference_step`` decided differently (entities, minutes, signals, rules) or
their CUSUMs differ by more than 1e-9, relative.
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
from deliverability.detector import (  # noqa: E402
    DEFAULT,
    Decisions,
    DetectorState,
    ReferenceState,
    detector_step,
    reference_step,
)
from deliverability.stream_detector import Minute, TwoLevel  # noqa: E402

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
        self.ring = np.zeros((3, window, domains), dtype=np.int32)  # one minute's counts: int32 is plenty
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


class Twin:
    """``detector_step`` and ``reference_step`` on their own states, fed the same minutes, timed in alternating order."""

    def __init__(self, n: int) -> None:
        self.fast, self.reference = DetectorState.empty(n), ReferenceState(n)
        self.fast_s: list[float] = []
        self.reference_s: list[float] = []
        self.mismatch: list[str] = []
        self.minute = 0

    def step(self, *counts: np.ndarray, fast_first: bool) -> Decisions:
        order = (self._fast, self._reference) if fast_first else (self._reference, self._fast)
        results = {call.__name__: call(*counts) for call in order}
        fast, reference = results["_fast"], results["_reference"]
        if not same_decisions(fast, reference):
            self.mismatch.append(f"minute {self.minute}: {fast.index.tolist()[:5]} vs {reference.index.tolist()[:5]}")
        self.minute += 1
        return fast

    def _fast(self, *counts: np.ndarray) -> Decisions:
        decisions, seconds = timed(detector_step, self.fast, *counts)
        self.fast_s.append(seconds)
        return decisions

    def _reference(self, *counts: np.ndarray) -> Decisions:
        decisions, seconds = timed(reference_step, self.reference, *counts)
        self.reference_s.append(seconds)
        return decisions

    def cusum_gap(self) -> float:
        """The largest relative difference of the two states' CUSUMs (NaN when one is NaN)."""
        fast, reference = self.fast.cusum, self.reference.cusum
        return float(np.max(np.abs(fast - reference) / np.maximum(np.abs(reference), 1e-12), initial=0.0))


def same_decisions(a: Decisions, b: Decisions) -> bool:
    """The same entities, signals and rules; the evidence equal to 1e-9 (relative)."""
    if not (np.array_equal(a.index, b.index) and np.array_equal(a.signal, b.signal) and np.array_equal(a.rule, b.rule)):
        return False
    evidence = ("baseline", "statistic", "volume", "events", "minutes")
    return all(np.allclose(getattr(a, f), getattr(b, f), rtol=FAST_TOLERANCE, atol=0.0) for f in evidence)


def full_pass(args: argparse.Namespace) -> tuple[Twin, list[float], int]:
    traffic = Traffic(args.domains, args.seed)
    twin, peer = Twin(args.domains), StaticPeer(args.domains)
    peer_s, ours_paused, peer_paused = [], 0, 0
    for start, sent, bounced, complained, reputation in traffic.chunks(args.minutes):
        for row in range(len(sent)):
            decisions = twin.step(sent[row], bounced[row], complained[row], reputation[row], fast_first=(start + row) % 2 == 0)
            ours_paused += len(decisions)
            index, seconds = timed(peer.step, start + row, sent[row], bounced[row], complained[row])
            peer_s.append(seconds)
            peer_paused += len(index)
    listed, healthy = traffic.onset < args.minutes, traffic.onset >= args.minutes
    print(f"  traffic: {args.domains:,} domains, {int(listed.sum()):,} with a list import; paused by Sendplane {ours_paused:,} "
          f"({int((twin.fast.paused & healthy).sum())} without one), by the peer {peer_paused:,} "
          f"({int((peer.paused & healthy).sum()):,} without one)")
    return twin, peer_s, ours_paused


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


SHARES = (0.40, 0.25, 0.10, 0.10, 0.15)  # Gmail, Microsoft, Yahoo, Apple, other
VISIBLE_EVENTS = 30.0  # an incident is placed only where this many excess bad events are expected after its onset


class ProviderTraffic:
    """Domains x provider streams (stream ``d * P + p``); ``minute`` draws one minute's (sent, bounced, complained, reputation)."""

    def __init__(self, domains: int, providers: int, minutes: int, seed: int) -> None:
        self.rng = rng = np.random.default_rng(seed)
        self.domains, self.providers = domains, providers
        shares = np.resize(np.array(SHARES), providers)
        self.mix = rng.dirichlet(20.0 * shares / shares.sum(), domains)  # each domain's own mix around the shares
        self.volume = np.clip(np.exp(rng.normal(np.log(0.3), 2.0, domains)), 0.005, 5000.0)  # messages a minute
        self.phase = rng.uniform(0, 1440, domains)
        bounce = np.exp(rng.uniform(np.log(0.003), np.log(0.04), domains))
        self.bounce = np.minimum(bounce[:, None] * np.exp(rng.normal(0.0, 0.3, (domains, providers))), 0.2).ravel()
        self.complaint = np.exp(rng.uniform(np.log(0.0001), np.log(0.001), domains * providers))
        # Incidents: one stream blocked (reputation refusals there only), or a list import on every stream.
        self.block_onset = np.full(domains * providers, 1 << 40)  # per stream
        self.block_rate = np.zeros(domains * providers)
        self.import_onset = np.full(domains, 1 << 40)  # per domain
        count = max(1, round(0.005 * domains))
        onset = rng.integers(60, max(61, minutes - 60), domains)
        order = rng.permutation(domains)
        blocked: list[int] = []
        for d in order:
            p = int(rng.choice(providers, p=self.mix[d]))
            rate = rng.uniform(0.2, 0.6)
            if len(blocked) < count and self.volume[d] * self.mix[d, p] * (minutes - onset[d]) * rate >= VISIBLE_EVENTS:
                blocked.append(d)
                self.block_onset[d * providers + p], self.block_rate[d * providers + p] = onset[d], rate
            elif len(blocked) >= count:
                break
        imported = [d for d in order if d not in set(blocked) and self.volume[d] * (minutes - onset[d]) * 0.3 >= VISIBLE_EVENTS][:count]
        self.import_onset[imported] = onset[imported]
        self.stream_incident = self.block_onset < (1 << 40)
        self.domain_incident = (self.import_onset < (1 << 40)) | self.stream_incident.reshape(domains, providers).any(axis=1)
        healthy = np.flatnonzero(~self.domain_incident)
        self.burst = np.full(domains, 1 << 40)
        bursting = rng.choice(healthy, len(healthy) // 10, replace=False)
        self.burst[bursting] = rng.integers(0, max(1, minutes - 20), len(bursting))

    def minute(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng, p = self.rng, self.providers
        cycle = 1.0 + 0.5 * np.sin(2 * np.pi * (t + self.phase) / 1440.0)
        cycle *= np.where((t >= self.burst) & (t < self.burst + 20), 10.0, 1.0)
        sent = rng.poisson((self.volume * cycle)[:, None] * self.mix).ravel()
        rate = np.minimum(self.bounce * rng.lognormal(0.0, 0.2, len(sent)), 0.9)
        rate[np.repeat(t >= self.import_onset, p)] = 0.3
        ordinary = rng.binomial(sent, rate)
        blocked = rng.binomial(sent - ordinary, np.where(t >= self.block_onset, self.block_rate, 0.0))
        reputation = rng.binomial(ordinary, 0.1) + blocked
        bounced = ordinary + blocked
        return sent, bounced, rng.binomial(sent - bounced, self.complaint), reputation


class Level:
    """One level (streams or domains): Sendplane's and the reference's states, the static peer, each one's first pause."""

    def __init__(self, n: int) -> None:
        self.fast, self.reference, self.peer = DetectorState.empty(n), ReferenceState(n), StaticPeer(n)
        self.first, self.peer_first = np.full(n, -1), np.full(n, -1)
        self.mismatch: list[str] = []

    def check(self, t: int, fast: Decisions, reference: Decisions) -> None:
        if not same_decisions(fast, reference):
            self.mismatch.append(f"minute {t}: {fast.index.tolist()[:5]} vs {reference.index.tolist()[:5]}")
        self.first[fast.index] = t

    def peer_step(self, t: int, sent: np.ndarray, bounced: np.ndarray, complained: np.ndarray) -> None:
        self.peer_first[self.peer.step(t, sent, bounced, complained)] = t

    def cusum_gap(self) -> float:
        fast, reference = self.fast.cusum, self.reference.cusum
        return float(np.max(np.abs(fast - reference) / np.maximum(np.abs(reference), 1e-12), initial=0.0))


def whole_minute(step: Any, streams: Any, domains: Any, counts: tuple[np.ndarray, ...], providers: int) -> tuple[Decisions, Decisions]:
    """The reference's minute: every stream, then every domain on the plain sums of its streams."""
    decided = step(streams, *counts)
    sums = [values.reshape(-1, providers).sum(axis=1) for values in counts]
    return decided, step(domains, *sums)


def two_level_minute(two: TwoLevel, counts: tuple[np.ndarray, ...], providers: int) -> Minute:
    """Sendplane's minute as ``services/detection.py`` runs it (``stream_detector.TwoLevel``): every stream, then
    every domain on what its streams leave it (a stream that decided alone is out of its domain's input)."""
    sent, bounced, complained, reputation = counts
    # The bench draws bounces with their reputation share inside; the counters keep them apart (hard/soft vs reputation).
    streams = {"sent": sent, "bounced_hard": bounced - reputation, "bounced_soft": np.zeros_like(sent),
               "bounced_reputation": reputation, "complained": complained}
    domains = {name: values.reshape(-1, providers).sum(axis=1) for name, values in streams.items()}
    return two.step(streams, domains)


def per_stream(args: argparse.Namespace) -> dict[str, Any]:
    p, minutes = args.providers, args.provider_minutes
    traffic = ProviderTraffic(args.domains, p, minutes, args.seed + 2)
    streams, domains = Level(args.domains * p), Level(args.domains)
    two = TwoLevel(streams.fast, domains.fast, np.arange(args.domains * p) // p, np.zeros(args.domains * p, dtype=bool))
    fast_s, reference_s, active, domain_active = [], [], [], []
    for t in range(minutes):
        counts = traffic.minute(t)
        active.append(float(np.mean(counts[0] > 0)))
        domain_active.append(float(np.mean(counts[0].reshape(-1, p).sum(axis=1) > 0)))
        if t % 2 == 0:
            minute, fast = timed(two_level_minute, two, counts, p)
            reference, slow = timed(whole_minute, reference_step, streams.reference, domains.reference, counts, p)
        else:
            reference, slow = timed(whole_minute, reference_step, streams.reference, domains.reference, counts, p)
            minute, fast = timed(two_level_minute, two, counts, p)
        fast_s.append(fast)
        reference_s.append(slow)
        # The streams' step is the reference's exactly; the domains' input differs by design (the excluded streams).
        if not same_decisions(minute.streams, reference[0]):
            streams.mismatch.append(f"minute {t}: {minute.streams.index.tolist()[:5]} vs {reference[0].index.tolist()[:5]}")
        streams.first[minute.alone] = t  # paused: the stream alone
        domains.first[np.concatenate([minute.domains.index, list(minute.domain_wide)]).astype(np.int64)] = t
        streams.peer_step(t, *counts[:3])
        domains.peer_step(t, *(values.reshape(-1, p).sum(axis=1) for values in counts[:3]))
    return report_streams(args, traffic, streams, domains, fast_s, reference_s, float(np.mean(active)), float(np.mean(domain_active)))


def caught(first: np.ndarray, onset: np.ndarray) -> np.ndarray:
    return (first >= 0) & (first >= onset)


def report_streams(
    args: argparse.Namespace, traffic: ProviderTraffic, streams: Level, domains: Level, fast_s: list[float], reference_s: list[float],
    active: float, domain_active: float,
) -> dict[str, Any]:
    p = args.providers
    med, p95 = ms(fast_s)
    ref_med, ref_p95 = ms(reference_s)
    healthy_streams = ~np.repeat(traffic.domain_incident, p)  # every stream of a domain without an incident
    healthy_domains = ~traffic.domain_incident
    blocked = np.flatnonzero(traffic.stream_incident)
    imported = np.flatnonzero(traffic.import_onset < (1 << 40))
    b_onset, i_onset = traffic.block_onset[blocked], traffic.import_onset[imported]
    owner = blocked // p
    on_stream, peer_on_stream = caught(streams.first[blocked], b_onset), caught(streams.peer_first[blocked], b_onset)
    on_domain, peer_on_domain = caught(domains.first[owner], b_onset), caught(domains.peer_first[owner], b_onset)
    import_caught, peer_import = caught(domains.first[imported], i_onset), caught(domains.peer_first[imported], i_onset)
    any_stream = np.array([caught(streams.first[d * p : (d + 1) * p], o).any() for d, o in zip(imported, i_onset, strict=True)], dtype=bool)
    lag = float(np.median((streams.first[blocked] - b_onset)[on_stream])) if on_stream.any() else float("nan")
    import_lag = float(np.median((domains.first[imported] - i_onset)[import_caught])) if import_caught.any() else float("nan")
    ok = "yes" if p95 <= BAR_MS else "no"
    out = {
        "false_streams": int((streams.first[healthy_streams] >= 0).sum()),
        "false_streams_static": int((streams.peer_first[healthy_streams] >= 0).sum()),
        "false_domains": int((domains.first[healthy_domains] >= 0).sum()),
        "false_domains_static": int((domains.peer_first[healthy_domains] >= 0).sum()),
    }
    n_streams, n_domains = int(healthy_streams.sum()), int(healthy_domains.sum())
    print(f"detector per stream: {args.domains:,} domains x {p} provider streams = {args.domains * p:,} streams, "
          f"{args.provider_minutes:,} minutes; with traffic in a minute: {active:.0%} of the streams, {domain_active:.0%} of the domains")
    print(f"  one-minute update (step over the streams + per-domain sums + step over the domains): Sendplane median {med:.1f} ms "
          f"p95 {p95:.1f} ms (bar {BAR_MS:.0f} ms: {ok}); reference_step in the same run median {ref_med:.1f} ms p95 {ref_p95:.1f} ms "
          f"({ref_med / med:.1f}x)")
    print(f"  {'':44s}{'Sendplane':>12s}{'static 5%/0.3%':>16s}")
    print(f"  {'false pauses, healthy streams':44s}{out['false_streams']:>12,}{out['false_streams_static']:>16,}   of {n_streams:,}")
    print(f"  {'false pauses, healthy domains':44s}{out['false_domains']:>12,}{out['false_domains_static']:>16,}   of {n_domains:,}")
    print(f"  {f'one stream blocked ({len(blocked)}): caught on the stream':44s}"
          f"{int(on_stream.sum()):>12}{int(peer_on_stream.sum()):>16}   median {lag:.0f} min after onset")
    print(f"  {'   ... and its whole domain paused':44s}{int(on_domain.sum()):>12}{int(peer_on_domain.sum()):>16}"
          "   (the static rule judges the plain sums)")
    print(f"  {f'domain-wide list import ({len(imported)}): domain caught':44s}{int(import_caught.sum()):>12}{int(peer_import.sum()):>16}"
          f"   median {import_lag:.0f} min after onset")
    print(f"  {'   ... caught on at least one of its streams':44s}{int(any_stream.sum()):>12}")
    gap = streams.cusum_gap()  # the domains' input differs from the reference's by design: their CUSUMs too
    mismatch = streams.mismatch
    print(f"  streams, detector_step and reference_step: {'the same decisions' if not mismatch else f'{len(mismatch)} minutes DIFFER'} "
          f"({len(np.flatnonzero(streams.first >= 0)):,} streams and {len(np.flatnonzero(domains.first >= 0)):,} domains paused), "
          f"largest CUSUM gap {gap:.1e} (relative)")
    out.update(
        providers=p, streams=args.domains * p, provider_minutes=args.provider_minutes, active_streams=f"{active:.3f}",
        minute_ms_median=f"{med:.1f}", minute_ms_p95=f"{p95:.1f}", reference_minute_ms_median=f"{ref_med:.1f}",
        reference_minute_ms_p95=f"{ref_p95:.1f}", stream_incidents_caught=f"{int(on_stream.sum())}/{len(blocked)}",
        domain_incidents_caught=f"{int(import_caught.sum())}/{len(imported)}", streams_ok=ok,
        mismatch=mismatch, gap=gap,
    )
    return out


SMOKE = {"domains": 2000, "minutes": 180, "naive_domains": 200, "provider_minutes": 120}
# The loop and numpy compute the same float64 CUSUMs in a different order: they agree to rounding, not bit for bit.
CUSUM_TOLERANCE = 1e-6
# detector_step against reference_step: an idle entity's forgetting is one power instead of a product a minute.
FAST_TOLERANCE = 1e-9


def args_parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help=f"seconds: {SMOKE} unless given")
    parser.add_argument("--domains", type=int, default=100_000)
    parser.add_argument("--minutes", type=int, default=1440)
    parser.add_argument("--naive-domains", type=int, default=2000, help="domains for the Python loop (extrapolated)")
    parser.add_argument("--providers", type=int, default=5, help="provider streams a domain for the per-stream part (0: skip it)")
    parser.add_argument("--provider-minutes", type=int, default=240, help="minutes of the per-stream part")
    parser.add_argument("--seed", type=int, default=1)
    if parser.parse_known_args()[0].smoke:
        parser.set_defaults(**SMOKE)  # explicit options still win
    return parser.parse_args()


def main() -> int:
    args = args_parse()
    print(f"detector bench: {args.domains:,} domains x {args.minutes:,} minutes (numpy {np.__version__})")
    twin, peer_s, _ = full_pass(args)
    ours_s = twin.fast_s
    if not ours_s:
        print("FAILED: no detector step was measured", file=sys.stderr)
        return 1
    ours_med, ours_p95 = ms(ours_s)
    ref_med, ref_p95 = ms(twin.reference_s)
    peer_med, peer_p95 = ms(peer_s)
    size, to_ms, from_ms = serialization(twin.fast)
    naive_s, gap = naive(args)
    naive_ms = naive_s * 1e3 * args.domains / args.naive_domains
    fast_gap = twin.cusum_gap()
    ok = "yes" if ours_p95 < BAR_MS else "no"
    print(f"  Sendplane full pass       {sum(ours_s):8.1f} s   one-minute update median {ours_med:7.1f} ms  p95 {ours_p95:7.1f} ms  "
          f"(bar {BAR_MS:.0f} ms: {ok})")
    print(f"  reference_step, same run  {sum(twin.reference_s):8.1f} s   one-minute update median {ref_med:7.1f} ms  "
          f"p95 {ref_p95:7.1f} ms  "
          f"({'the same decisions' if not twin.mismatch else f'{len(twin.mismatch)} minutes DIFFER'}; "
          f"largest CUSUM gap {fast_gap:.1e}, relative)")
    print(f"  static peer full pass     {sum(peer_s):8.1f} s   one-minute update median {peer_med:7.1f} ms  p95 {peer_p95:7.1f} ms")
    print(f"  Python loop, extrapolated from {args.naive_domains:,} domains x 20 minutes: {naive_ms:8.0f} ms a minute "
          f"({naive_ms / ours_med:.0f}x Sendplane's median; largest CUSUM gap to numpy {gap:.1e})")
    print(f"  state: {size:,} bytes ({size / args.domains:.0f} a domain); to_bytes {to_ms:.1f} ms, from_bytes {from_ms:.1f} ms; "
          f"beat cycle (from_bytes + step + to_bytes) ~{from_ms + ours_med + to_ms:.0f} ms")
    streams = per_stream(args) if args.providers > 0 else {}
    extra = " ".join(f"{k}={v}" for k, v in streams.items() if k not in ("mismatch", "gap"))
    print(f"RESULT domains={args.domains} minutes={args.minutes} pass_s={sum(ours_s):.1f} update_ms_median={ours_med:.1f} "
          f"update_ms_p95={ours_p95:.1f} reference_update_ms_median={ref_med:.1f} reference_update_ms_p95={ref_p95:.1f} "
          f"peer_update_ms_median={peer_med:.1f} naive_update_ms={naive_ms:.0f} "
          f"state_bytes={size} to_bytes_ms={to_ms:.1f} from_bytes_ms={from_ms:.1f} bar_ms={BAR_MS:.0f} ok={ok}"
          + (f" {extra}" if extra else ""))
    failed = []
    if not gap <= CUSUM_TOLERANCE:  # also catches NaN
        failed.append(f"the Python loop's CUSUMs differ from numpy's by {gap:.1e}: one of them changed")
    parts = [("single level", twin.mismatch, fast_gap), ("per stream", streams.get("mismatch", []), streams.get("gap", 0.0))]
    for part, mismatch, worst in parts:
        if mismatch:
            failed.append(f"{part}: detector_step and reference_step decided differently, {mismatch[0]}")
        if not worst <= FAST_TOLERANCE:
            failed.append(f"{part}: detector_step's CUSUMs differ from reference_step's by {worst:.1e} (relative)")
    for message in failed:
        print(f"FAILED: {message}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
