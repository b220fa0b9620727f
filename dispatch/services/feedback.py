"""Learning from what comes back: find the message a report is about, then record it.

Raw bounces and complaints (API upload, Maildir, file) and ESP webhook events
end here. The outbox is dispatch's, so matching a report to its ``Message``
happens in this module; classification, suppression and counting are
deliverability's (``event_record``), which this module feeds.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from controlplane.errors import ServiceError
from deliverability.bounces import Classification, classify_message
from deliverability.bounces.smtp_reply import classify_reply
from deliverability.bounces.vocabulary import Kind, MatchedBy
from deliverability.models import EventType, FeedbackEvent
from deliverability.selectors import address_suppressed
from deliverability.services import Feedback, event_record
from dispatch.models import Message, MessageStatus, Trigger

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
_OUR_MESSAGE_ID = re.compile(r"<?([0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12})@", re.IGNORECASE)
# A report naming only the recipient is tied to the last message sent to them this recently.
RECIPIENT_MATCH_DAYS = 30


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
            "duplicate": not self.created,
            "suppressed": self.suppressed,
        }


# --- matching a report to the outbox --------------------------------------------


def message_match(*, token: str = "", message_id: str = "", recipient: str = "") -> tuple[Message | None, str]:
    """The message a report is about and how we know: our VERP token or Message-ID, else the recipient."""
    for ident, how in ((token, MatchedBy.VERP), (_uuid_in_message_id(message_id), MatchedBy.MESSAGE_ID)):
        message = _by_uuid(ident)
        if message is not None:
            return message, how
    if recipient:
        message = _last_sent_to(recipient)
        if message is not None:
            return message, MatchedBy.RECIPIENT
    return None, ""


def _uuid_in_message_id(message_id: str) -> str:
    found = _OUR_MESSAGE_ID.search(message_id or "")
    return found.group(1) if found else ""


def _by_uuid(ident: str) -> Message | None:
    try:
        parsed = uuid.UUID(ident) if ident else None
    except ValueError:
        return None
    return Message.objects.select_related("sending_domain").filter(uuid=parsed).first() if parsed else None


def _last_sent_to(recipient: str) -> Message | None:
    since = timezone.now() - timedelta(days=RECIPIENT_MATCH_DAYS)
    candidates = Message.objects.filter(recipient__iexact=recipient.strip(), status=MessageStatus.SENT, sent_at__gte=since)
    return candidates.select_related("sending_domain").order_by("-sent_at").first()


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
    return [_record(verdict, f"raw:{digest}:{index}", source) for index, verdict in enumerate(verdicts)]


def _record(verdict: Classification, dedupe: str, source: str) -> Ingested:
    message, matched_by = message_match(token=verdict.verp, message_id=verdict.message_id, recipient=verdict.recipient)
    # Our message names the address we would send to again; the report may name a forward.
    recipient = message.recipient if message is not None and matched_by != MatchedBy.RECIPIENT else verdict.recipient
    feedback = Feedback(
        event_type=_EVENT_FOR_KIND.get(verdict.kind, EventType.UNKNOWN),
        recipient=recipient,
        source=source,
        dedupe=dedupe,
        kind=verdict.kind,
        reason=verdict.reason,
        status=verdict.status,
        smtp_reply=verdict.smtp_reply,
        feedback_type=verdict.feedback_type,
        sending_domain=message.sending_domain if message else None,
        message_uuid=message.uuid if message else None,
        matched_by=matched_by,
        detail={"reported_recipient": verdict.recipient} if verdict.recipient != recipient else {},
    )
    return ingested(*event_record(feedback), message=message)


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
    fields |= {"matched_by": event.matched_by, "suppressed": result.suppressed, "duplicate": not result.created}
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
    feedback = Feedback(
        event_type=EventType.BOUNCED if final else EventType.DEFERRED,
        recipient=message.recipient,
        source="smtp",
        dedupe=f"smtp:{message.uuid.hex}:{message.attempts}",
        kind=verdict.kind,
        reason=verdict.reason,
        status=verdict.status,
        smtp_reply=f"{code} {reply}".strip(),
        sending_domain=message.sending_domain,
        message_uuid=message.uuid,
        matched_by=MatchedBy.SMTP,
    )
    return ingested(*event_record(feedback), message=message)
