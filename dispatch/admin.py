"""Admin for campaigns and their messages: watch progress; sending happens through the API."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.utils.html import format_html

from controlplane.admin_roles import ReadOnlyAdmin
from dispatch.models import Campaign, Message
from dispatch.selectors import campaign_progress


@admin.register(Campaign)
class CampaignAdmin(ReadOnlyAdmin):
    list_display = ["name", "template", "sending_domain", "status", "progress", "created_at"]
    list_filter = ["status", "sending_domain"]
    search_fields = ["name"]

    @admin.display(description="progress")
    def progress(self, campaign: Campaign) -> Any:
        counts = campaign_progress(campaign=campaign)
        total = counts["total"] or 1
        done = counts["sent"] + counts["failed"] + counts["suppressed"] + counts["unknown"]
        return format_html(
            '<progress max="{}" value="{}"></progress> {} sent, {} failed, {} waiting',
            total, done, counts["sent"], counts["failed"], counts["queued"] + counts["deferred"] + counts["sending"],
        )


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ["recipient", "campaign", "status", "attempts", "last_code", "sent_at"]
    list_filter = ["status", "campaign"]
    search_fields = ["recipient", "uuid"]
    list_select_related = ["campaign"]
