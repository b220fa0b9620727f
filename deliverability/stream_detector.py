"""One minute of the detector over provider streams and their domains: whose trouble it is (pure numpy).

Each minute the detector steps every stream (a sending domain's mail to one
provider group), then every domain on what its streams leave it:

- a stream that decides while others of its domain still send is *alone*:
  one provider's trouble, the stream's to pause; from that minute its counts
  leave its domain's input (as do those of streams excluded before: paused),
  so the domain is not paused for it a second time;
- two or more of a domain's streams deciding in one minute, or a stream that
  was the only one sending (no other of the domain's streams had mail in the
  last ``RECENT_MINUTES``: a small domain sends to one provider one minute and
  another the next), is the domain's mail shifting: *domain-wide*; the
  domain's state is marked decided, and the caller pauses the domain;
- the domain's own step, on its remaining sum, decides as before.

``services/detection.py`` runs this over the database's counters and acts on
the result; ``ops/bench/detector`` runs it over generated populations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from deliverability.detector import Decisions, DetectorState, detector_step

DOMAIN_WIDE = 2  # streams of one domain deciding in one minute that make it the domain's shift
RECENT_MINUTES = 60  # another stream with mail this recently: the domain still sends elsewhere
COUNTS = ("sent", "bounced_hard", "bounced_soft", "bounced_reputation", "complained")  # what a step reads


@dataclass(frozen=True)
class Minute:
    """What one minute decided: ``streams`` (every stream decision), ``alone`` (theirs to pause), ``domains`` (the
    domains' own decisions) and ``domain_wide`` (domain -> its streams that shifted together)."""

    streams: Decisions
    alone: list[int]
    domains: Decisions
    domain_wide: dict[int, list[int]]


class TwoLevel:
    """Streams and domains stepped together, minute after minute; ``owner[s]`` is stream s's domain index."""

    def __init__(self, streams: DetectorState, domains: DetectorState, owner: np.ndarray, excluded: np.ndarray) -> None:
        self.streams, self.domains, self.owner = streams, domains, owner
        self.excluded = excluded.copy()  # streams whose counts are not their domain's to judge
        self._by_domain = np.argsort(owner, kind="stable")  # each domain's streams: _by_domain[_starts[d]:_starts[d + 1]]
        self._starts = np.searchsorted(owner[self._by_domain], np.arange(len(domains) + 1))

    def step(self, stream_counts: Mapping[str, np.ndarray], domain_counts: Mapping[str, np.ndarray]) -> Minute:
        """One minute: counts per stream and per domain (their sums), shape (n,) each."""
        decided = _step(self.streams, stream_counts)
        fresh: dict[int, list[int]] = {}
        for index in decided.index.tolist():
            fresh.setdefault(int(self.owner[index]), []).append(index)
        alone_domains = self._alone(fresh)
        alone = [index for domain in sorted(alone_domains) for index in fresh[domain]]
        self.excluded[alone] = True  # one provider's trouble: it leaves the domain's input from now on
        domains = _step(self.domains, self._domain_feed(stream_counts, domain_counts))
        own = set(domains.index.tolist())
        wide = {domain: members for domain, members in fresh.items() if domain not in alone_domains and domain not in own}
        if wide:
            self.domains.paused[list(wide)] = True  # decided: no further decision on the domain until a resume
        return Minute(streams=decided, alone=alone, domains=domains, domain_wide=wide)

    def _alone(self, fresh: dict[int, list[int]]) -> set[int]:
        """Domains whose streams that decided now did so alone: one stream, with others of the domain still sending."""
        alone = set()
        for domain, members in fresh.items():
            if len(members) >= DOMAIN_WIDE:
                continue
            others = self._by_domain[self._starts[domain] : self._starts[domain + 1]]
            others = others[(others != members[0]) & ~self.excluded[others]]
            if len(others) and (self.streams.idle_minutes(others) <= RECENT_MINUTES).any():
                alone.add(domain)
        return alone

    def _domain_feed(self, streams: Mapping[str, np.ndarray], domains: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each domain's minute without its excluded streams'."""
        if not self.excluded.any():
            return {name: domains[name] for name in COUNTS}
        out = np.flatnonzero(self.excluded)
        owners, n = self.owner[out], len(self.domains)
        return {
            name: np.maximum(0, domains[name] - np.bincount(owners, weights=streams[name][out], minlength=n).astype(np.int64))
            for name in COUNTS
        }


def _step(state: DetectorState, counts: Mapping[str, np.ndarray]) -> Decisions:
    bounced = counts["bounced_hard"] + counts["bounced_soft"] + counts["bounced_reputation"]
    return detector_step(state, counts["sent"], bounced, counts["complained"], counts["bounced_reputation"])
