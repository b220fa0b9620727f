"""Admin access from the permission table (access/permissions.py): every role reads; writes are opted into per ModelAdmin.

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

from access.permissions import Capability, user_can
from controlplane.errors import ServiceError


class CapabilityAccess:
    """Mixed into a ModelAdmin or inline: ``has_<x>_permission`` asks the table for the class's ``<x>_capability``.

    The same holds for action permissions (``permissions=["control"]`` -> ``control_capability``), so
    tests/test_permission_table.py can check every answer against the table. None means nobody, superusers
    included: the admin writes only where a service exists for it.
    """

    view_capability: Capability | None = Capability.READ
    add_capability: Capability | None = None
    change_capability: Capability | None = None
    delete_capability: Capability | None = None

    def allows(self, request: HttpRequest, name: str) -> bool:
        capability: Capability | None = getattr(self, f"{name}_capability")
        return capability is not None and user_can(request.user, capability)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.allows(request, "view")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.allows(request, "view")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.allows(request, "add")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.allows(request, "change")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.allows(request, "delete")


class ReadOnlyAdmin(CapabilityAccess, admin.ModelAdmin):
    """Visible to every role, changeable by none: state changes go through services, not forms."""


# --- pause / resume actions: a reason first, then the same service the API calls ---------------


def add_service_error(form: forms.BaseForm, exc: ServiceError) -> None:
    """Show a service's one-line refusal on the field it names (without the name: the label says it), or above the form."""
    if exc.field in form.fields:
        form.add_error(exc.field, exc.message)
    else:
        form.add_error(None, str(exc))


class ServiceModelForm(forms.ModelForm):
    """Validation ends with the service call that writes; ``instance`` becomes its result.

    Only the service validates fully (it renders a version, reads a DKIM key and
    asks DNS), so its refusal must surface while the form can still show it,
    one line on the field it names. The admin's changeform view runs in a
    transaction, and the ModelAdmin's ``save_model`` has nothing left to save.
    """

    user: Any = None  # the request's user, set by the ModelAdmin's get_form

    def write(self) -> Any:
        raise NotImplementedError

    def _post_clean(self) -> None:
        super()._post_clean()  # type: ignore[misc]  # django-stubs: BaseModelForm._post_clean (private) is not in the stubs
        if self.errors:  # those of clean() and the model's validation, already collected
            return
        try:
            self.instance = self.write()
        except ServiceError as exc:
            add_service_error(self, exc)


class PauseForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), max_length=1000, help_text="Kept on the object and in the audit trail."
    )


class ResumeForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=1000, required=False)


class DomainResumeForm(ResumeForm):
    ramp_minutes = forms.IntegerField(min_value=0, required=False, help_text="From a tenth of the rate to all of it; empty: the default.")
    force = forms.BooleanField(required=False, help_text="Needed to lift a pause by the anomaly detector: read its evidence first.")
    override_minutes = forms.IntegerField(
        min_value=1, required=False,
        help_text="Or override a detector pause for this many minutes (with a reason): it pauses again then if the detector still says so.",
    )


class ControlActions(CapabilityAccess):
    """Mixed into a ModelAdmin: actions marked ``permissions=["control"]`` pause and resume sending."""

    control_capability = Capability.SENDING_CONTROL

    def has_control_permission(self, request: HttpRequest) -> bool:
        return self.allows(request, "control")


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
            except ServiceError as exc:  # a refusal (a detector pause without force, a finished campaign...)
                modeladmin.message_user(request, f"{obj}: {exc}", messages.ERROR)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title, "form": form, "queryset": queryset, "opts": modeladmin.model._meta,
        "action": request.POST.get("action", ""), "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/deliverability/control_form.html", context)
