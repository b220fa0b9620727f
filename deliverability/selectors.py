"""Reads for deliverability."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.db.models import Q, Sum

from controlplane.addresses import address_hash
from deliverability.models import ConsentRecord, DomainMinute, PauseEvidence, SendingDomain, Suppression

_CHUNK = 1000


def suppressed_among(*, addresses: Iterable[str], sending_domain: SendingDomain) -> set[str]:
    """Which of these addresses (returned as given) are suppressed for this domain or globally, in any form."""
    by_hash: dict[str, list[str]] = {}
    for address in addresses:
        by_hash.setdefault(address_hash(address), []).append(address)
    hashes = list(by_hash)
    scope = Q(sending_domain__isnull=True) | Q(sending_domain=sending_domain)
    found: set[str] = set()
    for start in range(0, len(hashes), _CHUNK):
        chunk = hashes[start : start + _CHUNK]
        rows = Suppression.objects.filter(scope, address_hash__in=chunk).values_list("address_hash", flat=True)
        for digest in rows:
            found.update(by_hash[digest])
    return found


def consent_refusals(*, addresses: Iterable[str], purpose: str, required: bool) -> dict[str, str]:
    """Which of these addresses (as given) a campaign of marketing ``purpose`` must not mail, with why.

    A withdrawn consent always refuses (it is an unsubscribe from the purpose);
    with ``required`` (the sending domain's policy), so does having none.
    """
    by_hash: dict[str, list[str]] = {}
    for address in addresses:
        by_hash.setdefault(address_hash(address), []).append(address)
    hashes = list(by_hash)
    state: dict[str, bool] = {}  # hash -> withdrawn
    for start in range(0, len(hashes), _CHUNK):
        rows = ConsentRecord.objects.filter(purpose=purpose, address_hash__in=hashes[start : start + _CHUNK])
        state.update((digest, withdrawn is not None) for digest, withdrawn in rows.values_list("address_hash", "withdrawn_at"))
    refused: dict[str, str] = {}
    for digest, spellings in by_hash.items():
        withdrawn = state.get(digest)
        reason = (
            f"consent for {purpose} withdrawn" if withdrawn
            else f"no consent for {purpose} (the sending domain requires it)" if withdrawn is None and required
            else None
        )
        if reason:
            refused.update(dict.fromkeys(spellings, reason))
    return refused


def address_suppressed(*, address: str, sending_domain: SendingDomain | None = None) -> bool:
    """Whether mail to ``address`` from this domain (or, with no domain, from every domain) is suppressed."""
    scope = Q(sending_domain__isnull=True) | (Q(sending_domain=sending_domain) if sending_domain else Q(pk__in=[]))
    return Suppression.objects.filter(scope, address_hash=address_hash(address)).exists()


def suppression_for(*, address: str) -> list[Suppression]:
    """Every suppression of one address (all domains), newest first."""
    return list(Suppression.objects.filter(address_hash=address_hash(address)).select_related("sending_domain", "event"))


@dataclass(frozen=True)
class MinuteSeries:
    """Counters as arrays: ``counts[name][d, m]`` is domain ``domain_ids[d]`` in minute ``minutes[m]``."""

    domain_ids: list[int]
    minutes: np.ndarray  # datetime64[m], contiguous from start to end (exclusive)
    counts: dict[str, np.ndarray]  # int64, shape (len(domain_ids), len(minutes))


@dataclass(frozen=True)
class StreamSeries:
    """Counters per provider stream: ``counts[name][s, m]`` is stream ``streams[s]`` (domain id, provider) in ``minutes[m]``."""

    streams: list[tuple[int, str]]  # sorted; only the streams with a row in the range
    minutes: np.ndarray
    counts: dict[str, np.ndarray]

    def aligned(self, streams: list[tuple[int, str]]) -> dict[str, np.ndarray]:
        """The counters with one row per stream of ``streams``, in its order (zeros for a stream without rows)."""
        position = {key: index for index, key in enumerate(streams)}
        kept = [s for s, key in enumerate(self.streams) if key in position]  # a stream outside ``streams`` is left out
        rows = np.array([position[self.streams[s]] for s in kept], dtype=np.int64)
        out = {name: np.zeros((len(streams), len(self.minutes)), dtype=np.int64) for name in self.counts}
        for name, values in self.counts.items():
            out[name][rows] = values[kept]
        return out

    def by_domain(self, domain_ids: list[int]) -> MinuteSeries:
        """Every domain's streams summed: the domain's own counters (a domain outside ``domain_ids`` is left out)."""
        row_of = {domain_id: index for index, domain_id in enumerate(domain_ids)}
        keep = [s for s, (domain_id, _) in enumerate(self.streams) if domain_id in row_of]
        target = np.array([row_of[self.streams[s][0]] for s in keep], dtype=np.int64)
        counts = {name: np.zeros((len(domain_ids), len(self.minutes)), dtype=np.int64) for name in self.counts}
        for name, values in self.counts.items():
            np.add.at(counts[name], target, values[keep])
        return MinuteSeries(domain_ids=domain_ids, minutes=self.minutes, counts=counts)


def domain_minute_series(*, start: datetime, end: datetime, domain_ids: list[int] | None = None) -> MinuteSeries:
    """Every counter of every domain (or the given ones) per minute in [start, end), both rounded up to a minute.

    Rounding up puts the minute ``end`` falls in on the axis: a chart asked for
    "the last hour, up to now" shows the current minute's counters (the rows
    are read over exactly the axis, never one past it) and drops the oldest,
    partly covered minute, so the axis keeps its length. Minute-aligned bounds,
    as the detector and the cockpit pass, are unchanged.
    One query, then one vectorized scatter per counter: the detector reads all
    domains at once without a Python loop over minutes.
    """
    if domain_ids is None:
        domain_ids = list(SendingDomain.objects.order_by("id").values_list("id", flat=True))
    return stream_minute_series(start=start, end=end, domain_ids=domain_ids).by_domain(domain_ids)


def stream_minute_series(*, start: datetime, end: datetime, domain_ids: list[int] | None = None) -> StreamSeries:
    """Every counter of every provider stream (of the given domains) with a row in [start, end), rounded as above."""
    first, last = _minute_ceiling(start), _minute_ceiling(end)
    minutes = np.arange(first, last, dtype="datetime64[m]")
    since, until = (m.astype("datetime64[s]").astype(datetime).replace(tzinfo=UTC) for m in (first, last))
    rows = DomainMinute.objects.filter(minute__gte=since, minute__lt=until)
    if domain_ids is not None:
        rows = rows.filter(sending_domain_id__in=domain_ids)
    values = list(rows.values_list("sending_domain_id", "provider", "minute", *DomainMinute.COUNTS))
    streams = sorted({(r[0], r[1]) for r in values})
    counts = {name: np.zeros((len(streams), len(minutes)), dtype=np.int64) for name in DomainMinute.COUNTS}
    if values:
        row_of = {key: index for index, key in enumerate(streams)}
        table = np.array([(row_of[(r[0], r[1])], _minute_index(r[2], first), *r[3:]) for r in values], dtype=np.int64)
        for offset, name in enumerate(DomainMinute.COUNTS, start=2):
            counts[name][table[:, 0], table[:, 1]] = table[:, offset]
    return StreamSeries(streams=streams, minutes=minutes, counts=counts)


def _minute_ceiling(moment: datetime) -> np.datetime64:
    exact = np.datetime64(_naive_utc(moment), "us")
    floor = exact.astype("datetime64[m]")
    return floor if floor == exact else floor + np.timedelta64(1, "m")


def _minute_index(moment: datetime, first: np.datetime64) -> int:
    return int((np.datetime64(_naive_utc(moment), "m") - first).astype(int))


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


class _Rates:
    """Bounce and complaint rates of counters that have ``sent``, ``bounced`` and ``complained``."""

    sent: int
    bounced: int
    complained: int

    @property
    def bounce_rate(self) -> float | None:
        return self.bounced / self.sent if self.sent else None

    @property
    def complaint_rate(self) -> float | None:
        return self.complained / self.sent if self.sent else None


@dataclass(frozen=True)
class ReputationPoint(_Rates):
    start: datetime
    sent: int
    delivered: int
    bounced: int
    bounced_hard: int
    bounced_reputation: int
    complained: int



def domain_reputation_history(
    *, domain: SendingDomain, start: datetime, end: datetime, step_minutes: int = 5, provider: str | None = None
) -> list[ReputationPoint]:
    """The domain's counters (or one provider stream's: ``provider``, "" for every other receiver) summed per
    ``step_minutes`` over [start, end) rounded up to minutes (the minute ``end`` is in included): what the admin
    chart and API draw."""
    streams = stream_minute_series(start=start, end=end, domain_ids=[domain.pk])
    if provider is None:
        series = streams.by_domain([domain.pk])
    else:
        counts = {name: values[:1] for name, values in streams.aligned([(domain.pk, provider)]).items()}
        series = MinuteSeries(domain_ids=[domain.pk], minutes=streams.minutes, counts=counts)
    return reputation_points(series, step_minutes=step_minutes)[0]


def reputation_points(series: MinuteSeries, *, step_minutes: int) -> list[list[ReputationPoint]]:
    """Every domain of the series summed per step, with one vectorized reshape (the cockpit draws them all)."""
    minutes = len(series.minutes)
    if not minutes:
        return [[] for _ in series.domain_ids]
    buckets = -(-minutes // step_minutes)
    pad = ((0, 0), (0, buckets * step_minutes - minutes))
    c = {name: np.pad(a, pad).reshape(len(a), buckets, step_minutes).sum(axis=2) for name, a in series.counts.items()}
    bounced = c["bounced_hard"] + c["bounced_soft"] + c["bounced_reputation"]
    first = series.minutes[0].astype("datetime64[s]").astype(datetime).replace(tzinfo=UTC)
    return [
        [
            ReputationPoint(
                start=first + timedelta(minutes=b * step_minutes),
                sent=int(c["sent"][d, b]), delivered=int(c["delivered"][d, b]), bounced=int(bounced[d, b]),
                bounced_hard=int(c["bounced_hard"][d, b]), bounced_reputation=int(c["bounced_reputation"][d, b]),
                complained=int(c["complained"][d, b]),
            )
            for b in range(buckets)
        ]
        for d in range(len(series.domain_ids))
    ]


def domain_pause_evidence(*, domain: SendingDomain, since: datetime | None = None) -> list[PauseEvidence]:
    rows = PauseEvidence.objects.filter(sending_domain=domain)
    return list(rows.filter(created_at__gte=since) if since else rows)


@dataclass(frozen=True)
class StreamHealth(_Rates):
    """One provider stream's counters over a recent window, as the on-call engineer reads them."""

    sent: int
    bounced: int
    reputation: int
    complained: int



def stream_health(*, domain: SendingDomain, since: datetime) -> dict[str, StreamHealth]:
    """Each of the domain's streams (provider group, "" for every other) summed since ``since``: one grouped query."""
    rows = (
        DomainMinute.objects.filter(sending_domain=domain, minute__gte=since)
        .values("provider")
        .annotate(
            sent=Sum("sent"), hard=Sum("bounced_hard"), soft=Sum("bounced_soft"), reputation=Sum("bounced_reputation"),
            complained=Sum("complained"),
        )
    )
    return {
        r["provider"]: StreamHealth(
            sent=r["sent"] or 0, bounced=(r["hard"] or 0) + (r["soft"] or 0) + (r["reputation"] or 0),
            reputation=r["reputation"] or 0, complained=r["complained"] or 0,
        )
        for r in rows
    }
