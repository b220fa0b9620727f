"""Campaign writes: create, and the lifecycle by hand (cancel, complete); pause and resume are dispatch.services.controls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from audit.services import audit_record
from controlplane import metrics
from controlplane.errors import ServiceError
from controlplane.locking import LockOptions, lock_no_key
from deliverability.models import DEFAULT_PURPOSE, TRANSACTIONAL, SendingDomain
from deliverability.services.consent import purpose_known
from deliverability.services.handover import hand_overs_wait
from dispatch.models import TERMINAL, WAITING, Campaign, CampaignStatus, Message, MessageStatus
from templates_registry.models import Template

# A cancel ends a campaign's waiting messages this many at a time, each batch its own short transaction:
# a campaign of millions never holds one long transaction (about 50 ms a batch).
CANCEL_BATCH = 5_000

# The statuses a campaign may be cancelled or completed from. Draft -> running is a trigger's, pause and resume are
# dispatch.services.controls'; cancelled and completed are final.
_FROM: dict[str, frozenset[str]] = {
    CampaignStatus.CANCELLED: frozenset({CampaignStatus.DRAFT, CampaignStatus.RUNNING, CampaignStatus.PAUSED}),
    CampaignStatus.COMPLETED: frozenset({CampaignStatus.RUNNING, CampaignStatus.PAUSED}),
}


class CampaignError(ServiceError):
    """A campaign change refused: one line naming the problem and, where known, the field."""


class CampaignConflict(CampaignError):
    """The campaign's state refuses the change (a finished campaign, messages still waiting): 409."""

    status = 409


@dataclass(frozen=True)
class LifecycleResult:
    campaign: Campaign
    changed: bool  # False: it already was in the asked state and nothing was written
    cancelled: int  # messages this call ended as cancelled
    in_flight: int  # messages being handed over when the call returned: each ends with its real outcome
    detail: str  # one line saying what happened


def campaign_create(
    *, name: str, template: Template, sending_domain: SendingDomain, purpose: str = DEFAULT_PURPOSE, created_by: Any = None
) -> Campaign:
    if not name.strip():
        raise CampaignError("must not be empty", field="name")
    _purpose_checked(purpose, template)
    user = created_by if getattr(created_by, "is_authenticated", False) else None
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=name.strip(), template=template, sending_domain=sending_domain, purpose=purpose, created_by=user
        )
        data = {"template": template.slug, "sending_domain": sending_domain.domain, "purpose": purpose}
        audit_record(action="campaign.create", target=campaign, actor=created_by, data=data)
    return campaign


def _purpose_checked(purpose: str, template: Template) -> None:
    if not purpose_known(purpose):
        raise CampaignError(f"unknown purpose {purpose[:64]!r}: transactional, marketing, or one defined in the admin", field="purpose")
    problem = purpose_template_problem(purpose, template)
    if problem:
        raise CampaignError(problem, field="template")


def purpose_template_problem(purpose: str, template: Template) -> str | None:
    """The one rule: marketing mail needs a marketing template, the kind checked for Sendplane's unsubscribe link.

    Asked at create, and again by each trigger (the template's kind may have changed since).
    """
    if purpose != TRANSACTIONAL and template.kind == TRANSACTIONAL:
        return f"template {template.slug!r} is transactional: a {purpose} campaign needs a marketing template (with the unsubscribe link)"
    return None


def campaign_set_status(*, campaign: Campaign, status: str, actor: Any = None, reason: str = "") -> Campaign:
    """Cancel or complete by name, audited as ``campaign.set_status`` (before, after); the status it has changes nothing.

    The same transitions as ``campaign_cancel`` (waiting messages end cancelled) and ``campaign_complete``.
    """
    if status == CampaignStatus.CANCELLED:
        _cancel(campaign, actor=actor, reason=reason, action="campaign.set_status")
    elif status == CampaignStatus.COMPLETED:
        _complete(campaign, actor=actor, reason=reason, action="campaign.set_status")
    else:
        raise CampaignError("must be cancelled or completed (pause and resume have their own calls; a trigger starts it)", field="status")
    return campaign


def campaign_cancel(*, campaign: Campaign, actor: Any, reason: str) -> LifecycleResult:
    """Stop the campaign for good: its waiting messages end ``cancelled``; when this returns none is handed over.

    The status flips first, in its own transaction (FOR NO KEY UPDATE, as a
    pause: claims take only running campaigns' rows and every chunk that
    starts later sees it), then this waits for the chunks being handed over
    (``hand_overs_wait``), then ends the waiting rows in batches. Messages
    ``sending`` meanwhile end with their real outcome; a worker that would
    put one back in the queue (deferred, or never handed over) ends it
    ``cancelled`` instead (dispatch.services.worker). Idempotent.
    """
    if not reason.strip():
        raise CampaignError("a reason is required", field="reason")
    return _cancel(campaign, actor=actor, reason=reason.strip(), action="campaign.cancel")


def campaign_complete(*, campaign: Campaign, actor: Any, reason: str = "") -> LifecycleResult:
    """Mark a running or paused campaign whose messages have all ended completed (no trigger is taken after); idempotent."""
    return _complete(campaign, actor=actor, reason=reason.strip(), action="campaign.complete")


def _cancel(campaign: Campaign, *, actor: Any, reason: str, action: str) -> LifecycleResult:
    def counted(locked: Campaign) -> dict[str, Any]:
        if action == "campaign.set_status":
            return {}  # that entry has always said before and after only
        counts = _counts(locked, [*WAITING, MessageStatus.SENDING])
        return {"waiting": sum(counts.get(s, 0) for s in WAITING), "in_flight": counts.get(MessageStatus.SENDING, 0)}

    target = CampaignStatus.CANCELLED
    flipped = _transition(campaign, target, actor=actor, reason=reason, action=action, check=counted, lock=lock_no_key())
    if flipped is None and not Message.objects.filter(campaign=campaign, status__in=WAITING).exists():
        return LifecycleResult(campaign, False, 0, _in_flight(campaign), f"campaign {campaign.pk} was already cancelled; nothing changed.")
    hand_overs_wait(Campaign, campaign.pk)  # the chunks handing its messages over when it flipped have ended
    cancelled = _waiting_cancel(campaign)
    if flipped is None:  # already cancelled, yet rows waited (a trigger that read the campaign before the cancel)
        data = {"before": target, "after": target, "waiting": cancelled}
        audit_record(action=action, target=campaign, actor=actor, reason=reason, data=data)
    in_flight = _in_flight(campaign)
    detail = (
        f"campaign {campaign.pk} cancelled: {cancelled} waiting message(s) cancelled, {in_flight} in flight end with their "
        "real outcome; none is handed over after this."
    )
    return LifecycleResult(campaign, True, cancelled, in_flight, detail)


def _complete(campaign: Campaign, *, actor: Any, reason: str, action: str) -> LifecycleResult:
    def all_ended(locked: Campaign) -> dict[str, Any]:
        counts = _counts(locked)
        left = {status: n for status, n in counts.items() if status not in TERMINAL}
        if left:
            listed = ", ".join(f"{n} {status}" for status, n in sorted(left.items()))
            raise CampaignConflict(
                f"campaign {locked.pk} has {sum(left.values())} message(s) not ended ({listed}): cancel it, or wait until they end",
                field="status",
            )
        return {"messages": counts} if action != "campaign.set_status" else {}

    # FOR UPDATE: waits for triggers inserting rows into it (their foreign key holds it FOR KEY SHARE), then counts.
    flipped = _transition(campaign, CampaignStatus.COMPLETED, actor=actor, reason=reason, action=action, check=all_ended, lock={})
    if flipped is None:
        return LifecycleResult(campaign, False, 0, 0, f"campaign {campaign.pk} was already completed; nothing changed.")
    return LifecycleResult(campaign, True, 0, 0, f"campaign {campaign.pk} completed: every message has ended.")


def _transition(
    campaign: Campaign, status: str, *, actor: Any, reason: str, action: str, check: Callable[[Campaign], dict[str, Any]],
    lock: LockOptions,
) -> str | None:
    """The one place a campaign's status changes by hand: locked, checked, written, audited; returns the status before.

    None: it already had ``status`` (nothing written). ``check`` refuses (raises) or returns more of the audit's data.
    """
    with transaction.atomic():
        locked = Campaign.objects.select_for_update(**lock).get(pk=campaign.pk)
        campaign.status = locked.status
        if locked.status == status:
            return None
        if locked.status not in _FROM[status]:
            raise CampaignConflict(f"campaign {locked.pk} is {locked.status}; it cannot be {status}", field="status")
        data = {"before": locked.status, "after": status, **check(locked)}
        locked.status = campaign.status = status
        locked.save(update_fields=["status"])
        audit_record(action=action, target=locked, actor=actor, reason=reason, data=data)
    return str(data["before"])


def _counts(campaign: Campaign, statuses: list[str] | None = None) -> dict[str, int]:
    rows = Message.objects.filter(campaign=campaign)
    if statuses is not None:
        rows = rows.filter(status__in=statuses)
    return dict(rows.values_list("status").annotate(n=Count("id")).order_by())


def _waiting_cancel(campaign: Campaign) -> int:
    """End the campaign's waiting rows as cancelled, CANCEL_BATCH at a time (the message_campaign_status index finds them)."""
    domain = SendingDomain.objects.only("domain").get(pk=campaign.sending_domain_id).domain
    total = 0
    while True:
        ids = list(Message.objects.filter(campaign=campaign, status__in=WAITING).values_list("id", flat=True)[:CANCEL_BATCH])
        if not ids:
            return total
        n = Message.objects.filter(id__in=ids, status__in=WAITING).update(status=MessageStatus.CANCELLED, lease_expires_at=None)
        metrics.messages_cancelled(domain=domain, count=n)
        total += n


def _in_flight(campaign: Campaign) -> int:
    return Message.objects.filter(campaign=campaign, status=MessageStatus.SENDING).count()


def messages_resolve_unknown(*, campaign: Campaign, outcome: str, uuids: list[str] | None = None, actor: Any = None) -> int:
    """An operator settles ``unknown`` rows after reading the relay's log: ``sent`` or ``requeue``.

    Requeue sends again: only for Message-IDs the relay's log shows it never accepted, and only while the campaign
    may still send (a cancelled or completed campaign's queue is never claimed).
    """
    if outcome not in ("sent", "requeue"):
        raise CampaignError("must be sent or requeue", field="outcome")
    if outcome == "requeue" and campaign.status in (CampaignStatus.CANCELLED, CampaignStatus.COMPLETED):
        raise CampaignConflict(f"campaign {campaign.pk} is {campaign.status}: its messages are never sent again", field="outcome")
    rows = Message.objects.filter(campaign=campaign, status=MessageStatus.UNKNOWN)
    if uuids is not None:
        rows = rows.filter(uuid__in=uuids)
    now = timezone.now()
    note = f"resolved by an operator as {outcome} at {now:%Y-%m-%d %H:%M:%S}"
    with transaction.atomic():
        if outcome == "sent":
            changed = rows.update(status=MessageStatus.SENT, sent_at=now, last_reply=note)
        else:
            changed = rows.update(status=MessageStatus.QUEUED, not_before=now, last_reply=note)
        if changed:
            data = {"outcome": outcome, "messages": changed, "named": None if uuids is None else len(uuids)}
            audit_record(action="messages.resolve_unknown", target=campaign, actor=actor, data=data)
    return changed
