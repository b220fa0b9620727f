"""One batch of one (sending domain, mailbox provider): tokens, claim, send, record.

Tokens come first: a worker claims only as many rows as the domain's bucket
(and the provider's, where set) granted, so nothing claimed waits on the rate.
When the bucket runs dry with rows still due, those rows get a ``not_before``
at the time the bucket will have refilled, and the sweeper wakes them then:
no sleeping, no broker ETA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from deliverability.models import SendingDomain
from deliverability.selectors import suppressed_among
from deliverability.services import domain_rate, token_bucket_refund, token_bucket_take
from dispatch.models import WAITING, CampaignStatus, Message, MessageStatus
from dispatch.services.delivery import Outcome, Transport, open_transport


@dataclass
class BatchResult:
    claimed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    more: bool = False  # every granted token found a row: more may be due, ask for another batch

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1


def batch_send(*, domain_id: int, provider: str, transport: Transport | None = None) -> BatchResult:
    """Send one batch; the task calls this again while ``more`` is true."""
    domain = SendingDomain.objects.get(pk=domain_id)
    limit = settings.SENDPLANE_DISPATCH["BATCH_SIZE"]
    buckets = _buckets(domain, provider)
    granted = _take(buckets, limit)
    claimed = message_claim(domain=domain, provider=provider, limit=granted) if granted else []
    _refund(buckets, granted - len(claimed))
    result = BatchResult(claimed=len(claimed))
    if granted < limit:
        _postpone_due(domain, provider, buckets, limit - granted)
    if claimed:
        _deliver(domain, claimed, transport or open_transport(), result)
    # The next batch takes the tokens that accrued while this one sent, so a chain of
    # batches runs at the domain's rate; only an empty bucket waits for the sweeper.
    result.more = 0 < len(claimed) == granted
    return result


def message_claim(*, domain: SendingDomain, provider: str, limit: int, now: datetime | None = None) -> list[Message]:
    """Mark up to ``limit`` due rows ``sending`` under a lease; none when the domain is paused.

    The domain row is read with a lock in the same transaction, so a pause
    either commits first (and this claim sees it) or waits for this claim.
    """
    now = now or timezone.now()
    lease = now + timedelta(seconds=settings.SENDPLANE_DISPATCH["LEASE_SECONDS"])
    with transaction.atomic():
        state = SendingDomain.objects.select_for_update(**_no_key()).only("paused").get(pk=domain.pk)
        if state.paused:
            return []
        due = (
            Message.objects.select_for_update(of=("self",), **_skip_locked())
            .filter(sending_domain=domain, provider=provider, status__in=WAITING, not_before__lte=now)
            .filter(campaign__status=CampaignStatus.RUNNING)
            .order_by("not_before", "id")
            .values_list("id", flat=True)[:limit]
        )
        ids = list(due)
        Message.objects.filter(id__in=ids).update(
            status=MessageStatus.SENDING, lease_expires_at=lease, attempts=F("attempts") + 1
        )
    return list(Message.objects.filter(id__in=ids).select_related("version", "sending_domain").order_by("id"))


def _deliver(domain: SendingDomain, messages: list[Message], transport: Transport, result: BatchResult) -> None:
    """Hand messages over one connection, re-reading pause and suppression every few messages."""
    every = settings.SENDPLANE_DISPATCH["RECHECK_EVERY"]
    outcomes: dict[int, Outcome] = {}
    transport.open()
    try:
        for start in range(0, len(messages), every):
            chunk = messages[start : start + every]
            if _paused(domain):
                break  # the rest is released below, untouched
            blocked = suppressed_among(addresses=[m.recipient for m in chunk], sending_domain=domain)
            for message in chunk:
                if message.recipient.lower() in blocked:
                    outcomes[message.pk] = Outcome(MessageStatus.SUPPRESSED, None, "suppressed before sending")
                else:
                    outcomes[message.pk] = transport.send(message, domain)
    finally:
        transport.close()
        messages_record(messages=messages, outcomes=outcomes, result=result)


def messages_record(*, messages: list[Message], outcomes: dict[int, Outcome], result: BatchResult) -> None:
    """Write the batch's statuses in bulk; rows without an outcome go back to the queue."""
    now = timezone.now()
    cfg = settings.SENDPLANE_DISPATCH
    changed = []
    for message in messages:
        outcome = outcomes.get(message.pk)
        if outcome is None:
            _release(message, now)
        else:
            _apply(message, outcome, now, cfg)
        result.add(message.status)
        changed.append(message)
    fields = ["status", "not_before", "lease_expires_at", "last_code", "last_reply", "sent_at", "attempts"]
    with transaction.atomic():
        # Only rows still ours: a row the sweeper already marked unknown stays unknown.
        ours = set(Message.objects.filter(id__in=[m.pk for m in changed], status=MessageStatus.SENDING).values_list("id", flat=True))
        Message.objects.bulk_update([m for m in changed if m.pk in ours], fields, batch_size=500)


def _apply(message: Message, outcome: Outcome, now: datetime, cfg: dict) -> None:
    message.last_code, message.last_reply, message.lease_expires_at = outcome.code, outcome.reply, None
    message.status = outcome.status
    if outcome.status == MessageStatus.SENT:
        message.sent_at = now
    elif outcome.status == MessageStatus.DEFERRED:
        if message.attempts >= cfg["MAX_ATTEMPTS"]:
            message.status = MessageStatus.FAILED
            message.last_reply = f"gave up after {message.attempts} attempts: {outcome.reply}"[:1000]
        else:
            message.not_before = now + timedelta(seconds=cfg["RETRY_BASE_SECONDS"] * 2 ** (message.attempts - 1))


def _release(message: Message, now: datetime) -> None:
    message.status = MessageStatus.QUEUED
    message.lease_expires_at = None
    message.attempts = max(0, message.attempts - 1)  # never handed over: not an attempt


def _paused(domain: SendingDomain) -> bool:
    return SendingDomain.objects.filter(pk=domain.pk, paused=True).exists()


# --- token buckets ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Bucket:
    key: str
    rate: float
    burst: int


def _buckets(domain: SendingDomain, provider: str) -> list[_Bucket]:
    buckets = [_Bucket(f"domain:{domain.pk}", domain_rate(domain), domain.burst)]
    provider_rate = (domain.provider_rates or {}).get(provider) if provider else None
    if provider_rate:
        buckets.append(_Bucket(f"domain:{domain.pk}:{provider}", float(provider_rate), max(1, min(domain.burst, math.ceil(provider_rate)))))
    return buckets


def _take(buckets: list[_Bucket], wanted: int) -> int:
    """Take from every bucket; the smallest grant wins and the others get the difference back."""
    grants = []
    for bucket in buckets:
        grants.append(token_bucket_take(key=bucket.key, rate=bucket.rate, burst=bucket.burst, wanted=wanted))
        wanted = min(wanted, grants[-1])
    granted = min(grants)
    for bucket, got in zip(buckets, grants):
        token_bucket_refund(key=bucket.key, burst=bucket.burst, tokens=got - granted)
    return granted


def _refund(buckets: list[_Bucket], tokens: int) -> None:
    for bucket in buckets:
        token_bucket_refund(key=bucket.key, burst=bucket.burst, tokens=tokens)


def _postpone_due(domain: SendingDomain, provider: str, buckets: list[_Bucket], short_by: int) -> None:
    """Rows that were due but got no token wait in the database until the bucket refills."""
    rate = min(bucket.rate for bucket in buckets)
    ready_at = timezone.now() + timedelta(seconds=max(1, short_by) / rate)
    due = Message.objects.filter(
        sending_domain=domain, provider=provider, status__in=WAITING, not_before__lt=ready_at
    ).order_by("not_before", "id").values_list("id", flat=True)[:short_by]
    Message.objects.filter(id__in=list(due), status__in=WAITING).update(not_before=ready_at)


def _skip_locked() -> dict[str, bool]:
    return {"skip_locked": True} if connection.features.has_select_for_update_skip_locked else {}


def _no_key() -> dict[str, bool]:
    return {"no_key": True} if connection.features.has_select_for_no_key_update else {}
