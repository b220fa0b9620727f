"""The token bucket, shared by every worker on every machine, and reservations on it.

A bucket is a ``TokenBucket`` row per key (``domain:<id>``, ``domain:<id>:<provider>``),
changed under its row lock (PostgreSQL; SQLite runs IMMEDIATE transactions): one
implementation for the embedded default and a fleet. It holds at most ``burst``
tokens and refills at ``rate`` per second, so the takes in any window of ``w``
seconds never exceed ``burst + rate x w``.

A reservation (a *hold*) sets tokens aside for one batch before it claims rows,
so no other batch can peek or reserve them, and the batch renders only what it
holds tokens for. Held tokens stay in the bucket until the batch spends them at
hand-over: the rate is counted when messages leave, not when they are prepared,
so it holds as measured at the receiving server; and the bucket keeps at least
what is held (refills only raise it, a take leaves what others hold), so a live
hold is always honoured. A hold is a row keyed ``<key>/hold/<random>`` whose
``tokens`` are the held count and whose ``refilled_at`` is its deadline (Unix
time): a worker killed with a hold loses nothing, its hold expires and the next
change of the bucket drops it. This module is the only place that does the
bucket's arithmetic.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet, Sum

from deliverability.models import TokenBucket

HOLD = "/hold/"  # a hold's key: the bucket's key, this, a random hex (no bucket key contains it)


@dataclass(frozen=True)
class Reservation:
    """Tokens one batch holds in one bucket: ``tokens`` of them, in the hold row ``hold`` ("" when none)."""

    key: str
    rate: float
    burst: int
    tokens: int
    hold: str = ""


def token_bucket_take(*, key: str, rate: float, burst: int, wanted: int, now: float | None = None) -> int:
    """Take up to ``wanted`` tokens no hold covers; returns how many were granted (0 to wanted)."""
    if wanted <= 0:
        return 0
    now = time.time() if now is None else now
    with transaction.atomic():
        bucket, free = _locked(key, rate, burst, now)
        return _spend(bucket, min(wanted, free))


def token_bucket_reserve(*, key: str, rate: float, burst: int, wanted: int, ttl: float, now: float | None = None) -> Reservation:
    """Hold up to ``wanted`` tokens for ``ttl`` seconds; nobody else can peek, reserve or take them meanwhile.

    Spend them with ``token_bucket_spend`` at hand-over; give back what turns
    out not to be needed with ``token_bucket_release``. A hold left unspent
    (its worker died) expires after ``ttl`` and its tokens are free again.
    """
    empty = Reservation(key, rate, burst, 0)
    if wanted <= 0:
        return empty
    now = time.time() if now is None else now
    with transaction.atomic():
        bucket, free = _locked(key, rate, burst, now)
        bucket.save(update_fields=["tokens", "refilled_at"])  # the refill so far; the held tokens stay in it
        tokens = min(wanted, free)
        if tokens <= 0:
            return empty
        hold = f"{key}{HOLD}{uuid.uuid4().hex}"
        TokenBucket.objects.create(key=hold, tokens=float(tokens), refilled_at=now + ttl)
    return Reservation(key, rate, burst, tokens, hold)


def token_bucket_release(*, reservation: Reservation, keep: int = 0) -> Reservation:
    """Give back all but ``keep`` of the held tokens at once (none spent); returns what is still held.

    Lowering a hold only frees tokens, so it needs no bucket lock: a
    concurrent change reads the hold before or after, and either is safe.
    """
    keep = max(0, keep)
    if not reservation.hold or keep >= reservation.tokens:
        return reservation
    if keep:
        TokenBucket.objects.filter(key=reservation.hold).update(tokens=float(keep))
        return dataclasses.replace(reservation, tokens=keep)
    TokenBucket.objects.filter(key=reservation.hold).delete()
    return dataclasses.replace(reservation, tokens=0, hold="")


def token_bucket_spend(*, reservation: Reservation, tokens: int, now: float | None = None) -> int:
    """At hand-over: take ``tokens`` of those held, and end the hold (the rest goes back); returns how many were granted.

    A live hold grants them all. One that expired first (its batch outlived
    the deadline) grants only what nobody else holds now, like a plain take.
    """
    tokens = min(tokens, reservation.tokens)
    if not reservation.hold:
        return 0
    now = time.time() if now is None else now
    with transaction.atomic():
        bucket, free = _locked(reservation.key, reservation.rate, reservation.burst, now, ending=reservation.hold)
        return _spend(bucket, min(tokens, free))


def token_bucket_peek(*, key: str, rate: float, burst: int, now: float | None = None) -> int:
    """Whole tokens a take or a reservation would get now (no lock, nothing taken)."""
    now = time.time() if now is None else now
    bucket = TokenBucket.objects.filter(key=key).only("tokens", "refilled_at").first()
    if bucket is None:
        return burst
    _refill(bucket, rate, burst, now)
    return _free(bucket, _holds(key).filter(refilled_at__gt=now))


def token_bucket_refund(*, key: str, burst: int, tokens: int) -> None:
    """Give back tokens taken for messages that were not sent after all."""
    if tokens <= 0:
        return
    with transaction.atomic():
        bucket = TokenBucket.objects.select_for_update().filter(key=key).first()
        if bucket is not None:
            bucket.tokens = min(float(burst), bucket.tokens + tokens)
            bucket.save(update_fields=["tokens"])


# --- the arithmetic: one place -------------------------------------------------------------


def _locked(key: str, rate: float, burst: int, now: float, *, ending: str = "") -> tuple[TokenBucket, int]:
    """The bucket under its row lock, refilled to ``now``, and its whole tokens no live hold covers.

    Expired holds are dropped here (a dead worker's tokens come back), and so
    is the hold ``ending``, whose tokens its batch is about to spend.
    """
    TokenBucket.objects.get_or_create(key=key, defaults={"tokens": float(burst), "refilled_at": now})
    bucket = TokenBucket.objects.select_for_update().get(key=key)
    _refill(bucket, rate, burst, now)
    holds = _holds(key)
    holds.filter(refilled_at__lte=now).delete()
    if ending:
        holds.filter(key=ending).delete()
    return bucket, _free(bucket, holds)


def _refill(bucket: TokenBucket, rate: float, burst: int, now: float) -> None:
    """Tokens that flowed in since the last change, up to ``burst``; a clock running backwards adds none."""
    bucket.tokens = min(float(burst), bucket.tokens + max(0.0, now - bucket.refilled_at) * rate)
    bucket.refilled_at = max(now, bucket.refilled_at)


def _free(bucket: TokenBucket, holds: QuerySet[TokenBucket]) -> int:
    held = holds.aggregate(held=Sum("tokens"))["held"] or 0.0
    return max(0, int(bucket.tokens - held + 1e-9))  # 0.3 s x 10/s is 2.9999... in floats


def _spend(bucket: TokenBucket, tokens: int) -> int:
    bucket.tokens -= tokens
    bucket.save(update_fields=["tokens", "refilled_at"])
    return tokens


def _holds(key: str) -> QuerySet[TokenBucket]:
    return TokenBucket.objects.filter(key__startswith=f"{key}{HOLD}")
