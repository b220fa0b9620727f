"""Admin access from the API roles: every role reads; writes are opted into per ModelAdmin.

Also the pause/resume admin actions' machinery: an intermediate page asks for
the reason, then the action calls the same service as the on-call API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from controlplane.api import ROLE_ADMIN, ROLE_ONCALL, user_roles


class ReadOnlyAdmin(admin.ModelAdmin):
    """Visible to every role, changeable by none: state changes go through services, not forms."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(user_roles(request.user))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(user_roles(request.user))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- pause / resume actions: a reason first, then the same service the API calls ---------------

CONTROL_ROLES = frozenset({ROLE_ONCALL, ROLE_ADMIN})


class PauseForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=1000, help_text="Kept on the object and in the audit trail.")


class ResumeForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=1000, required=False)


class DomainResumeForm(ResumeForm):
    ramp_minutes = forms.IntegerField(min_value=0, required=False, help_text="From a tenth of the rate to all of it; empty: the default.")
    force = forms.BooleanField(required=False, help_text="Needed to lift a pause by the anomaly detector: read its evidence first.")


class ControlActions:
    """Mixed into a ModelAdmin: actions marked ``permissions=["control"]`` are for on-call and admins only."""

    def has_control_permission(self, request: HttpRequest) -> bool:
        return bool(user_roles(request.user) & CONTROL_ROLES)


def control_action(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    title: str,
    form_class: type[forms.Form],
    apply: Callable[[Any, dict[str, Any]], str],
) -> TemplateResponse | None:
    """Ask why (an intermediate page), then apply to each selected row; a refusal is a message, not an error page."""
    form = form_class(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        for obj in queryset:
            try:
                modeladmin.message_user(request, apply(obj, form.cleaned_data), messages.SUCCESS)
            except ValueError as exc:  # the services' bad-input errors (DeliverabilityError, CampaignError, ResumeRefused)
                modeladmin.message_user(request, f"{obj}: {exc}", messages.ERROR)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title, "form": form, "queryset": queryset, "opts": modeladmin.model._meta,
        "action": request.POST.get("action", ""), "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/deliverability/control_form.html", context)
