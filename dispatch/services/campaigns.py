"""Campaign writes."""

from __future__ import annotations

from typing import Any

from deliverability.models import SendingDomain
from dispatch.models import Campaign, CampaignStatus
from templates_registry.models import Template


class CampaignError(ValueError):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message, self.field = message, field
        super().__init__(f"{field}: {message}" if field else message)


def campaign_create(*, name: str, template: Template, sending_domain: SendingDomain, created_by: Any = None) -> Campaign:
    if not name.strip():
        raise CampaignError("must not be empty", field="name")
    return Campaign.objects.create(
        name=name.strip(),
        template=template,
        sending_domain=sending_domain,
        created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
    )


def campaign_set_status(*, campaign: Campaign, status: str) -> Campaign:
    if status not in CampaignStatus.values:
        raise CampaignError(f"must be one of {', '.join(CampaignStatus.values)}", field="status")
    Campaign.objects.filter(pk=campaign.pk).update(status=status)
    campaign.status = status
    return campaign


def messages_resolve_unknown(*, campaign: Campaign, outcome: str, uuids: list[str] | None = None) -> int:
    """An operator settles ``unknown`` rows after reading the relay's log: ``sent`` or ``requeue``.

    Requeue sends again: only for Message-IDs the relay's log shows it never accepted.
    """
    from django.utils import timezone

    from dispatch.models import Message, MessageStatus

    if outcome not in ("sent", "requeue"):
        raise CampaignError("must be sent or requeue", field="outcome")
    rows = Message.objects.filter(campaign=campaign, status=MessageStatus.UNKNOWN)
    if uuids is not None:
        rows = rows.filter(uuid__in=uuids)
    note = f"resolved by an operator as {outcome} at {timezone.now():%Y-%m-%d %H:%M:%S}"
    if outcome == "sent":
        return rows.update(status=MessageStatus.SENT, sent_at=timezone.now(), last_reply=note)
    return rows.update(status=MessageStatus.QUEUED, not_before=timezone.now(), last_reply=note)
