"""Dispatch reads."""

from __future__ import annotations

from django.db.models import Count

from dispatch.models import Campaign, Message, MessageStatus


def campaign_progress(*, campaign: Campaign) -> dict[str, int]:
    """Messages of the campaign by status, every status present (0 when none)."""
    counts = dict(
        Message.objects.filter(campaign=campaign).values_list("status").annotate(n=Count("id")).values_list("status", "n")
    )
    progress = {status: counts.get(status, 0) for status in MessageStatus.values}
    progress["total"] = sum(counts.values())
    return progress
