"""Campaign writes."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from controlplane.errors import ServiceError
from deliverability.models import SendingDomain
from dispatch.models import Campaign, CampaignStatus, Message, MessageStatus
from templates_registry.models import Template


class CampaignError(ServiceError):
    """A campaign change refused: one line naming the problem and, where known, the field."""


def campaign_create(*, name: str, template: Template, sending_domain: SendingDomain, created_by: Any = None) -> Campaign:
    if not name.strip():
        raise CampaignError("must not be empty", field="name")
    user = created_by if getattr(created_by, "is_authenticated", False) else None
    with transaction.atomic():
        campaign = Campaign.objects.create(name=name.strip(), template=template, sending_domain=sending_domain, created_by=user)
        data = {"template": template.slug, "sending_domain": sending_domain.domain}
        audit_record(action="campaign.create", target=campaign, actor=created_by, data=data)
    return campaign


def campaign_set_status(*, campaign: Campaign, status: str, actor: Any = None, reason: str = "") -> Campaign:
    """Set the status by hand (cancel, complete); the status it already has changes nothing."""
    if status not in CampaignStatus.values:
        raise CampaignError(f"must be one of {', '.join(CampaignStatus.values)}", field="status")
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if locked.status != status:
            data = {"before": locked.status, "after": status}
            locked.status = status
            locked.save(update_fields=["status"])
            audit_record(action="campaign.set_status", target=locked, actor=actor, reason=reason, data=data)
    campaign.status = status
    return campaign


def messages_resolve_unknown(*, campaign: Campaign, outcome: str, uuids: list[str] | None = None, actor: Any = None) -> int:
    """An operator settles ``unknown`` rows after reading the relay's log: ``sent`` or ``requeue``.

    Requeue sends again: only for Message-IDs the relay's log shows it never accepted.
    """
    if outcome not in ("sent", "requeue"):
        raise CampaignError("must be sent or requeue", field="outcome")
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
