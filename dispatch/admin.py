"""Admin for campaigns and their messages: watch progress; launch a campaign (dispatch/admin_launch.py) or use the API."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import path
from django.utils.html import format_html

from controlplane.admin_roles import ControlActions, PauseForm, ReadOnlyAdmin, ResumeForm, control_action
from dispatch.admin_launch import CampaignLaunchPages
from dispatch.cockpit import cockpit_view
from dispatch.models import Campaign, Message
from dispatch.selectors import campaign_progress
from dispatch.services.controls import campaign_pause, campaign_resume


@admin.register(Campaign)
class CampaignAdmin(CampaignLaunchPages, ControlActions, ReadOnlyAdmin):
    list_display = ["name", "template", "sending_domain", "status", "progress", "created_at"]
    readonly_fields = ["progress"]  # on the campaign's page too, which reloads itself while messages move
    list_filter = ["status", "sending_domain"]
    search_fields = ["name"]
    actions = ["pause", "resume"]

    @admin.action(description="Pause the selected campaigns", permissions=["control"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> Any:
        def apply(campaign: Campaign, data: dict[str, Any]) -> str:
            result = campaign_pause(campaign=campaign, reason=data["reason"], actor=request.user)
            if not result.changed:
                return f"{campaign} was already paused."
            return f"{campaign} paused ({result.in_flight} in flight, none handed over after this)."

        return control_action(self, request, queryset, title="Pause the selected campaigns", form_class=PauseForm, apply=apply)

    @admin.action(description="Resume the selected campaigns", permissions=["control"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> Any:
        def apply(campaign: Campaign, data: dict[str, Any]) -> str:
            result = campaign_resume(campaign=campaign, actor=request.user, reason=data["reason"])
            return f"{campaign} resumed." if result.changed else f"{campaign} was not paused."

        return control_action(self, request, queryset, title="Resume the selected campaigns", form_class=ResumeForm, apply=apply)

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


# --- the cockpit (dispatch/cockpit.py): /admin/cockpit/, linked from the admin index --------------

def _with_cockpit(site_urls: Any) -> Any:
    def get_urls() -> list[Any]:
        return [path("cockpit/", admin.site.admin_view(cockpit_view), name="cockpit"), *site_urls()]

    return get_urls


admin.site.get_urls = _with_cockpit(admin.site.get_urls)  # type: ignore[method-assign]
admin.site.index_template = "admin/cockpit/index.html"
