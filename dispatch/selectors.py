"""Dispatch reads."""

from __future__ import annotations

from django.db.models import Count

from dispatch.models import Campaign, Message, MessageStatus


def campaign_progress(*, campaign: Campaign) -> dict[str, int]:
    """Messages of the campaign by status, every status present (0 when none)."""
    return campaigns_progress(campaign_ids=[campaign.pk])[campaign.pk]


def campaigns_progress(*, campaign_ids: list[int]) -> dict[int, dict[str, int]]:
    """``campaign_progress`` of many campaigns in one aggregate query (the cockpit, the admin list)."""
    progress: dict[int, dict[str, int]] = {pk: dict.fromkeys([*MessageStatus.values, "total"], 0) for pk in campaign_ids}
    counts = Message.objects.filter(campaign__in=campaign_ids).values_list("campaign_id", "status").annotate(n=Count("id")).order_by()
    for campaign_id, status, n in counts:
        progress[campaign_id][status] += n
        progress[campaign_id]["total"] += n
    return progress
