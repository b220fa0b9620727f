"""Synthetic per-minute counters for the anomaly detector: many domains, known incidents, a static peer.

``generate(seed)`` draws ``domains`` sending domains over ``minutes`` minutes
(twelve hours by default) with a seedable numpy RNG:

- volumes log-uniform from 1 to 3,000 messages a minute, and ~15% tiny domains
  (0.05-1 a minute, Poisson: most minutes send nothing), each on a daily cycle
  (amplitude 30-80%, random phase);
- bounce baselines log-uniform 0.3%-4% (2-10% of them reputation-class),
  complaints 0.01%-0.1%; every minute's rates carry lognormal noise (sigma 0.2)
  and a slow +-15% cycle, so bounces cluster the way real campaigns make them;
- healthy quirks: a fifth of the healthy domains burst x10 for 20 minutes;
- incidents on ~30% of the domains, onset at minute 120 or later (two hours
  of normal traffic first): ``list_import`` (bounces jump to 8-60%, volume
  x1-3), ``complaint`` (0.6-3%, a variant reported as spam), ``drift`` (the
  bounce rate ramps over 60-120 minutes to 3-6x baseline, at least +1.5
  points, then stays), ``blocklist`` (reputation bounces jump to 5-30%: the
  share of mail a blocking provider receives).

Every incident is detectable in principle: it is placed only where its
expected excess bad events after onset reach ``MIN_EXCESS_EVENTS`` (complaint
spikes need >= 10 messages a minute, drifts >= 20); otherwise the domain
stays healthy. A change nobody could see in the data is not an incident to
score a detector on.

``static_first_pause`` is the peer: Amazon SES-style static thresholds over a
trailing 60-minute window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("list_import", "complaint", "drift", "blocklist")
MIN_VOLUME = {"list_import": 1.0, "complaint": 10.0, "drift": 20.0, "blocklist": 2.0}  # messages a minute
MIN_EXCESS_EVENTS = 30.0
FIRST_ONSET = 120


@dataclass(frozen=True)
class Scenario:
    sent: np.ndarray  # (domains, minutes) int64
    bounced: np.ndarray  # all bounces, reputation-class included
    complained: np.ndarray
    reputation: np.ndarray
    onset: np.ndarray  # (domains,) first minute of the incident, -1 for a healthy domain
    kind: np.ndarray  # (domains,) "healthy" or one of KINDS

    @property
    def healthy(self) -> np.ndarray:
        return np.flatnonzero(self.onset < 0)

    @property
    def incidents(self) -> np.ndarray:
        return np.flatnonzero(self.onset >= 0)


@dataclass
class _Rates:
    volume: np.ndarray  # (domains, minutes) expected messages
    bounce: np.ndarray  # ordinary (non-reputation) bounce probability
    reputation: np.ndarray
    complaint: np.ndarray


def generate(seed: int, domains: int = 300, minutes: int = 720) -> Scenario:
    rng = np.random.default_rng(seed)
    rates, base = _healthy_rates(rng, domains, minutes)
    onset = np.full(domains, -1, dtype=np.int64)
    kind = np.full(domains, "healthy", dtype="<U11")
    for d in rng.permutation(domains)[: int(0.3 * domains)]:
        _place_incident(rng, rates, base, d, onset, kind)
    _bursts(rng, rates.volume, np.flatnonzero(onset < 0))
    return _draw(rng, rates, onset, kind)


def _healthy_rates(rng: np.random.Generator, domains: int, minutes: int) -> tuple[_Rates, np.ndarray]:
    t = np.arange(minutes)
    tiny = rng.random(domains) < 0.15
    mean = np.where(tiny, rng.uniform(0.05, 1.0, domains), np.exp(rng.uniform(np.log(1.0), np.log(3000.0), domains)))
    phase, amplitude = rng.uniform(0, 1440, domains), rng.uniform(0.3, 0.8, domains)
    volume = mean[:, None] * (1.0 + amplitude[:, None] * np.sin(2 * np.pi * (t + phase[:, None]) / 1440.0))
    bounce = np.exp(rng.uniform(np.log(0.003), np.log(0.04), domains))
    reputation_share = rng.uniform(0.02, 0.10, domains)
    complaint = np.exp(rng.uniform(np.log(0.0001), np.log(0.001), domains))
    cycle = 1.0 + 0.15 * np.sin(2 * np.pi * (t + rng.uniform(0, 1440, domains)[:, None]) / 1440.0)

    def noisy(rate: np.ndarray) -> np.ndarray:
        return rate[:, None] * cycle * rng.lognormal(-0.02, 0.2, (domains, minutes))

    rates = _Rates(volume, noisy(bounce * (1 - reputation_share)), noisy(bounce * reputation_share), noisy(complaint))
    return rates, mean


def _place_incident(
    rng: np.random.Generator, rates: _Rates, mean: np.ndarray, d: int, onset: np.ndarray, kind: np.ndarray
) -> None:
    eligible = [k for k in KINDS if mean[d] >= MIN_VOLUME[k]]
    if not eligible:
        return
    name = str(rng.choice(eligible))
    minutes = rates.volume.shape[1]
    start = int(rng.integers(FIRST_ONSET, minutes - 120))
    before = {field: getattr(rates, field)[d].copy() for field in ("volume", "bounce", "reputation", "complaint")}
    _INCIDENTS[name](rng, rates, d, start)
    excess = _excess_events(rates, before, d)
    cumulative_from = np.cumsum(excess[::-1])[::-1]  # expected excess bad events from each minute on
    while start > FIRST_ONSET and cumulative_from[start] < MIN_EXCESS_EVENTS:
        start = max(FIRST_ONSET, start - 60)  # too little evidence left: start it earlier
        for field, values in before.items():
            getattr(rates, field)[d] = values
        _INCIDENTS[name](rng, rates, d, start)
        excess = _excess_events(rates, before, d)
        cumulative_from = np.cumsum(excess[::-1])[::-1]
    if cumulative_from[start] < MIN_EXCESS_EVENTS:
        for field, values in before.items():
            getattr(rates, field)[d] = values  # not detectable by anyone: stays healthy
        return
    onset[d], kind[d] = start, name


def _excess_events(rates: _Rates, before: dict[str, np.ndarray], d: int) -> np.ndarray:
    now = rates.volume[d] * (rates.bounce[d] + rates.reputation[d] + rates.complaint[d])
    was = before["volume"] * (before["bounce"] + before["reputation"] + before["complaint"])
    return np.maximum(now - was, 0.0)


def _list_import(rng: np.random.Generator, rates: _Rates, d: int, start: int) -> None:
    rates.bounce[d, start:] = rng.uniform(0.08, 0.60)
    rates.volume[d, start:] *= rng.uniform(1.0, 3.0)


def _complaint(rng: np.random.Generator, rates: _Rates, d: int, start: int) -> None:
    rates.complaint[d, start:] = np.exp(rng.uniform(np.log(0.006), np.log(0.03)))


def _drift(rng: np.random.Generator, rates: _Rates, d: int, start: int) -> None:
    ramp = int(rng.integers(60, 121))
    base = rates.bounce[d, start:]
    target = np.maximum(base * rng.uniform(3.0, 6.0), base + 0.015)
    progress = np.minimum(np.arange(len(base)) / ramp, 1.0)
    rates.bounce[d, start:] = base + (target - base) * progress


def _blocklist(rng: np.random.Generator, rates: _Rates, d: int, start: int) -> None:
    rates.reputation[d, start:] = rng.uniform(0.05, 0.30)


_INCIDENTS = {"list_import": _list_import, "complaint": _complaint, "drift": _drift, "blocklist": _blocklist}


def _bursts(rng: np.random.Generator, volume: np.ndarray, healthy: np.ndarray) -> None:
    for d in healthy[rng.random(len(healthy)) < 0.2]:
        start = int(rng.integers(0, volume.shape[1] - 20))
        volume[d, start : start + 20] *= 10.0


def _draw(rng: np.random.Generator, rates: _Rates, onset: np.ndarray, kind: np.ndarray) -> Scenario:
    sent = rng.poisson(rates.volume)
    ordinary = rng.binomial(sent, np.clip(rates.bounce, 0.0, 1.0))
    reputation = rng.binomial(sent - ordinary, np.clip(rates.reputation / (1.0 - rates.bounce), 0.0, 1.0))
    bounced = ordinary + reputation
    complained = rng.binomial(sent - bounced, np.clip(rates.complaint, 0.0, 1.0))
    return Scenario(sent, bounced, complained, reputation, onset, kind)


def static_first_pause(
    sent: np.ndarray,
    bounced: np.ndarray,
    complained: np.ndarray,
    start: np.ndarray | None = None,
    *,
    window: int = 60,
    min_sends: int = 100,
    bounce_rate: float = 0.05,
    complaint_rate: float = 0.003,
) -> np.ndarray:
    """The peer: first minute >= start[d] whose trailing ``window`` minutes hold >= ``min_sends``
    sends and a bounce rate >= 5% or a complaint rate >= 0.3%; -1 when never. Rolling sums, vectorized."""

    def trailing(counts: np.ndarray) -> np.ndarray:
        total = np.concatenate([np.zeros((counts.shape[0], 1)), np.cumsum(counts, axis=1)], axis=1)
        lagged = np.concatenate([np.zeros((counts.shape[0], window)), total[:, :-window]], axis=1)
        return (total - lagged)[:, 1:]

    sends, bounces, complaints = trailing(sent), trailing(bounced), trailing(complained)
    fires = (sends >= min_sends) & ((bounces >= bounce_rate * sends) | (complaints >= complaint_rate * sends))
    if start is not None:
        fires &= np.arange(sent.shape[1])[None, :] >= np.asarray(start)[:, None]
    return np.where(fires.any(axis=1), fires.argmax(axis=1), -1)
