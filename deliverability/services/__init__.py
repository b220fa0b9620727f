"""Writes for deliverability: domains, token buckets and pause here; suppression, feedback
events and per-minute counters in their own modules, re-exported below."""

from __future__ import annotations

import time
from datetime import date

from django.db import IntegrityError, transaction
from django.utils import timezone

from deliverability.errors import DeliverabilityError
from deliverability.models import SendingDomain, TokenBucket


def domain_create(
    *, domain: str, default_sender: str, rate_per_second: float = 10.0, burst: int = 20, **options: object
) -> SendingDomain:
    if rate_per_second <= 0:
        raise DeliverabilityError("must be positive", field="rate_per_second")
    if burst < 1:
        raise DeliverabilityError("must be at least 1", field="burst")
    if default_sender.rpartition("@")[2].lower() != domain.lower():
        raise DeliverabilityError(f"must be an address at {domain}", field="default_sender")
    try:
        with transaction.atomic():
            return SendingDomain.objects.create(
                domain=domain.lower(), default_sender=default_sender, rate_per_second=rate_per_second, burst=burst, **options
            )
    except IntegrityError:
        raise DeliverabilityError(f"{domain} already exists", field="domain") from None


def domain_rate(domain: SendingDomain, *, today: date | None = None) -> float:
    """Messages per second now: the configured rate (ramping up after a resume), capped by the warm-up day's rate."""
    rate = domain.rate_per_second * ramp_factor(domain)
    schedule = domain.warmup_schedule or []
    if not schedule or domain.warmup_started_on is None:
        return rate
    day = ((today or timezone.now().date()) - domain.warmup_started_on).days
    return min(rate, float(schedule[min(max(day, 0), len(schedule) - 1)]))


def token_bucket_take(*, key: str, rate: float, burst: int, wanted: int, now: float | None = None) -> int:
    """Take up to ``wanted`` tokens; returns how many were granted (0 to wanted).

    The bucket holds at most ``burst`` tokens and refills at ``rate`` per
    second, so in any one-second window at most ``burst + rate`` are granted,
    across every worker on every machine: the row is locked while it changes.
    """
    if wanted <= 0:
        return 0
    now = time.time() if now is None else now
    TokenBucket.objects.get_or_create(key=key, defaults={"tokens": float(burst), "refilled_at": now})
    with transaction.atomic():
        bucket = TokenBucket.objects.select_for_update().get(key=key)
        elapsed = max(0.0, now - bucket.refilled_at)
        available = min(float(burst), bucket.tokens + elapsed * rate)
        granted = max(0, min(wanted, int(available + 1e-9)))  # 0.3 s x 10/s is 2.9999... in floats
        bucket.tokens = available - granted
        bucket.refilled_at = max(now, bucket.refilled_at)
        bucket.save(update_fields=["tokens", "refilled_at"])
    return granted


def token_bucket_peek(*, key: str, rate: float, burst: int, now: float | None = None) -> int:
    """Whole tokens the bucket would grant now (no lock, nothing taken): how much work to prepare."""
    now = time.time() if now is None else now
    bucket = TokenBucket.objects.filter(key=key).only("tokens", "refilled_at").first()
    if bucket is None:
        return burst
    return int(min(float(burst), bucket.tokens + max(0.0, now - bucket.refilled_at) * rate) + 1e-9)


def token_bucket_refund(*, key: str, burst: int, tokens: int) -> None:
    """Give back tokens taken for messages that were not sent after all."""
    if tokens <= 0:
        return
    with transaction.atomic():
        bucket = TokenBucket.objects.select_for_update().filter(key=key).first()
        if bucket is not None:
            bucket.tokens = min(float(burst), bucket.tokens + tokens)
            bucket.save(update_fields=["tokens"])


# Re-exported: callers import every deliverability write from ``deliverability.services``.
from deliverability.services.counters import counters_add  # noqa: E402
from deliverability.services.feedback import Feedback, event_record  # noqa: E402
from deliverability.services.pause import PauseOutcome, ResumeRefused, domain_pause, domain_resume, ramp_factor  # noqa: E402
from deliverability.services.suppression import (  # noqa: E402
    address_erase,
    address_hash,
    suppression_add,
    suppression_remove,
)

__all__ = [
    "DeliverabilityError", "Feedback", "address_erase", "address_hash", "counters_add", "domain_create", "domain_rate",
    "PauseOutcome", "ResumeRefused", "domain_pause", "domain_resume", "ramp_factor", "event_record", "suppression_add", "suppression_remove", "token_bucket_peek",
    "token_bucket_refund", "token_bucket_take",
]
