"""One batch of one sending domain: reserve tokens, claim, prepare, spend the tokens, hand over, record.

A worker reserves up to a batch of the domain's tokens (no other batch can
get them) and claims at most that many due rows (a paused domain yields
none); tokens it found no row for go back at once. Where a mailbox provider
has its own rate, the claimed rows of that provider take from its bucket;
the rest are released with a ``not_before`` at its refill time. Then every
message is rendered, serialized and signed, the connection opened, and only
then are the held tokens spent and the messages handed over at once: the
time from token to handover is short and even, so the rate holds as
measured at the receiving server, and no batch renders a message another
batch will get the token for.

A batch that got all it wanted asks for the next one at once (a hint, not a
schedule), so a chain of batches runs at the domain's rate; an empty bucket
stops the chain and the sweeper wakes the domain again. No sleeping, no
broker ETA.

Each chunk of ``RECHECK_EVERY`` messages is handed over under the hand-over
guard (``deliverability.services.handover``: pauses are honoured the moment
their call returns; suppressions within one chunk), after renewing the
batch's lease, so a slow receiver never turns a live batch into ``unknown``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Case, F, QuerySet, Value, When
from django.utils import timezone

from controlplane import metrics
from controlplane.deferred_adds import deferred_adds
from controlplane.locking import lock_no_key, lock_skip_locked
from deliverability.models import EventType, ProviderStream, SendingDomain
from deliverability.selectors import suppressed_among
from deliverability.services import (
    Reservation,
    counters_add_streams,
    domain_pause,
    domain_rate,
    token_bucket_release,
    token_bucket_reserve,
    token_bucket_spend,
    token_bucket_take,
)
from deliverability.services.batch_watch import batch_watch
from deliverability.services.handover import Scope, hand_over_guard, sending_paused
from deliverability.services.streams import Heard, stream_hear
from deliverability.services.warmup import daily_remaining
from dispatch.models import WAITING, Campaign, CampaignStatus, Message, MessageAttempt, MessageStatus, Trigger
from dispatch.services.delivery import SENT as SENT_OUTCOME
from dispatch.services.delivery import DomainFault, Outcome, Prepared, Transport, log_unexpected, one_line, open_transport
from dispatch.services.feedback import reply_learn
from dispatch.services.hints import publish_send_batches
from dispatch.services.results import results_delivered

if TYPE_CHECKING:
    from controlplane.settings import DispatchSettings

logger = logging.getLogger("sendplane.worker")
FAULT_ACTOR = "dispatch"  # who paused a domain for a domain-wide fault (its paused_by, the audit entry's actor)
# Per-message lines at these statuses are WARNING (with the address: operators act on them); the rest DEBUG.
_WARNED = frozenset({MessageStatus.FAILED, MessageStatus.DEFERRED, MessageStatus.UNKNOWN})


@dataclass
class BatchResult:
    claimed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    more: bool = False  # every granted token found a row: more may be due, ask for another batch
    correlation_ids: set[str] = field(default_factory=set)  # of the triggers whose messages were handed over
    fault: str = ""  # a domain-wide fault found by this batch: the domain was paused with it as the reason
    bounced: int = 0  # refusals recorded as bounces: the domain's bounces are judged at once (batch_watch)
    streams: dict[str, ProviderStream] | None = None  # the domain's provider streams as pacing read them: recording reuses them

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1


def batch_send(*, domain_id: int, transport: Transport | None = None) -> BatchResult:
    """Send one batch for the domain; the task asks for another while ``more`` is true.

    Whatever happens, the tokens still held at the end go back to the bucket
    (after a hand-over none are: spending ends the hold).
    """
    domain = SendingDomain.objects.get(pk=domain_id)
    reservation = _reserve(domain)
    if not reservation.tokens:
        return BatchResult()  # an empty bucket: the sweeper wakes the domain on its next beat
    try:
        claimed = message_claim(domain=domain, limit=reservation.tokens)
        held = token_bucket_release(reservation=reservation, keep=len(claimed))  # unclaimed tokens go back before any render
        result = BatchResult(claimed=len(claimed))
        _fan_out(domain, claimed=len(claimed))
        granted = _send_claimed(domain, held, claimed, transport, result)
    finally:
        token_bucket_release(reservation=reservation)
    if result.bounced:  # the minute pass waits for the minute to end; a list import would send hundreds meanwhile
        batch_watch(domain)
    # Rows were there for every reserved token and tokens still flowed: keep the chain going.
    result.more = bool(claimed) and len(claimed) == reservation.tokens and granted > 0
    metrics.batch_recorded(domain=domain.domain, counts=result.counts)
    _log_batch(domain, result)
    return result


def _reserve(domain: SendingDomain) -> Reservation:
    """Hold up to a batch's tokens of the domain's bucket for ``HOLD_SECONDS`` (a dead worker's come back after it).

    A warming domain's step may cap the day's volume: no more than what is left of it (none: the bucket is not asked).
    """
    cfg = settings.SENDPLANE_DISPATCH
    left = daily_remaining(domain)
    wanted = cfg["BATCH_SIZE"] if left is None else min(cfg["BATCH_SIZE"], left)
    return token_bucket_reserve(
        key=f"domain:{domain.pk}", rate=domain_rate(domain), burst=domain.burst, wanted=wanted, ttl=cfg["HOLD_SECONDS"]
    )


def _fan_out(domain: SendingDomain, *, claimed: int) -> None:
    """A hot domain spreads over the fleet: a batch that got a whole batch asks for one more now, while it renders and sends.

    Only when another whole batch is due. The next batch reserves its own
    tokens (it cannot see this one's), so no two batches render for the same
    tokens: a domain held to its rate fans out only as far as its bucket
    grants whole batches, and a batch that gets none claims nothing. Each
    batch that spawns one is itself followed by one (``more``), so the
    chains grow with the backlog and end with it.
    """
    batch = settings.SENDPLANE_DISPATCH["BATCH_SIZE"]
    if claimed < batch:
        return
    if _due(domain, timezone.now()).order_by()[batch - 1 : batch].exists():  # the message_claimable index answers it
        publish_send_batches([domain.pk])


def _due(domain: SendingDomain, now: datetime) -> QuerySet[Message]:
    """The domain's rows a claim may take now: waiting, due, of a running campaign."""
    return Message.objects.filter(sending_domain=domain, status__in=WAITING, not_before__lte=now, campaign__status=CampaignStatus.RUNNING)


def message_claim(*, domain: SendingDomain, limit: int, now: datetime | None = None) -> list[Message]:
    """Mark up to ``limit`` due rows ``sending`` under a lease; none when the domain or all sending is paused.

    The domain row and the global switch are read with a lock in the same
    transaction, so a pause either commits first (and this claim sees it) or
    waits for this claim. Only rows of running campaigns are claimed.
    """
    now = now or timezone.now()
    lease = now + timedelta(seconds=settings.SENDPLANE_DISPATCH["LEASE_SECONDS"])
    with transaction.atomic():
        state = SendingDomain.objects.select_for_update(**lock_no_key()).only("paused").get(pk=domain.pk)
        if state.paused or sending_paused(lock=True):
            return []
        due = (
            _due(domain, now)
            .select_for_update(of=("self",), **lock_skip_locked())
            .order_by("not_before", "id")
            .values_list("id", flat=True)[:limit]
        )
        ids = list(due)
        Message.objects.filter(id__in=ids).update(
            status=MessageStatus.SENDING, lease_expires_at=lease, attempts=F("attempts") + 1
        )
    # The campaign (a small row): its purpose decides the header lint. Not the version: a batch's rows share one or
    # two, and a 50 KB version row fetched per message cost more than the render; the compiled-version cache needs
    # only version_id (render_message loads a version it has not seen).
    return list(Message.objects.filter(id__in=ids).select_related("sending_domain", "campaign").order_by("id"))


def _send_claimed(
    domain: SendingDomain, reservation: Reservation, claimed: list[Message], transport: Transport | None, result: BatchResult
) -> int:
    """Pace, then deliver; returns the tokens granted. No error leaves a claimed row ``sending`` until its lease expires.

    Until ``_deliver`` takes the rows (its own ``finally`` records or releases
    each), nothing was handed over: on any error every claimed row still
    ``sending`` goes back to the queue, its attempt not counted.
    """
    try:
        sendable = _pace_providers(domain, claimed, result)
        reservation = token_bucket_release(reservation=reservation, keep=len(sendable))  # rows a provider holds back need none
        chosen = (transport or open_transport()) if sendable else None
    except BaseException:
        messages_release(claimed, not_before=timezone.now())
        raise
    return _deliver(domain, reservation, sendable, chosen, result) if chosen else len(claimed)


def _pace_providers(domain: SendingDomain, claimed: list[Message], result: BatchResult) -> list[Message]:
    """Apply per-provider buckets; rows over a provider's rate wait in the database for its refill."""
    rates = domain.provider_rates or {}
    by_provider: dict[str, list[Message]] = defaultdict(list)
    for message in claimed:
        by_provider[message.provider].append(message)
    streams = result.streams = {s.provider: s for s in ProviderStream.objects.filter(sending_domain=domain)}
    sendable: list[Message] = []
    for provider, rows in by_provider.items():
        stream = streams.get(provider)
        if stream is not None and stream.paused:  # the provider refuses us: its mail waits, the others' goes
            messages_release(rows, not_before=timezone.now() + STREAM_PAUSED_RECHECK)
            for _ in rows:
                result.add(MessageStatus.QUEUED)
            continue
        rate = float(rates.get(provider) or 0) if provider else 0.0
        if stream is not None and stream.rate_factor < 1.0:  # backed off: its share of its own rate, else the domain's
            rate = (rate or domain.rate_per_second) * stream.rate_factor
        if rate <= 0:
            sendable += rows
            continue
        burst = max(1, min(domain.burst, math.ceil(rate)))
        got = token_bucket_take(key=f"domain:{domain.pk}:{provider}", rate=rate, burst=burst, wanted=len(rows))
        sendable += rows[:got]
        later = rows[got:]
        if later:
            ready_at = timezone.now() + timedelta(seconds=len(later) / rate)
            messages_release(later, not_before=ready_at)
            for _ in later:
                result.add(MessageStatus.QUEUED)
    return sendable


# How soon mail held by a paused stream is looked at again (a resume wakes the domain at once).
STREAM_PAUSED_RECHECK = timedelta(seconds=60)


def _deliver(domain: SendingDomain, reservation: Reservation, messages: list[Message], transport: Transport, result: BatchResult) -> int:
    """Prepare every message, then spend the held tokens and hand over at once; returns the tokens granted.

    The tokens were reserved before the claim (no other batch could get
    them) but are spent only now: the time from token to handover stays short
    and even, so the domain's rate holds as measured at the receiving server.
    The bucket refuses some only if the hold expired first (a batch that
    outlived its lease). Pause and suppression are re-read every RECHECK_EVERY messages.

    Whatever happens, the ``finally`` records every outcome and sends the rows
    not handed over back to the queue (attempt not counted), so none is left
    ``sending`` to expire into ``unknown``. A domain-wide fault (the DKIM key)
    pauses the domain before that release, so no other worker claims them.
    """
    outcomes: dict[int, Outcome] = {}
    granted = 0
    release_at = timezone.now()
    try:
        transport.check(domain)  # once per batch, before rendering: a broken key wastes no work
        ready = _prepare(domain, messages, transport, outcomes)
        release_at = timezone.now()
        transport.open()
        granted = token_bucket_spend(reservation=reservation, tokens=len(ready))
        if granted < len(ready):
            pushback = (len(ready) - granted) / reservation.rate
            release_at += timedelta(seconds=pushback)
            metrics.tokens_denied(domain=domain.domain, count=len(ready) - granted, pushback_seconds=pushback)
        _hand_over(domain, ready[:granted], transport, outcomes, [m.pk for m in messages])
    except DomainFault as fault:
        _domain_fault(domain, fault, result)
    finally:
        transport.close()
        messages_record(messages=messages, outcomes=outcomes, result=result, release_at=release_at)
    return granted


def _prepare(domain: SendingDomain, messages: list[Message], transport: Transport, outcomes: dict[int, Outcome]) -> list[Prepared]:
    """Render, serialize and sign each message; one that cannot be prepared ends with its reason and costs no token.

    Only what concerns more than the message stops the loop: a DomainFault, or the database.
    """
    ready: list[Prepared] = []
    for message in messages:
        try:
            prepared = transport.prepare(message, domain)
        except (DomainFault, DatabaseError):
            raise
        except Exception as exc:  # noqa: BLE001 - one message's surprise ends that message, never the batch
            log_unexpected(message, "preparing")
            prepared = Outcome(MessageStatus.FAILED, None, f"prepare: {one_line(exc)}"[:1000])
        if isinstance(prepared, Prepared):
            ready.append(prepared)
        else:
            outcomes[message.pk] = prepared
    return ready


def _domain_fault(domain: SendingDomain, fault: DomainFault, result: BatchResult) -> None:
    """Pause the domain with the fault as its reason (audited, shown with its state); the batch's rows go back untouched."""
    result.fault = str(fault)
    outcome = domain_pause(domain=domain, reason=result.fault, actor=FAULT_ACTOR)
    fields = {"domain": domain.domain, "reason": result.fault, "changed": outcome.changed}
    logger.error("domain %s paused: %s", domain.domain, result.fault, extra=fields)


def _hand_over(
    domain: SendingDomain, ready: list[Prepared], transport: Transport, outcomes: dict[int, Outcome], batch_ids: list[int]
) -> None:
    """Hand ``ready`` over chunk by chunk, each under the hand-over guard, renewing the batch's lease before each."""
    every = settings.SENDPLANE_DISPATCH["RECHECK_EVERY"]
    for start in range(0, len(ready), every):
        chunk = ready[start : start + every]
        _chunk_begin(batch_ids, chunk)
        if not _hand_over_chunk(domain, chunk, transport, outcomes):
            return  # the domain or everything is paused: the rest goes back to the queue untouched


def _chunk_begin(batch_ids: list[int], chunk: list[Prepared]) -> None:
    """Renew the lease of the batch's rows still ``sending``, and stamp the chunk's ``checked_at``.

    A live batch never outlives its lease, however slow the receiver: only a
    dead worker's rows expire (and become ``unknown``). The stamp is taken
    before the guard reads the suppressions: a message sent to an address
    whose suppression committed before its ``checked_at`` would break the
    guarantee (the fault suite counts those); after it, it is the bounded window.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=settings.SENDPLANE_DISPATCH["LEASE_SECONDS"])
    Message.objects.filter(id__in=batch_ids, status=MessageStatus.SENDING).update(
        lease_expires_at=lease, checked_at=Case(When(id__in=[p.message.pk for p in chunk], then=Value(now)), default=F("checked_at"))
    )


def _hand_over_chunk(domain: SendingDomain, chunk: list[Prepared], transport: Transport, outcomes: dict[int, Outcome]) -> bool:
    """Hand over what the guard allows, all at once (the transport overlaps the network); False when paused.

    A message left without an outcome (its campaign paused, a session that
    could not open, a slow provider past half the lease) goes back to the queue.
    """
    deadline = time.monotonic() + settings.SENDPLANE_DISPATCH["LEASE_SECONDS"] / 2
    campaigns = Scope(Campaign, frozenset(p.message.campaign_id for p in chunk), {"status": CampaignStatus.RUNNING})
    with hand_over_guard(domain_id=domain.pk, scope=campaigns) as running:
        if running is None:
            return False
        read_at = time.monotonic()  # a suppression committing from here on waits for this chunk's end on this worker
        blocked = suppressed_among(addresses=[p.message.recipient for p in chunk], sending_domain=domain)
        allowed = [p for p in chunk if p.message.campaign_id in running]
        for prepared in allowed:
            if prepared.message.recipient in blocked:
                outcomes[prepared.message.pk] = Outcome(MessageStatus.SUPPRESSED, None, "suppressed before sending")
        _send_chunk(transport, [p for p in allowed if p.message.pk not in outcomes], outcomes, deadline)
    metrics.suppression_window(time.monotonic() - read_at)
    return True


def _send_chunk(transport: Transport, handing: list[Prepared], outcomes: dict[int, Outcome], deadline: float) -> None:
    """The transport's hand-over; if the worker is stopped meanwhile, what was in flight is ``unknown``.

    An ``Exception`` is the transport saying that what has no outcome was not
    handed over (it goes back to the queue). Anything else (SystemExit,
    KeyboardInterrupt: the worker is being stopped) may strike after the
    server took a message and before its 250 was read: released, it would be
    sent twice, so every message handed and without an outcome is recorded
    ``unknown``, as for a worker that died.
    """
    try:
        transport.send_many(handing, outcomes=outcomes, deadline=deadline)
    except Exception:
        raise
    except BaseException as stop:
        stopped = Outcome(MessageStatus.UNKNOWN, None, f"the worker was stopped while handing it over ({type(stop).__name__})")
        for prepared in handing:
            outcomes.setdefault(prepared.message.pk, stopped)
        raise


def messages_record(
    *, messages: list[Message], outcomes: dict[int, Outcome], result: BatchResult, release_at: datetime | None = None
) -> None:
    """Write the batch's outcomes; rows without one go back to the queue untouched.

    One UPDATE per outcome group rather than a bulk_update's CASE per row (a
    tenth of the cost); each only touches rows still ``sending``, so a row the
    sweeper already marked unknown stays unknown.
    """
    now = timezone.now()
    sent = [m.pk for m in messages if outcomes.get(m.pk) == SENT_OUTCOME]
    sent_ids = set(sent)
    released = [m for m in messages if m.pk not in outcomes]
    released_ids = {m.pk for m in released}
    others = [m for m in messages if m.pk in outcomes and outcomes[m.pk] != SENT_OUTCOME]
    heard = [Heard(m.provider, 250, "") for m in messages if m.pk in sent_ids]
    with transaction.atomic(), deferred_adds():  # counters and results written together, in one order, at its end
        cancelled = campaigns_cancelled({m.campaign_id for m in messages})  # first: a cancel waits for this transaction
        attempted: Counter[str] = Counter()  # the detector's denominator per stream: final answers from the receiver, yes or no
        taken = _mark_sent(messages, sent, now)
        failed: list[Message] = []
        attempted.update(m.provider for m in taken)
        if released:
            messages_release(released, not_before=release_at or now, cancelled=cancelled)
        for message in others:
            outcome = outcomes[message.pk]
            _apply(message, outcome, now, settings.SENDPLANE_DISPATCH, cancelled=message.campaign_id in cancelled)
            updated = _ours([message.pk]).update(
                status=message.status, not_before=message.not_before, lease_expires_at=None,
                last_code=message.last_code, last_reply=message.last_reply,
            )
            if updated:  # the receiver's refusal is feedback like any bounce: classified, suppressing, counted
                learned = reply_learn(message=message, code=outcome.code, reply=outcome.reply)
                result.bounced += learned is not None and learned.event.event_type == EventType.BOUNCED
                heard.append(Heard(message.provider, outcome.code, outcome.reply))
                if message.status == MessageStatus.FAILED:
                    failed.append(message)
                    attempted[message.provider] += outcome.code is not None
        if attempted:
            by_provider = {provider: {"sent": n} for provider, n in attempted.items()}
            counters_add_streams(domain_id=messages[0].sending_domain_id, at=now, by_provider=by_provider)
        if heard:  # each provider's stream: slowed on rate limiting, paused on refusals of our authentication or listing
            stream_hear(domain_id=messages[0].sending_domain_id, heard=heard, streams=result.streams)
        results_delivered(taken=taken, failed=failed)
        # One INSERT a batch: each outcome as the transport gave it (dispatch.story reads them); released rows were no attempt.
        MessageAttempt.objects.bulk_create(_attempts(messages, outcomes, now))
    correlations = _correlations(messages)
    for message in messages:
        status = MessageStatus.SENT if message.pk in sent_ids else message.status
        if message.pk in released_ids:
            status = MessageStatus.CANCELLED if message.campaign_id in cancelled else MessageStatus.QUEUED
        result.add(status)
        _log_message(message, status, correlations.get(message.trigger_id, ""))
    result.correlation_ids.update(filter(None, correlations.values()))


def _attempts(messages: list[Message], outcomes: dict[int, Outcome], now: datetime) -> list[MessageAttempt]:
    """The batch's attempts, built in memory: also those of rows the sweeper already took back (what really happened)."""
    transport = _transport_label()
    return [
        MessageAttempt(
            message_id=m.pk, number=m.attempts, at=now, outcome=outcomes[m.pk].status, code=outcomes[m.pk].code,
            reply=outcomes[m.pk].reply[:1000], transport=transport,
        )
        for m in messages if m.pk in outcomes
    ]


def _transport_label() -> str:
    """``smtp`` or the ESP's name, from the EMAIL_BACKEND the transport was opened from (open_transport)."""
    parts = str(settings.EMAIL_BACKEND).split(".")  # django.core.mail.backends.smtp.EmailBackend, anymail.backends.postmark.EmailBackend
    return (parts[-2] if len(parts) > 1 else parts[0])[:40]


def _mark_sent(messages: list[Message], sent: list[int], now: datetime) -> list[Message]:
    """Mark the receiver's 250s sent; returns the messages this wrote (a row the sweeper took back stays unknown)."""
    if not sent:
        return []
    updated = _ours(sent).update(status=MessageStatus.SENT, sent_at=now, lease_expires_at=None, last_code=250, last_reply="")
    ids = set(sent)
    if updated < len(sent):  # rare: read back which rows this update wrote (its sent_at is this batch's own)
        ids = set(Message.objects.filter(pk__in=sent, status=MessageStatus.SENT, sent_at=now).values_list("pk", flat=True))
    return [m for m in messages if m.pk in ids]


def messages_release(messages: list[Message], *, not_before: datetime, cancelled: frozenset[int] | None = None) -> None:
    """Back to the queue: never handed over, so the claim's attempt does not count.

    A cancelled campaign's rows end ``cancelled`` instead (``cancelled``: the
    campaigns ``campaigns_cancelled`` found in the caller's transaction).
    """
    with transaction.atomic():
        if cancelled is None:
            cancelled = campaigns_cancelled({m.campaign_id for m in messages})
        back = [m.pk for m in messages if m.campaign_id not in cancelled]
        ended = [m.pk for m in messages if m.campaign_id in cancelled]
        fields = {"not_before": not_before, "lease_expires_at": None, "attempts": F("attempts") - 1}
        if back:
            _ours(back).update(status=MessageStatus.QUEUED, **fields)
        if ended:
            _ours(ended).update(status=MessageStatus.CANCELLED, **fields)


def campaigns_cancelled(campaign_ids: set[int]) -> frozenset[int]:
    """Which of these campaigns are cancelled, every one read ``FOR KEY SHARE`` (PostgreSQL); call it in a transaction.

    ``campaign_cancel`` flips the status, then waits for every holder of such
    a lock (``hand_overs_wait``), then ends the waiting rows: so either this
    transaction sees the cancel, or the cancel's sweep sees what it puts back
    in the queue. No row of a cancelled campaign is left waiting.
    """
    rows = Campaign.objects.filter(pk__in=sorted(campaign_ids)).order_by("pk").values_list("pk", "status")
    if connection.vendor != "postgresql":
        return frozenset(pk for pk, status in rows if status == CampaignStatus.CANCELLED)
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:  # the ORM has FOR UPDATE and FOR NO KEY UPDATE, not FOR KEY SHARE
        cursor.execute(f"{sql} FOR KEY SHARE", params)
        return frozenset(pk for pk, status in cursor.fetchall() if status == CampaignStatus.CANCELLED)


def _ours(ids: list[int]) -> QuerySet[Message]:
    return Message.objects.filter(id__in=ids, status=MessageStatus.SENDING)


def _apply(message: Message, outcome: Outcome, now: datetime, cfg: DispatchSettings, *, cancelled: bool = False) -> None:
    """The row's status after ``outcome``; a deferral of a cancelled campaign's message ends it ``cancelled`` (never retried)."""
    message.last_code, message.last_reply = outcome.code, outcome.reply
    message.status = outcome.status
    if outcome.status == MessageStatus.DEFERRED:
        if cancelled:
            message.status = MessageStatus.CANCELLED
        elif message.attempts >= cfg["MAX_ATTEMPTS"]:
            message.status = MessageStatus.FAILED
            message.last_reply = f"gave up after {message.attempts} attempts: {outcome.reply}"[:1000]
        else:
            message.not_before = now + timedelta(seconds=cfg["RETRY_BASE_SECONDS"] * 2 ** (message.attempts - 1))


# --- log lines: one INFO a batch (counts only), one DEBUG or WARNING a message ----------------


def _correlations(messages: list[Message]) -> dict[int, str]:
    """Each trigger's correlation id, in one query a batch (a batch spans triggers)."""
    return dict(Trigger.objects.filter(id__in={m.trigger_id for m in messages}).values_list("id", "correlation_id"))


def _log_message(message: Message, status: str, correlation: str) -> None:
    level = logging.WARNING if status in _WARNED else logging.DEBUG
    if not logger.isEnabledFor(level):
        return  # the hot path: no fields built for lines nobody reads
    fields = {
        "correlation_id": correlation,
        "message_uuid": message.uuid.hex,
        "trigger": message.trigger_id,
        "campaign": message.campaign_id,
        "domain": message.sending_domain.domain,
        "status": status,
    }
    if level == logging.WARNING:
        fields |= {
            "recipient": message.recipient, "code": message.last_code, "reply": message.last_reply[:200], "attempts": message.attempts,
        }
    logger.log(level, "message %s", status, extra=fields)


def _log_batch(domain: SendingDomain, result: BatchResult) -> None:
    fields = {"domain": domain.domain, "claimed": result.claimed, "counts": result.counts, "more": result.more, "fault": result.fault}
    fields["correlation_ids"] = sorted(result.correlation_ids)  # grep one trigger's id: its batches show up
    logger.log(logging.INFO if result.claimed else logging.DEBUG, "batch done", extra=fields)
