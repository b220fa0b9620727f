"""Recording what receivers tell us: one event, its suppression, its count, in one transaction.

Every source (ESP webhook, raw bounce upload or mailbox, one-click
unsubscribe) builds a ``Feedback`` and calls ``event_record``. Because the
event, the suppression it causes and the counter it bumps commit together,
an address is suppressed from the moment its event commits, and a duplicate
delivery (same ``dedupe`` key) changes nothing at all.

Only a verified event suppresses or counts (``DomainMinute`` feeds the anomaly
detector): the caller that matched the report to our message and its recipient
says so in ``Feedback.verified``. An unverified event is stored as evidence for
operators and changes nothing else, so a forged report cannot suppress an
address or pause a domain.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import TextChoices
from django.utils import timezone

from controlplane import metrics
from controlplane.addresses import address_hash, address_key, address_problem
from deliverability.bounces import vocabulary as v
from deliverability.errors import DeliverabilityError
from deliverability.models import EventType, FeedbackEvent, SendingDomain, SuppressionReason
from deliverability.providers import provider_of
from deliverability.services.counters import counters_add
from deliverability.services.suppression import suppression_add, suppression_scope

# Soft bounces that speak about the recipient's own mailbox: enough of them in the
# window and the address is suppressed. Blocks and rate limits speak about us
# and never suppress a recipient.
RECIPIENT_SOFT_REASONS = frozenset({v.Reason.MAILBOX_FULL, v.Reason.SUSPENDED, v.Reason.EXPIRED, v.Reason.UNDEFINED})
# Bounces that say receivers distrust the sender: the anomaly detector's reputation signal.
REPUTATION_REASONS = frozenset({
    v.Reason.BLOCKED, v.Reason.BAD_REPUTATION, v.Reason.SPAM_DETECTED, v.Reason.REQUIRE_PTR, v.Reason.AUTH_FAILURE,
})


@dataclass(frozen=True)
class Feedback:
    """One normalized event about one recipient, before it is stored."""

    event_type: str
    recipient: str
    source: str  # webhook:<esp>, upload, mailbox, unsubscribe
    dedupe: str  # the provider's event id, or a digest of what makes the report unique
    occurred_at: datetime | None = None
    kind: str = ""
    reason: str = ""
    status: str = ""
    smtp_reply: str = ""
    feedback_type: str = ""
    sending_domain: SendingDomain | None = None
    message_uuid: uuid.UUID | None = None
    provider: str | None = None  # the provider group of the message it is about (its stream's counters); None: from the address
    matched_by: str = ""
    detail: dict = field(default_factory=dict)
    # None: only our own SMTP session and unsubscribe tokens are verified by construction
    # (SELF_EVIDENT); a report from outside is verified only where its matcher says True.
    verified: bool | None = None


# Sources that cannot be forged from outside: the worker's own SMTP reply, a signed unsubscribe token.
SELF_EVIDENT = frozenset({v.MatchedBy.SMTP, v.MatchedBy.TOKEN})


def feedback_verified(feedback: Feedback) -> bool:
    return feedback.verified if feedback.verified is not None else feedback.matched_by in SELF_EVIDENT


def same_recipient(reported: str, ours: str) -> bool:
    """Whether a report names the address we sent to, in any of its forms (case, NFC, IDN or punycode)."""
    left = address_key(reported or "")
    return "@" in left and left == address_key(ours)


def dedupe_key(dedupe: str) -> str:
    return hashlib.sha256(dedupe.encode("utf-8", "surrogatepass")).hexdigest()


def event_record(feedback: Feedback) -> tuple[FeedbackEvent, bool]:
    """Store the event, suppress where policy says, count it. Returns (event, created)."""
    _check_vocabulary(feedback)
    key = dedupe_key(feedback.dedupe)
    try:
        with transaction.atomic():
            event = _insert(feedback, key)
            if event.verified:
                _suppress(event)
                _count(event, provider_of(event.recipient) if feedback.provider is None else feedback.provider)
    except IntegrityError:
        # A concurrent or earlier delivery of the same event won; it did all of the above.
        existing = FeedbackEvent.objects.filter(dedupe_key=key).first()
        if existing is None:
            raise
        return existing, False
    metrics.feedback_recorded(event)
    return event, True


# The model's choices are not checked on save: this is where every source's values are held to the vocabularies.
_VOCABULARIES: dict[str, tuple[type[TextChoices], bool]] = {  # field -> (vocabulary, may be empty)
    "event_type": (EventType, False),
    "kind": (v.Kind, True),
    "reason": (v.Reason, True),
    "matched_by": (v.MatchedBy, True),
}


def _check_vocabulary(feedback: Feedback) -> None:
    for name, (vocabulary, blank) in _VOCABULARIES.items():
        value = getattr(feedback, name)
        if value not in vocabulary.values and not (blank and value == ""):
            raise DeliverabilityError(f"{value!r} is not one of {', '.join(vocabulary.values)}", field=name)


def _insert(feedback: Feedback, key: str) -> FeedbackEvent:
    recipient = feedback.recipient.strip().lower()[:320]
    return FeedbackEvent.objects.create(
        event_type=feedback.event_type,
        kind=feedback.kind,
        reason=feedback.reason[:32],
        status=feedback.status[:16],
        smtp_reply=feedback.smtp_reply[:2000],
        feedback_type=feedback.feedback_type[:32],
        recipient=recipient,
        recipient_hash=address_hash(recipient) if recipient else "",
        sending_domain=feedback.sending_domain,
        message_uuid=feedback.message_uuid,
        matched_by=feedback.matched_by,
        source=feedback.source[:40],
        dedupe_key=key,
        detail=feedback.detail,
        verified=feedback_verified(feedback),
        occurred_at=feedback.occurred_at or timezone.now(),
    )


# --- suppression policy -----------------------------------------------------------


def _suppress(event: FeedbackEvent) -> None:
    reason = _suppression_reason(event)
    if reason is None or address_problem(event.recipient):
        return  # nothing to suppress, or no address that could ever be mailed (a trigger refuses it)
    # Unsubscribes always name their domain (the link is per message); a bounce or
    # complaint we could not tie to a domain suppresses everywhere rather than nowhere.
    domain = event.sending_domain if suppression_scope(reason) == "domain" else None
    source = f"{event.source} {event.event_type} {event.reason}".strip()
    suppression_add(address=event.recipient, reason=reason, sending_domain=domain, source=source, event=event)


def _suppression_reason(event: FeedbackEvent) -> str | None:
    if event.event_type == EventType.COMPLAINED:
        return SuppressionReason.COMPLAINT
    if event.event_type == EventType.UNSUBSCRIBED:
        return SuppressionReason.UNSUBSCRIBED
    if event.event_type != EventType.BOUNCED:
        return None
    if event.kind == v.Kind.HARD:
        return SuppressionReason.HARD_BOUNCE
    if event.reason in RECIPIENT_SOFT_REASONS and _soft_limit_reached(event):
        return SuppressionReason.SOFT_BOUNCE
    return None


def _soft_limit_reached(event: FeedbackEvent) -> bool:
    """N soft bounces about the recipient's own mailbox within the window (this one included)."""
    policy = settings.SENDPLANE_SUPPRESSION
    since = event.occurred_at - timedelta(hours=policy["SOFT_BOUNCE_WINDOW_HOURS"])
    recent = FeedbackEvent.objects.filter(
        verified=True,
        recipient_hash=event.recipient_hash,
        event_type=EventType.BOUNCED,
        kind=v.Kind.SOFT,
        reason__in=RECIPIENT_SOFT_REASONS,
        occurred_at__gte=since,
        occurred_at__lte=event.occurred_at,
    )
    if suppression_scope(SuppressionReason.SOFT_BOUNCE) == "domain" and event.sending_domain_id:
        recent = recent.filter(sending_domain_id=event.sending_domain_id)
    return recent.count() >= policy["SOFT_BOUNCE_LIMIT"]


# --- counters -------------------------------------------------------------------------


def _count(event: FeedbackEvent, provider: str) -> None:
    column = counter_column(event.event_type, event.kind, event.reason)
    if column and event.sending_domain_id:
        # Counted in the minute we learn of it, not back-dated: a minute the
        # detector has read never changes under it, whatever order providers resend in.
        counters_add(domain_id=event.sending_domain_id, at=None, provider=provider, **{column: 1})


def counter_column(event_type: str, kind: str, reason: str) -> str | None:
    """The DomainMinute column an event adds to, or None for events that are not counted."""
    if event_type == EventType.BOUNCED:
        if kind == v.Kind.HARD:
            return "bounced_hard"
        return "bounced_reputation" if reason in REPUTATION_REASONS else "bounced_soft"
    return _COUNTED.get(event_type)


_COUNTED: dict[str, str] = {
    EventType.DELIVERED: "delivered",
    EventType.DEFERRED: "deferred",
    EventType.COMPLAINED: "complained",
    EventType.UNSUBSCRIBED: "unsubscribed",
}
