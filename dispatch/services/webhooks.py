"""ESP tracking webhooks: anymail's normalized events onto our vocabulary, then the feedback pipeline.

django-anymail validates each webhook (basic auth, signatures) and turns every
ESP's payload into an ``AnymailTrackingEvent``; ``webhook_event_ingest`` maps
that event onto our event types, kinds and reasons (``Verdict``), finds the
message it is about and records it with ``event_record`` (suppression and
counters in the same transaction). Recording is idempotent: an ESP that
re-sends a webhook changes nothing the second time.

Precedence for a bounce's reason: a decisive enhanced status code, then the
ESP's own classification (its hard/soft class names the reason more reliably
than our phrase tables), then the MTA's text, then a generic status code.
Only a permanent address failure is a hard bounce, as for raw bounces.

An event counts (suppresses, feeds the detector) only when it names our
message by our metadata or by our Message-ID in the field where the ESP echoes
the original's header (``ESP_MESSAGE_ID_PATHS``), and its recipient is that
message's recipient: a Message-ID quoted in a bounce's text (which the remote
MTA writes) never redirects a suppression to the message's recipient. Anything
else is stored as unverified evidence (``dispatch.services.feedback``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from anymail.signals import AnymailTrackingEvent, RejectReason
from anymail.signals import EventType as Esp

from deliverability.bounces import vocabulary as v
from deliverability.bounces.parse import reply_in, status_in
from deliverability.models import EventType
from deliverability.services import Feedback
from deliverability.services.feedback import same_recipient
from dispatch.services.delivery import ESP_METADATA_KEY
from dispatch.services.feedback import (
    Ingested,
    Tie,
    ingested,
    last_sent_to,
    message_by_message_id,
    message_by_uuid,
    message_event_record,
    report_verified,
    unverified_why,
    verified_dedupe,
)
from dispatch.services.results import result_tracked

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What one ESP event says about its recipient, in our vocabulary."""

    event_type: str
    kind: str
    reason: str
    status: str = ""
    feedback_type: str = ""


# The anymail event types we learn from. Every other one (queued, sent, opened,
# clicked, subscribed, failed, inbound, unknown) is accepted and recorded nowhere.
LEARNED = {
    Esp.DELIVERED: EventType.DELIVERED,
    Esp.DEFERRED: EventType.DEFERRED,
    Esp.BOUNCED: EventType.BOUNCED,
    Esp.REJECTED: EventType.BOUNCED,  # refused by the ESP itself; reject_reason says why
    Esp.COMPLAINED: EventType.COMPLAINED,
    Esp.UNSUBSCRIBED: EventType.UNSUBSCRIBED,
    Esp.AUTORESPONDED: EventType.AUTO_REPLY,
}

# Why an ESP refused to send (anymail's RejectReason): (our event type, permanent, reason).
REJECTED = {
    RejectReason.INVALID: (EventType.BOUNCED, True, v.Reason.USER_UNKNOWN),
    RejectReason.BOUNCED: (EventType.BOUNCED, True, v.Reason.USER_UNKNOWN),  # on its list after an earlier bounce
    RejectReason.TIMED_OUT: (EventType.BOUNCED, False, v.Reason.EXPIRED),
    RejectReason.BLOCKED: (EventType.BOUNCED, False, v.Reason.POLICY),
    RejectReason.SPAM: (EventType.COMPLAINED, True, v.Reason.FEEDBACK),  # on its list after an earlier complaint
    RejectReason.UNSUBSCRIBED: (EventType.UNSUBSCRIBED, True, ""),
    RejectReason.OTHER: (EventType.BOUNCED, False, v.Reason.POLICY),
}

# Each ESP's own hard/soft classification, which anymail's normalized fields do not
# carry: where to find it in ``esp_event``, and (permanent or None, reason or "") per value.
# A value is looked up whole, then by its first part ("Permanent/General" -> "Permanent").
ESP_SIGNALS: dict[str, tuple[tuple[tuple[str, ...], ...], dict[str, tuple[bool | None, str]]]] = {
    "Amazon SES": (
        (("bounce", "bounceType"), ("bounce", "bounceSubType")),
        {
            "Permanent": (True, ""),
            "Permanent/NoEmail": (True, v.Reason.USER_UNKNOWN),
            "Permanent/Suppressed": (True, v.Reason.USER_UNKNOWN),
            "Permanent/OnAccountSuppressionList": (True, v.Reason.USER_UNKNOWN),
            "Transient": (False, ""),
            "Transient/MailboxFull": (False, v.Reason.MAILBOX_FULL),
            "Transient/MessageTooLarge": (False, v.Reason.TOO_BIG),
            "Transient/ContentRejected": (False, v.Reason.CONTENT),
            "Transient/AttachmentRejected": (False, v.Reason.CONTENT),
            "Undetermined": (None, ""),
        },
    ),
    "Postmark": (
        (("Type",),),
        {
            "HardBounce": (True, v.Reason.USER_UNKNOWN),  # Postmark: "unknown user, mailbox not found"
            "SoftBounce": (False, ""),
            "Transient": (False, ""),
            "DnsError": (False, v.Reason.NETWORK_ERROR),
            "BadEmailAddress": (True, v.Reason.USER_UNKNOWN),
            "Blocked": (False, v.Reason.BLOCKED),
            "DMARCPolicy": (False, v.Reason.AUTH_FAILURE),
            "VirusNotification": (False, v.Reason.VIRUS_DETECTED),
        },
    ),
    "SendGrid": (
        (("type",),),  # bounce events: "bounce" (permanent) or "blocked" (temporary)
        {"bounce": (True, ""), "blocked": (False, v.Reason.BLOCKED)},
    ),
    "Mailgun": (
        (("event-data", "severity"), ("event-data", "reason")),
        {
            "permanent": (True, ""),
            "permanent/suppress-bounce": (True, v.Reason.USER_UNKNOWN),
            "temporary": (False, ""),
        },
    ),
    "SparkPost": (
        (("msys", "message_event", "bounce_class"),),  # https://support.sparkpost.com/docs/deliverability/bounce-classification-codes
        {
            "10": (True, v.Reason.USER_UNKNOWN),  # invalid recipient
            "20": (False, ""),
            "21": (False, v.Reason.NETWORK_ERROR),  # DNS failure
            "22": (False, v.Reason.MAILBOX_FULL),
            "23": (False, v.Reason.TOO_BIG),
            "24": (False, v.Reason.EXPIRED),
            "25": (False, v.Reason.POLICY),  # admin failure: the ESP's own policy
            "30": (True, ""),  # generic bounce, no RCPT
            "40": (None, ""),
            "50": (False, v.Reason.BLOCKED),
            "51": (False, v.Reason.BLOCKED),  # spam block: the sender, not the address
            "52": (False, v.Reason.SPAM_DETECTED),
            "53": (False, v.Reason.CONTENT),
            "54": (False, v.Reason.RELAYING_DENIED),
            "70": (False, ""),
        },
    ),
}

ARF_FEEDBACK_TYPES = frozenset({"abuse", "fraud", "virus", "other", "not-spam", "auth-failure"})


def webhook_event_ingest(*, esp_name: str, event: AnymailTrackingEvent) -> Ingested | None:
    """Record one ESP event; None when we do not learn from it or it is not about a message of ours.

    Raises on our own faults (the database), so the webhook answers 500 and the ESP retries.
    """
    if event.event_type in _TRACKING:
        _tracked(esp_name, event)
        return None
    verdict = event_verdict(esp_name, event)
    if verdict is None:
        return None
    tie = _message_for(esp_name, event)
    message = tie.message
    if message is None:
        logger.info("%s %s event for no message of ours (event %s): ignored", esp_name, event.event_type, event.event_id)
        return None
    verified = report_verified(tie, event.recipient or "")
    recipient = message.recipient if verified else (event.recipient or "")
    feedback = Feedback(
        event_type=verdict.event_type,
        recipient=recipient,
        source="webhook:" + esp_slug(esp_name),
        dedupe=verified_dedupe(message, verdict.event_type, verdict.kind) if verified else event_dedupe(esp_name, event),
        occurred_at=event.timestamp,
        kind=verdict.kind,
        reason=verdict.reason,
        status=verdict.status,
        smtp_reply=event.mta_response or "",
        feedback_type=verdict.feedback_type,
        sending_domain=message.sending_domain,
        message_uuid=message.uuid,
        provider=message.provider,
        matched_by=tie.matched_by,
        detail=_detail(esp_name, event, recipient) | ({} if verified else {"unverified": unverified_why(tie)}),
        verified=verified,
    )
    return ingested(*message_event_record(feedback, message), message=message)


# Opens and clicks: counted in the campaign's results (once per message), not stored as feedback events.
_TRACKING = {Esp.OPENED: "opened", Esp.CLICKED: "clicked"}


def _tracked(esp_name: str, event: AnymailTrackingEvent) -> None:
    tie = _message_for(esp_name, event)
    if tie.message is not None and report_verified(tie, event.recipient or ""):
        result_tracked(tie.message, _TRACKING[event.event_type])


def esp_slug(esp_name: str) -> str:
    return esp_name.lower().replace(" ", "_")


# --- mapping --------------------------------------------------------------------------


def event_verdict(esp_name: str, event: AnymailTrackingEvent) -> Verdict | None:
    """Our event type, kind and reason for one anymail event; None for events we do not learn from."""
    event_type = LEARNED.get(event.event_type)
    if event_type is None:
        return None
    permanent: bool | None = None
    reason = ""
    if event.event_type == Esp.REJECTED:
        event_type, permanent, reason = REJECTED.get(event.reject_reason or RejectReason.OTHER, REJECTED[RejectReason.OTHER])
    if event_type in (EventType.BOUNCED, EventType.DEFERRED):
        return _bounce_verdict(esp_name, event, event_type, permanent, reason)
    if event_type == EventType.DELIVERED:
        return Verdict(event_type, v.Kind.DELIVERED, v.Reason.DELIVERED, status_in(event.mta_response or "") or "2.0.0")
    if event_type == EventType.COMPLAINED:
        feedback_type = event.description if event.description in ARF_FEEDBACK_TYPES else ""  # SES gives one
        return Verdict(event_type, v.Kind.COMPLAINT, v.Reason.FEEDBACK, feedback_type=feedback_type)
    if event_type == EventType.AUTO_REPLY:
        return Verdict(event_type, v.Kind.AUTO_REPLY, v.Reason.VACATION)
    return Verdict(event_type, "", "")  # unsubscribed


def _bounce_verdict(esp_name: str, event: AnymailTrackingEvent, event_type: str, permanent: bool | None, reason: str) -> Verdict:
    text, description = event.mta_response or "", event.description or ""
    signal_permanent, signal_reason = esp_signal(esp_name, event.esp_event)
    status = status_in(text) or status_in(description)
    reason = (
        v.decisive_reason_from_status(status)
        or signal_reason
        or reason
        or v.reason_from_text(text)
        or v.reason_from_status(status)
        or v.reason_from_text(description)
        or v.Reason.UNDEFINED
    )
    permanent = _permanent(event_type, signal_permanent if signal_permanent is not None else permanent, status, text)
    kind, reason, status = v.failure_verdict(reason, status, permanent)
    return Verdict(event_type, kind, reason, status)


def _permanent(event_type: str, esp_says: bool | None, status: str, text: str) -> bool:
    if event_type == EventType.DEFERRED:
        return False  # the ESP will try again, whatever the text says
    if esp_says is not None:
        return esp_says
    code = status or reply_in(text)
    return not code.startswith("4")


def esp_signal(esp_name: str, esp_event: Any) -> tuple[bool | None, str]:
    """(permanent or None, reason or "") from the ESP's own classification in its raw event."""
    paths, table = ESP_SIGNALS.get(esp_name, ((), {}))
    value = "/".join(part for part in (_dig(esp_event, path) for path in paths) if part)
    return table.get(value) or table.get(value.split("/")[0]) or (None, "")


def _dig(data: Any, path: tuple[str, ...]) -> str:
    for key in path:
        if not isinstance(data, Mapping):
            return ""
        data = data.get(key)
    return str(data) if data is not None else ""


# --- matching and idempotency ---------------------------------------------------------


# Where each ESP echoes the original's Message-ID header (anymail's ``message_id`` is mostly the ESP's own id).
ESP_MESSAGE_ID_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Amazon SES": (("mail", "commonHeaders", "messageId"),),
    "SendGrid": (("smtp-id",),),
    "Mailgun": (("event-data", "message", "headers", "message-id"),),
}


def _message_for(esp_name: str, event: AnymailTrackingEvent) -> Tie:
    """Our metadata first, then our Message-ID where the ESP echoes it; else, as evidence only, the recipient.

    An event that carries our metadata key naming no message of ours is another
    installation's (staging sharing the ESP account): never matched by recipient.
    """
    metadata = event.metadata if isinstance(event.metadata, Mapping) else {}
    ours = str(metadata.get(ESP_METADATA_KEY) or "")
    if ours:
        message = message_by_uuid(ours)
        return Tie(message, v.MatchedBy.METADATA if message else "", trusted=message is not None)
    for candidate in _echoed_message_ids(esp_name, event):
        message = message_by_message_id(candidate)
        if message is not None:
            return Tie(message, v.MatchedBy.MESSAGE_ID, trusted=True)
    message = last_sent_to(event.recipient) if event.recipient else None
    if message is None:
        return Tie()
    return Tie(message, v.MatchedBy.RECIPIENT, why="tied only by the recipient's last message")


def _echoed_message_ids(esp_name: str, event: AnymailTrackingEvent) -> list[str]:
    found = [str(event.message_id or "")] + [_dig(event.esp_event, path) for path in ESP_MESSAGE_ID_PATHS.get(esp_name, ())]
    return [value for value in found if value]


def event_dedupe(esp_name: str, event: AnymailTrackingEvent) -> str:
    """The ESP's event id where it gives one (per recipient: SES shares one id across them), else a digest."""
    if event.event_id:
        return f"webhook:{esp_slug(esp_name)}:{event.event_id}:{event.recipient or ''}"
    parts = [esp_name, event.event_type, event.message_id, event.recipient, event.timestamp, event.description]
    digest = hashlib.sha256("\x1f".join(str(part or "") for part in parts).encode()).hexdigest()
    return f"webhook:{esp_slug(esp_name)}:sha256:{digest}"


def _detail(esp_name: str, event: AnymailTrackingEvent, recipient: str) -> dict[str, str]:
    detail = {
        "esp": esp_name,
        "esp_event_type": event.event_type,
        "esp_event_id": str(event.event_id or ""),
        "esp_message_id": str(event.message_id or ""),
        "description": (event.description or "")[:500],
    }
    if event.recipient and not same_recipient(event.recipient, recipient):
        detail["reported_recipient"] = event.recipient
    return {key: value for key, value in detail.items() if value}
