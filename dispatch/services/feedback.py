"""Learning from what comes back: find the message a report is about, then record it.

Raw bounces and complaints (API upload, Maildir, file) and ESP webhook events
end here. The outbox is dispatch's, so matching a report to its ``Message``
happens in this module; classification, suppression and counting are
deliverability's (``event_record``), which this module feeds.

Anyone can send mail to the bounce address (it is every message's
Return-Path), so a report counts only when it is about a message we sent, to
the recipient we sent it to (issue 15):

- **tied** by a VERP token we signed (``dispatch.services.verp``), or by our
  Message-ID where the standard echoes it (the original message part of a DSN
  or ARF report; for a report without one, a ``Message-ID:`` header line of the
  copy a text bounce quotes), never by a Message-ID in the prose;
- **naming** that message's recipient (``same_recipient``: case and IDN aside);
- **once** per (message, event type, kind): a second report of the same thing
  about the same message is a duplicate, whoever sends it.

Everything else (an unsigned or wrongly signed token, a recipient we never
mailed, a block of a multi-recipient DSN that names someone else, a report
tied only by its recipient) is stored as unverified evidence: visible to
operators, never suppressing, never counted for the detector. A report
records at most ``MAX_EVIDENCE`` unverified recipients, so a DSN with 3,000
``Final-Recipient`` blocks costs a bounded number of rows.
"""

from __future__ import annotations

import email
import hashlib
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from email.message import Message as MimeMessage
from email.policy import compat32

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane.deferred_adds import deferred_adds
from controlplane.errors import ServiceError
from deliverability.bounces import Classification, classify_message
from deliverability.bounces.parse import MAX_BYTES as PARSED_BYTES
from deliverability.bounces.smtp_reply import classify_reply
from deliverability.bounces.vocabulary import Kind, MatchedBy
from deliverability.models import EventType, FeedbackEvent
from deliverability.selectors import address_suppressed
from deliverability.services import Feedback, event_record
from deliverability.services.feedback import same_recipient
from dispatch.models import Message, MessageStatus, Trigger
from dispatch.services.results import result_event
from dispatch.services.verp import verp_claimed_uuid, verp_message_uuid

logger = logging.getLogger("sendplane.feedback")

class FeedbackError(ServiceError):
    """Input we refuse before recording anything: one line naming the problem."""


class FeedbackTooLarge(FeedbackError):
    """A raw message over ``SENDPLANE_BOUNCE_MAX_BYTES``."""

    status = 413


_EVENT_FOR_KIND: dict[str, EventType] = {
    Kind.HARD: EventType.BOUNCED,
    Kind.SOFT: EventType.BOUNCED,
    Kind.COMPLAINT: EventType.COMPLAINED,
    Kind.AUTO_REPLY: EventType.AUTO_REPLY,
    Kind.DELIVERED: EventType.DELIVERED,
    Kind.UNKNOWN: EventType.UNKNOWN,
}
# Our Message-ID, whole: <uuid@sending domain> (dispatch.models.Message.message_id), brackets optional.
_OUR_MESSAGE_ID = re.compile(
    r"^\s*<?([0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12})@([^<>@\s]+?)>?\s*$", re.IGNORECASE
)
# A report naming only the recipient is tied (as evidence) to the last message sent to them this recently.
RECIPIENT_MATCH_DAYS = 30
# Unverified recipients recorded per report; a report about our mail names one (one RCPT per message).
MAX_EVIDENCE = 20
# MIME parts of one report looked at for the echoed original, and Message-IDs taken from them.
_MAX_PARTS = 64
_MAX_IDS = 4
_ORIGINAL_PARTS = frozenset(
    {"message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global", "message/global-headers"}
)


@dataclass(frozen=True)
class Ingested:
    """What one recipient of one report became."""

    event: FeedbackEvent
    created: bool  # False: a duplicate of an event already recorded, nothing changed
    suppressed: bool

    def as_dict(self) -> dict[str, object]:
        event = self.event
        return {
            "recipient": event.recipient,
            "event_type": event.event_type,
            "kind": event.kind,
            "reason": event.reason,
            "status": event.status,
            "feedback_type": event.feedback_type,
            "message": event.message_uuid.hex if event.message_uuid else None,
            "matched_by": event.matched_by,
            "verified": event.verified,
            "duplicate": not self.created,
            "suppressed": self.suppressed,
        }


# --- matching a report to the outbox --------------------------------------------


@dataclass(frozen=True)
class Tie:
    """The message a report says it is about, how it says so, and whether that claim is ours to trust."""

    message: Message | None = None
    matched_by: str = ""
    trusted: bool = False  # a signed VERP token, our Message-ID where the standard puts it, our ESP metadata
    why: str = ""  # when not trusted: why, for the operator reading the evidence


def report_verified(tie: Tie, reported_recipient: str) -> bool:
    """A trusted tie, and the report names the address that message went to, or withholds it.

    Feedback loops (Yahoo's, Microsoft's JMRP) redact the recipient of a
    complaint. A report tied to one of our messages by our signature or our
    Message-ID that names nobody cannot point at another address: it counts for
    the recipient that message went to, once, like any verified report.
    """
    if not tie.trusted or tie.message is None:
        return False
    return same_recipient(reported_recipient, tie.message.recipient) or _withheld(reported_recipient)


# A recipient a report hides: none at all, or a local part that only says so ("redacted@...", "xxxx@...", "***@...").
_WITHHELD = re.compile(r"\[?(redacted|removed|hidden|anonymi[sz]ed|withheld)\]?|x+|\*+", re.IGNORECASE)


def _withheld(reported: str) -> bool:
    local = reported.strip().rpartition("@")[0] if "@" in reported else reported.strip()
    return not local or _WITHHELD.fullmatch(local) is not None


def verified_dedupe(message: Message, event_type: str, kind: str) -> str:
    """Once per (message, event type, kind), whichever source reports it and however often."""
    return f"verified:{message.uuid.hex}:{event_type}:{kind}"


def unverified_why(tie: Tie) -> str:
    if tie.message is None:
        return "no message of ours"
    return tie.why or "the report names another recipient than the message's"


def message_by_uuid(ident: uuid.UUID | str | None) -> Message | None:
    try:
        parsed = ident if isinstance(ident, uuid.UUID) else uuid.UUID(ident) if ident else None
    except ValueError:
        return None
    return Message.objects.select_related("sending_domain").filter(uuid=parsed).first() if parsed else None


def message_by_message_id(message_id: str) -> Message | None:
    """The message whose Message-ID this is, whole (uuid and our sending domain), else None."""
    found = _OUR_MESSAGE_ID.match(message_id or "")
    if not found:
        return None
    message = message_by_uuid(found.group(1))
    if message is None or found.group(2).lower().rstrip(".") != message.sending_domain.domain.lower():
        return None
    return message


def last_sent_to(recipient: str) -> Message | None:
    since = timezone.now() - timedelta(days=RECIPIENT_MATCH_DAYS)
    candidates = Message.objects.filter(recipient__iexact=recipient.strip(), status=MessageStatus.SENT, sent_at__gte=since)
    return candidates.select_related("sending_domain").order_by("-sent_at").first()


def report_tie(*, raw: bytes, verp: str, message_id: str) -> Tie:
    """What one raw report is about: signed VERP, then our Message-ID in the echoed original; else a claim only."""
    message = message_by_uuid(verp_message_uuid(verp))
    if message is not None:
        return Tie(message, MatchedBy.VERP, trusted=True)
    for candidate in original_message_ids(raw, fallback=message_id):
        message = message_by_message_id(candidate)
        if message is not None:
            return Tie(message, MatchedBy.MESSAGE_ID, trusted=True)
    message = message_by_uuid(verp_claimed_uuid(verp))
    if message is not None:
        return Tie(message, MatchedBy.VERP, why="VERP token not signed by us")
    message = message_by_message_id(message_id)
    if message is not None:
        return Tie(message, MatchedBy.MESSAGE_ID, why="our Message-ID only outside the echoed original message")
    return Tie()


def original_message_ids(raw: bytes, *, fallback: str = "") -> list[str]:
    """Message-IDs of the original a report echoes in its own part (DSN returned headers, ARF original).

    A message that is no MIME report (a text bounce quoting the copy inline)
    gives the classifier's ``fallback``: a ``Message-ID:`` header line it found
    in the body, not the report's own.
    """
    try:
        report = email.message_from_bytes(raw[:PARSED_BYTES], policy=compat32)
        parts = [part for index, part in zip(range(_MAX_PARTS), report.walk(), strict=False) if _is_original(part)]
    except Exception:  # noqa: BLE001 - the email package raises anything on hostile input
        return []
    if not parts:  # a MIME report (DSN, ARF) puts the original in its own part: without one, its prose is not evidence
        return [fallback] if fallback and report.get_content_type().lower() != "multipart/report" else []
    return [found for part in parts for found in _ids_of(part)][:_MAX_IDS]


def _is_original(part: MimeMessage) -> bool:
    return part.get_content_type().lower() in _ORIGINAL_PARTS


def _ids_of(part: MimeMessage) -> Iterable[str]:
    payload = part.get_payload()
    if isinstance(payload, list):  # message/rfc822: the original, parsed
        originals = [inner for inner in payload if isinstance(inner, MimeMessage)]
    else:  # headers only, as text
        body = part.get_payload(decode=True) or b""
        originals = [email.message_from_bytes(body if isinstance(body, bytes) else b"", policy=compat32)]
    for original in originals[:1]:
        value = original.get("Message-ID")
        if value:
            yield str(value).strip()


# --- raw messages ---------------------------------------------------------------------


def bounce_ingest(*, raw: bytes, source: str) -> list[Ingested]:
    """Classify a raw bounce, complaint or auto-reply and record one event per recipient.

    Idempotent: the same bytes ingested twice (an upload retried, a mailbox
    read again) record nothing the second time.
    """
    limit = settings.SENDPLANE_BOUNCE_MAX_BYTES
    if not raw:
        raise FeedbackError("the message is empty")
    if len(raw) > limit:
        raise FeedbackTooLarge(f"the message is {len(raw)} bytes; the limit is {limit} (SENDPLANE_BOUNCE_MAX_BYTES)")
    digest = hashlib.sha256(raw).hexdigest()
    verdicts = classify_message(raw)
    if not verdicts:
        return []
    tie = report_tie(raw=raw, verp=verdicts[0].verp, message_id=verdicts[0].message_id)
    results, evidence = [], 0
    for index, verdict in enumerate(verdicts):
        verified = report_verified(tie, verdict.recipient)
        if not verified:
            evidence += 1
            if evidence > MAX_EVIDENCE:
                continue
        results.append(_record(verdict, tie if verified else _evidence_tie(tie, verdict), f"raw:{digest}:{index}", source))
    if evidence > MAX_EVIDENCE:
        logger.warning("feedback report with %d unverified recipients: %d recorded", evidence, MAX_EVIDENCE, extra={"source": source})
    return results


def _evidence_tie(tie: Tie, verdict: Classification) -> Tie:
    """For the record only: the message the report claims, else the last one sent to the address it names."""
    if tie.message is not None or not verdict.recipient:
        return Tie(tie.message, tie.matched_by, why=unverified_why(tie))
    message = last_sent_to(verdict.recipient)
    if message is None:
        return Tie(why=unverified_why(tie))
    return Tie(message, MatchedBy.RECIPIENT, why="tied only by the recipient's last message")


def _record(verdict: Classification, tie: Tie, dedupe: str, source: str) -> Ingested:
    message, event_type = tie.message, _EVENT_FOR_KIND.get(verdict.kind, EventType.UNKNOWN)
    verified = tie.trusted and message is not None
    # A verified report names our recipient (perhaps in other case): we keep the address we send to.
    recipient = message.recipient if verified and message is not None else verdict.recipient
    detail: dict[str, str] = {} if verified else {"unverified": unverified_why(tie)}
    if verdict.recipient and not same_recipient(verdict.recipient, recipient):
        detail["reported_recipient"] = verdict.recipient
    feedback = Feedback(
        event_type=event_type,
        recipient=recipient,
        source=source,
        dedupe=verified_dedupe(message, event_type, verdict.kind) if verified and message is not None else dedupe,
        kind=verdict.kind,
        reason=verdict.reason,
        status=verdict.status,
        smtp_reply=verdict.smtp_reply,
        feedback_type=verdict.feedback_type,
        sending_domain=message.sending_domain if message else None,
        message_uuid=message.uuid if message else None,
        provider=message.provider if message else None,
        matched_by=tie.matched_by,
        detail=detail,
        verified=verified,
    )
    return ingested(*message_event_record(feedback, message), message=message)


def message_event_record(feedback: Feedback, message: Message | None) -> tuple[FeedbackEvent, bool]:
    """``event_record``, and the event counted in its message's campaign results, in one transaction."""
    with transaction.atomic(), deferred_adds():  # the domain's counters and the campaign's results, in the one order
        event, created = event_record(feedback)
        if created and event.verified and message is not None:
            result_event(event, message)
    return event, created


def ingested(event: FeedbackEvent, created: bool, *, message: Message | None = None) -> Ingested:
    """The result of one recorded event, logged with the correlation id of the trigger that sent ``message``."""
    suppressed = bool(event.recipient) and address_suppressed(address=event.recipient, sending_domain=event.sending_domain)
    result = Ingested(event=event, created=created, suppressed=suppressed)
    _log_event(result, message)
    return result


def _log_event(result: Ingested, message: Message | None) -> None:
    """One line an event, without the address; a duplicate (nothing changed) only at DEBUG."""
    level = logging.INFO if result.created else logging.DEBUG
    if not logger.isEnabledFor(level):
        return
    event = result.event
    fields: dict[str, object] = {
        "event": event.event_type, "kind": event.kind, "reason": event.reason, "code": event.status, "source": event.source,
    }
    fields |= {"matched_by": event.matched_by, "verified": event.verified, "suppressed": result.suppressed, "duplicate": not result.created}
    if message is not None:
        correlation = Trigger.objects.filter(pk=message.trigger_id).values_list("correlation_id", flat=True).first()
        fields |= {"correlation_id": correlation or "", "message_uuid": message.uuid.hex, "trigger": message.trigger_id}
        fields |= {"campaign": message.campaign_id, "domain": message.sending_domain.domain}
    logger.log(level, "feedback %s", event.event_type, extra=fields)


# --- our own SMTP session's answers ---------------------------------------------------


def reply_learn(*, message: Message, code: int | None, reply: str) -> Ingested | None:
    """Record a receiving server's 4xx/5xx answer to our delivery attempt (a synchronous bounce).

    Called in the worker's recording transaction with the message's new
    status, so a 5xx "user unknown" suppresses the address as it commits.
    Connection and render failures (no code) are ours, not the receiver's: not recorded.
    """
    if code is None or code < 400:
        return None
    verdict = classify_reply(code, reply)
    final = message.status == MessageStatus.FAILED
    # A refusal of our message's form (a line too long, a syntax error) says nothing of
    # the recipient: kept as evidence, never a bounce, never counted, never suppressing.
    event_type = EventType.UNKNOWN if verdict.own_form else EventType.BOUNCED if final else EventType.DEFERRED
    feedback = Feedback(
        event_type=event_type,
        recipient=message.recipient,
        source="smtp",
        dedupe=f"smtp:{message.uuid.hex}:{message.attempts}",
        kind=verdict.kind,
        reason=verdict.reason,
        status=verdict.status,
        smtp_reply=f"{code} {reply}".strip(),
        sending_domain=message.sending_domain,
        message_uuid=message.uuid,
        provider=message.provider,
        matched_by=MatchedBy.SMTP,
    )
    return ingested(*message_event_record(feedback, message), message=message)
