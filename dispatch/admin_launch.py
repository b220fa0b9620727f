"""The admin's "Launch a campaign" page (``campaigns.write``): a campaign and its first trigger in one form.

The API does this in two calls (create the campaign, then trigger it); here one
form names the template, the sending domain and the recipients, pasted one
address a line (``address`` or ``address,first_name``) or as the API's JSON
list of ``{"address", "context"}``. Each recipient's context is laid over the
sample values of the template's newest approved version, so a list of bare
addresses renders with the samples a marketer already saw in the preview.

``dispatch.services.launch.campaign_launch`` calls the same services as the
API inside one transaction: a trigger the service refuses takes its campaign
with it, and the form shows the service's one-line error with nothing written.
"""

from __future__ import annotations

import csv
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from access.permissions import Capability
from controlplane.admin_roles import CapabilityAccess
from controlplane.json_values import JSONValueError, json_parse
from deliverability.models import DEFAULT_PURPOSE, TRANSACTIONAL, Purpose, SendingDomain
from dispatch.models import WAITING, MessageStatus
from dispatch.selectors import campaigns_progress
from dispatch.services.campaigns import CampaignError
from dispatch.services.launch import Launch, campaign_launch
from dispatch.services.results import projected_cost
from dispatch.services.triggers import TriggerError
from templates_registry.models import Template

REJECTIONS_SHOWN = 5  # in the result message; the trigger's stored response keeps up to a thousand
PROGRESS_REFRESH_SECONDS = 3  # the campaign page reloads itself while messages are still moving


# --- the form ------------------------------------------------------------------------------------


def parse_recipients(text: str) -> list[dict[str, Any]]:
    """A JSON list of {address, context}, else lines of ``address`` or ``address,first_name`` (CSV quoting)."""
    text = text.strip()
    if text.startswith("["):
        return _json_recipients(text)
    recipients = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if len(cells) > 2:
            raise ValidationError(f"line {number}: expected address or address,first_name, got {len(cells)} columns")
        context = {"first_name": cells[1]} if len(cells) == 2 and cells[1] else {}
        recipients.append({"address": cells[0], "context": context})
    return recipients  # how many is the trigger's to judge (MAX_RECIPIENTS), as for the API


def _json_recipients(text: str) -> list[dict[str, Any]]:
    try:
        data = json_parse(text)  # deep nesting is a form error here, not the decoder's RecursionError
    except JSONValueError as exc:
        raise ValidationError(str(exc)) from None
    for index, item in enumerate(data):
        if not isinstance(item, dict) or set(item) - {"address", "context"} or "address" not in item:
            raise ValidationError(f"item {index}: expected an object with address and optional context")
        if not isinstance(item.get("context", {}), dict):
            raise ValidationError(f"item {index}: context must be an object")
    return data


class LaunchForm(forms.Form):
    name = forms.CharField(max_length=200)
    template = forms.ModelChoiceField(Template.objects.order_by("slug"))
    sending_domain = forms.ModelChoiceField(SendingDomain.objects.order_by("domain"))
    purpose = forms.ChoiceField(
        initial=DEFAULT_PURPOSE,
        required=False,  # left out: marketing, as in the API
        help_text="Marketing mail goes only to recipients who have not withdrawn from its purpose (nor, where the domain "
        "requires consent, who never gave it); transactional mail (receipts, password resets) needs no consent.",
    )
    recipients = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 14, "class": "vLargeTextField"}),
        help_text='One address a line, optionally "address,first_name"; or a JSON list of '
        '{"address": ..., "context": {...}}. Missing variables take the sample values of the '
        "template's newest approved version.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        defined = [(p.slug, p.name) for p in Purpose.objects.all()]
        purpose = self.fields["purpose"]
        assert isinstance(purpose, forms.ChoiceField)
        purpose.choices = [(DEFAULT_PURPOSE, "Marketing"), *defined, (TRANSACTIONAL, "Transactional")]

    def clean_purpose(self) -> str:
        return self.cleaned_data["purpose"] or DEFAULT_PURPOSE

    def clean_recipients(self) -> list[dict[str, Any]]:
        return parse_recipients(self.cleaned_data["recipients"])

    def launch(self, user: Any) -> Launch | None:
        """The service's refusal becomes a form error (on the field it names) and None."""
        try:
            return campaign_launch(created_by=user, **self.cleaned_data)
        except CampaignError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, str(exc))
        except TriggerError as exc:
            self.add_error(None, " ".join(str(exc).split()))
        return None


# --- the page, mixed into CampaignAdmin (dispatch/admin.py) ------------------------------------------


class CampaignLaunchPages(CapabilityAccess, admin.ModelAdmin):
    """The launch URL and button, and a campaign page that reloads itself while its messages move."""

    launch_capability = Capability.CAMPAIGNS_WRITE  # the same services as the API's create and trigger

    def has_launch_permission(self, request: HttpRequest) -> bool:
        return self.allows(request, "launch")

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_launch"
        own = [path("launch/", self.admin_site.admin_view(self.launch_view), name=name)]
        return own + super().get_urls()  # before the catch-all <path:object_id>/

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_launch": self.has_launch_permission(request)}
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "refresh_seconds": _refresh_seconds(object_id)}
        return super().change_view(request, object_id, form_url, extra_context)

    def launch_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_launch_permission(request):
            raise PermissionDenied
        form = LaunchForm(request.POST or None)
        if form.is_valid() and (launched := form.launch(request.user)) is not None:
            self._report(request, launched)
            return HttpResponseRedirect(reverse("admin:dispatch_campaign_change", args=[launched.campaign.pk]))
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "title": "Launch a campaign", "form": form,
            "price": _price_line(),
            "adminform": helpers.AdminForm(form, [(None, {"fields": list(form.fields)})], {}),  # type: ignore[arg-type]  # django-stubs: any Form works
        }
        return TemplateResponse(request, "admin/dispatch/launch.html", context)

    def _report(self, request: HttpRequest, launched: Launch) -> None:
        result = launched.response
        self.message_user(
            request,
            format_html(
                "Launched “{}”: {} accepted, {} suppressed, {} rejected{}. Its progress is below.",
                launched.campaign, result["accepted"], result["suppressed"], result["rejected"], _projected(result["accepted"]),
            ),
            messages.SUCCESS,
        )
        for rejection in result["rejections"][:REJECTIONS_SHOWN]:
            self.message_user(request, f"Rejected {rejection['address']}: {rejection['reason']}", messages.WARNING)


def _price_line() -> str:
    if not settings.SENDPLANE_COST_PER_1000:
        return ""
    return f"At today's price, {settings.SENDPLANE_COST_PER_1000:g} {settings.SENDPLANE_COST_CURRENCY} per 1,000 messages handed over."


def _projected(accepted: int) -> str:
    if not settings.SENDPLANE_COST_PER_1000:
        return ""
    return f"; projected cost {projected_cost(accepted)} {settings.SENDPLANE_COST_CURRENCY}"


def _refresh_seconds(object_id: str) -> int | None:
    if not object_id.isdigit():
        return None
    counts = campaigns_progress(campaign_ids=[int(object_id)])[int(object_id)]
    moving = sum(counts[status] for status in (*WAITING, MessageStatus.SENDING))
    return PROGRESS_REFRESH_SECONDS if moving else None
