"""One message's story: the answer to "why did this person not get it?" (API ``GET /messages/{uuid}``, the Message admin).

``message_story`` gathers, in a fixed number of queries whatever the
message's history: its creation (trigger, campaign, correlation id), every
attempt (``MessageAttempt``, written by the worker's recording and the
sweeper), every feedback event tied to it, the suppression of its address
for its domain (and what caused it), the campaign's and the domain's status
changes while it waited (audit trail), the version with its provenance, and
one ``verdict`` line. A read, nothing more: ``dispatch.selectors`` holds the
campaign-level reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Q

from audit.models import AuditEntry
from controlplane.addresses import address_hash
from deliverability.models import EventType, FeedbackEvent, ProviderStream, SendingSwitch, Suppression
from dispatch.models import TERMINAL, AttemptOutcome, Campaign, CampaignStatus, Message, MessageAttempt, MessageStatus
from dispatch.services.sweeper import LEASE_EXPIRED

# Audit actions that changed whether a campaign's or a domain's messages could go out.
CAMPAIGN_ACTIONS = ("campaign.pause", "campaign.resume", "campaign.cancel", "campaign.set_status", "messages.resolve_unknown")
DOMAIN_ACTIONS = ("domain.pause", "domain.resume")
MAX_CHANGES = 20  # of each (campaign, domain): a story, not the audit trail
ERASED_NOTE = "erased on request"  # dispatch.services.erasure's last_reply for a message that was still waiting
_LINE = 300  # a reply quoted in the verdict


@dataclass(frozen=True)
class Entry:
    """One line of the timeline: ``kind`` is created, attempt, event, suppression, campaign or domain."""

    at: datetime | None
    kind: str
    summary: str


@dataclass
class Story:
    message: Message
    verdict: str
    attempts: list[MessageAttempt]
    events: list[FeedbackEvent]
    suppression: Suppression | None
    changes: list[AuditEntry]
    version: dict[str, Any]
    timeline: list[Entry] = field(default_factory=list)


def message_story(message: Message) -> Story:
    """Everything known about one message, in time order, with the verdict on top."""
    message = _loaded(message)
    attempts = list(MessageAttempt.objects.filter(message=message).order_by("at", "id"))
    events = list(FeedbackEvent.objects.filter(message_uuid=message.uuid).order_by("occurred_at", "id"))
    suppression = _suppression(message, events)
    changes = _changes(message, attempts)
    story = Story(message, "", attempts, events, suppression, changes, version_provenance(message))
    story.timeline = _timeline(story)
    story.verdict = _verdict(story)
    return story


def _loaded(message: Message) -> Message:
    related = ("campaign", "trigger", "sending_domain", "version__variant__template", "version__parent", "version__created_by",
               "version__approved_by")
    return Message.objects.select_related(*related).get(pk=message.pk)


def _suppression(message: Message, events: list[FeedbackEvent]) -> Suppression | None:
    """The suppression of its address for its domain (global first); after an erase, found by an event's hash if any."""
    digest = address_hash(message.recipient) if message.recipient else next((e.recipient_hash for e in events if e.recipient_hash), "")
    if not digest:
        return None
    scope = Q(sending_domain__isnull=True) | Q(sending_domain_id=message.sending_domain_id)
    rows = Suppression.objects.filter(scope, address_hash=digest).select_related("event").order_by("created_at", "id")
    return min(rows, key=lambda s: (s.sending_domain_id is not None, s.created_at), default=None)


def _changes(message: Message, attempts: list[MessageAttempt]) -> list[AuditEntry]:
    """The campaign's and the domain's status changes between its creation and its end (or now)."""
    ended = _ended_at(message, attempts)
    window = Q(created_at__gte=message.created_at) & (Q(created_at__lte=ended) if ended else Q())
    found: list[AuditEntry] = []
    for target_type, target_id, actions in (
        ("dispatch.campaign", message.campaign_id, CAMPAIGN_ACTIONS),
        ("deliverability.sendingdomain", message.sending_domain_id, DOMAIN_ACTIONS),
    ):
        rows = AuditEntry.objects.filter(window, target_type=target_type, target_id=str(target_id), action__in=actions)
        found += rows.order_by("created_at", "id")[:MAX_CHANGES]
    return sorted(found, key=lambda e: (e.created_at, e.pk))


def _ended_at(message: Message, attempts: list[MessageAttempt]) -> datetime | None:
    """When its last outcome was written; None while it waits, or when it ended without an attempt (cancelled, erased)."""
    if message.status not in TERMINAL or message.status == MessageStatus.CANCELLED:
        return None
    return message.sent_at or (attempts[-1].at if attempts else None)


def version_provenance(message: Message) -> dict[str, Any]:
    """The version it was rendered from and where that came from (a person, or an AI generator with its model)."""
    version = message.version
    parent = version.parent
    return {
        "id": version.pk,
        "number": version.number,
        "template": version.variant.template.slug,
        "variant": version.variant.slug,
        "status": version.status,
        "origin": version.origin,
        "generator": version.generator,
        "model": version.model_name,
        "prompt_hash": version.prompt_hash,
        "parent": {"id": parent.pk, "number": parent.number} if parent else None,
        "created_by": version.created_by.get_username() if version.created_by else "",
        "created_at": version.created_at,
        "approved_by": version.approved_by.get_username() if version.approved_by else "",
        "approved_at": version.approved_at,
    }


# --- the timeline ----------------------------------------------------------------------------------


def _timeline(story: Story) -> list[Entry]:
    message = story.message
    entries = [Entry(message.created_at, "created", _created(message))]
    entries += [Entry(a.at, "attempt", attempt_line(a)) for a in story.attempts]
    entries += [Entry(e.occurred_at, "event", event_line(e)) for e in story.events]
    entries += [Entry(c.created_at, c.target_type.rpartition(".")[2].replace("sendingdomain", "domain"), change_line(c))
                for c in story.changes]
    if story.suppression is not None:
        entries.append(Entry(story.suppression.created_at, "suppression", suppression_line(story.suppression)))
    order = {"created": 0, "attempt": 1, "event": 2}
    return sorted(entries, key=lambda e: (e.at is None, e.at or message.created_at, order.get(e.kind, 3)))


def _created(message: Message) -> str:
    trigger = message.trigger
    correlation = f", correlation id {trigger.correlation_id}" if trigger.correlation_id else ""
    version = message.version
    return (
        f"queued by trigger {trigger.pk} of campaign {message.campaign_id} ({message.campaign.name}){correlation}; "
        f"version {version.variant.template.slug}/{version.variant.slug} v{version.number}"
    )


def attempt_line(attempt: MessageAttempt) -> str:
    answer = _reply(attempt.code, attempt.reply)
    via = f" via {attempt.transport}" if attempt.transport else ""
    return f"attempt {attempt.number}{via}: {attempt.outcome}" + (f": {answer}" if answer else "")


def event_line(event: FeedbackEvent) -> str:
    what = " ".join(filter(None, [event.event_type, event.kind, event.reason.replace("_", " ")]))
    status = f" {event.status}" if event.status else ""
    reply = f": {event.smtp_reply}" if event.smtp_reply else ""
    trust = "verified" if event.verified else f"unverified ({event.detail.get('unverified', 'not tied to this recipient')})"
    return f"{what}{status} from {event.source}, {trust}{reply}"


def suppression_line(suppression: Suppression) -> str:
    scope = "every domain" if suppression.sending_domain_id is None else "this sending domain"
    event = suppression.event
    cause = f", {suppression.source}" if suppression.source else ""
    if event is not None:
        cause = f", by event {event.pk} ({event.event_type} {event.reason})"
    return f"address suppressed for {scope}: {suppression.get_reason_display().lower()}{cause}"


def change_line(entry: AuditEntry) -> str:
    reason = f": {entry.reason}" if entry.reason else ""
    after = entry.data.get("after") if entry.action == "campaign.set_status" else None
    action = f"{entry.action} ({after})" if after else entry.action
    return f"{action} by {entry.actor_label}{reason}"


# --- the verdict -----------------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "an unknown time"


def _reply(code: int | None, reply: str) -> str:
    return " ".join(filter(None, [str(code) if code is not None else "", reply]))[:_LINE]


def _verdict(story: Story) -> str:
    """One line: what became of it, and why."""
    status = story.message.status
    if status == MessageStatus.SENT:
        return _sent(story)
    if status == MessageStatus.FAILED:
        return _failed(story)
    if status == MessageStatus.SUPPRESSED:
        return _suppressed(story)
    if status == MessageStatus.CANCELLED:
        cancel = next((c for c in reversed(story.changes) if c.action in ("campaign.cancel", "campaign.set_status")), None)
        when = f" on {_when(cancel.created_at)}" if cancel else ""
        return f"cancelled with its campaign{when}" + (f": {cancel.reason}" if cancel and cancel.reason else "")
    if status == MessageStatus.UNKNOWN:
        message = story.message
        if message.last_reply == LEASE_EXPIRED:
            late = next((a for a in story.attempts if a.transport != "sweeper" and a.outcome == AttemptOutcome.SENT), None)
            if late is not None:  # a slow worker, not a dead one: its 250 came after the sweeper gave up on it
                return f"unknown by its lease, but the receiving server answered 250 at {_when(late.at)}: it most likely arrived"
            return "unknown: the worker stopped mid-hand-over (its lease expired); a 250 may have been sent, so it is never re-sent"
        return f"unknown: {message.last_reply[:_LINE]} (a 250 may have been sent, so it is never re-sent)"
    if status == MessageStatus.SENDING:
        return f"being handed over now (lease until {_when(story.message.lease_expires_at)})"
    return _waiting(story)


def _after_sent(story: Story) -> FeedbackEvent | None:
    """The last verified event that says more than the 250: a bounce after all, a complaint, an unsubscribe, a delivery."""
    said = (EventType.BOUNCED, EventType.COMPLAINED, EventType.UNSUBSCRIBED, EventType.DELIVERED)
    return next((e for e in reversed(story.events) if e.verified and e.event_type in said), None)


def _sent(story: Story) -> str:
    message = story.message
    line = f"delivered to the receiving server at {_when(message.sent_at)} (250)"
    later = _after_sent(story)
    if later is None:
        return line
    if later.event_type == EventType.BOUNCED:
        return f"{line}, then bounced ({later.kind}) on {_when(later.occurred_at)}: {_reply(None, later.smtp_reply or later.status)}"
    if later.event_type == EventType.DELIVERED:
        return f"{line}; delivered to the mailbox ({later.source}) at {_when(later.occurred_at)}"
    return f"{line}; then {later.event_type} on {_when(later.occurred_at)}"


def _failed(story: Story) -> str:
    message = story.message
    if message.last_code is None:
        return f"failed before reaching a receiver: {message.last_reply[:_LINE]}"
    if message.last_reply.startswith("gave up after"):
        return f"deferred until given up: {message.last_code} {message.last_reply[:_LINE]}"
    return f"refused for good: {_reply(message.last_code, message.last_reply)}"


def _suppressed(story: Story) -> str:
    if story.message.last_reply == ERASED_NOTE:
        return "suppressed: the address was erased on request before it was sent"
    row = story.suppression
    if row is None:
        return "suppressed before sending (that suppression has since been lifted)"
    cause = f" ({row.event.smtp_reply[:_LINE]})" if row.event and row.event.smtp_reply else ""
    return f"suppressed: {row.get_reason_display().lower()} on {row.created_at:%Y-%m-%d}{cause}"


def _waiting(story: Story) -> str:
    """Queued or deferred: what holds it, if anything, and when it is due."""
    message = story.message
    held = _held(message)
    due = f"next attempt at {_when(message.not_before)}"
    if message.status == MessageStatus.DEFERRED:
        line = f"deferred ({_reply(message.last_code, message.last_reply)}), attempt {message.attempts}; {due}"
    else:
        line = f"still queued: {due}"
    return f"{line}; held: {held}" if held else line


def _held(message: Message) -> str:
    campaign: Campaign = message.campaign
    if campaign.status == CampaignStatus.PAUSED:
        return "its campaign is paused"
    domain = message.sending_domain
    if domain.paused:
        return f"the sending domain is paused ({domain.paused_reason[:_LINE]})"
    switch = SendingSwitch.objects.filter(paused=True).first()
    if switch is not None:
        return f"all sending is paused ({switch.paused_reason[:_LINE]})"
    stream = ProviderStream.objects.filter(sending_domain=domain, provider=message.provider, paused=True).first()
    if stream is not None:
        return f"the {message.provider or 'other receivers'} stream is paused ({stream.paused_reason[:_LINE]})"
    return ""
