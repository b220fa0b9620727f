"""Admin for campaigns and their messages: watch progress; launch a campaign (dispatch/admin_launch.py) or use the API."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from access.permissions import Capability
from controlplane.admin_roles import ControlActions, PauseForm, ReadOnlyAdmin, ResumeForm, control_action
from dispatch.admin_jobs import JobAdmin  # noqa: F401 - registers the long jobs' admin (and its pages)
from dispatch.admin_launch import CampaignLaunchPages
from dispatch.cockpit import cockpit_view, site_dress
from dispatch.models import TERMINAL, WAITING, Campaign, Message, MessageStatus, Quarantine
from dispatch.results_chart import results_html
from dispatch.selectors import campaign_progress, campaign_results
from dispatch.services.campaigns import campaign_cancel, campaign_complete
from dispatch.services.controls import campaign_pause, campaign_resume
from dispatch.services.guardrails import Evidence, quarantine_restore
from dispatch.story import message_story


@admin.register(Campaign)
class CampaignAdmin(CampaignLaunchPages, ControlActions, ReadOnlyAdmin):
    list_display = ["name", "template", "sending_domain", "status", "progress", "created_at"]
    readonly_fields = ["progress", "results", "quarantined"]  # on the campaign's page too, which reloads itself while messages move
    list_filter = ["status", "sending_domain"]
    search_fields = ["name"]
    actions = ["pause", "resume", "cancel", "complete"]
    end_capability = Capability.CAMPAIGNS_END  # the cancel and complete actions (permissions=["end"])

    def has_end_permission(self, request: HttpRequest) -> bool:
        return self.allows(request, "end")

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

    @admin.action(description="Cancel the selected campaigns (their waiting messages with them)", permissions=["end"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> Any:
        def apply(campaign: Campaign, data: dict[str, Any]) -> str:
            return f"{campaign}: {campaign_cancel(campaign=campaign, actor=request.user, reason=data['reason']).detail}"

        return control_action(self, request, queryset, title="Cancel the selected campaigns", form_class=PauseForm, apply=apply)

    @admin.action(description="Mark the selected campaigns completed", permissions=["end"])
    def complete(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> Any:
        def apply(campaign: Campaign, data: dict[str, Any]) -> str:
            return f"{campaign}: {campaign_complete(campaign=campaign, actor=request.user, reason=data['reason']).detail}"

        return control_action(self, request, queryset, title="Mark the selected campaigns completed", form_class=ResumeForm, apply=apply)

    @admin.display(description="progress")
    def progress(self, campaign: Campaign) -> Any:
        counts = campaign_progress(campaign=campaign)
        total = counts["total"] or 1
        done = sum(counts[s] for s in TERMINAL)
        waiting = sum(counts[s] for s in (*WAITING, MessageStatus.SENDING))
        cancelled = format_html(", {} cancelled", counts[MessageStatus.CANCELLED]) if counts[MessageStatus.CANCELLED] else ""
        return format_html(
            '<progress max="{}" value="{}"></progress> {} sent, {} failed, {} waiting{}',
            total, done, counts["sent"], counts["failed"], waiting, cancelled,
        )


    @admin.display(description="results per variant")
    def results(self, campaign: Campaign) -> Any:
        return results_html(*campaign_results(campaign=campaign))

    @admin.display(description="quarantined variants")
    def quarantined(self, campaign: Campaign) -> Any:
        rows = list(campaign.quarantines.select_related("variant"))
        if not rows:
            return "None: every variant is within the guardrails."
        return format_html_join(
            "", '<p><a href="{}">{}</a>: {} ({})</p>',
            (
                (reverse("admin:dispatch_quarantine_change", args=[q.pk]), q.variant, Evidence(**q.evidence).summary(),
                 f"restored {q.restored_at:%Y-%m-%d %H:%M}" if q.restored_at else "weight 0 until restored")
                for q in rows
            ),
        )


@admin.register(Quarantine)
class QuarantineAdmin(ControlActions, ReadOnlyAdmin):
    """Variants the guardrails set aside, with their evidence; a marketer restores one after reading it."""

    list_display = ["variant", "campaign", "metric", "summary", "created_at", "restored_at", "restored_by"]
    list_filter = ["metric", "restored_at"]
    readonly_fields = ["summary"]
    actions = ["restore"]
    restore_capability = Capability.CAMPAIGNS_WRITE

    def has_restore_permission(self, request: HttpRequest) -> bool:
        return self.allows(request, "restore")

    @admin.display(description="evidence")
    def summary(self, quarantine: Quarantine) -> str:
        return Evidence(**quarantine.evidence).summary()

    @admin.action(description="Restore the selected variants' weights", permissions=["restore"])
    def restore(self, request: HttpRequest, queryset: QuerySet[Quarantine]) -> Any:
        def apply(quarantine: Quarantine, data: dict[str, Any]) -> str:
            quarantine_restore(quarantine=quarantine, actor=request.user, reason=data["reason"])
            return f"{quarantine.variant} restored to weight {quarantine.weight_before}."

        return control_action(self, request, queryset, title="Restore the selected variants", form_class=ResumeForm, apply=apply)


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ["recipient", "campaign", "status", "attempts", "last_code", "sent_at"]
    list_filter = ["status", "campaign"]
    search_fields = ["recipient", "uuid"]
    list_select_related = ["campaign"]
    readonly_fields = ["story"]

    def get_fields(self, request: HttpRequest, obj: Message | None = None) -> Any:
        return ["story", *(f for f in super().get_fields(request, obj) if f != "story")]  # the answer first, the row after

    @admin.display(description="story")
    def story(self, message: Message) -> Any:
        told = message_story(message)
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((f"{e.at:%Y-%m-%d %H:%M:%S}" if e.at else "", e.kind, e.summary) for e in told.timeline),
        )
        version = told.version
        origin = "AI: " + " / ".join(filter(None, [version["generator"], version["model"]])) if version["origin"] == "ai" else "human"
        parent = f", derived from v{version['parent']['number']}" if version["parent"] else ""
        return format_html(
            '<p class="verdict"><strong>{}</strong></p>'
            "<p>Version {}/{} v{} ({}, {}{})</p>"
            "<table><thead><tr><th>time (UTC)</th><th>what</th><th>detail</th></tr></thead><tbody>{}</tbody></table>",
            told.verdict, version["template"], version["variant"], str(version["number"]), version["status"], origin, parent, rows,
        )


# --- the cockpit (dispatch/cockpit.py): /admin/cockpit/, linked from the admin index --------------

def _with_cockpit(site_urls: Any) -> Any:
    def get_urls() -> list[Any]:
        return [path("cockpit/", admin.site.admin_view(cockpit_view), name="cockpit"), *site_urls()]

    return get_urls


admin.site.get_urls = _with_cockpit(admin.site.get_urls)  # type: ignore[method-assign]
site_dress(admin.site)  # Sendplane's name, and the cockpit as the home page (dispatch/cockpit.py)
