"""The registry's admin, for marketers: browse, preview, diff, add, score and approve versions.

Every write goes through ``services``. A form's validation ends by calling the
service, so a template that does not render comes back as a form error on the
field it names and nothing is saved. Versions are immutable: their change pages
are read-only, and "new version from this" derives a new one.

Access follows the permission table (access/permissions.py), not Django model
permissions: the role groups carry none. Adding and changing need
``templates.write``, approving and re-scoring ``templates.approve``; every role looks.

Approval is the gate of issue 4: ``services.version_approve`` refuses a version
that is not scored, failed a blocking pre-send check or scores at or over its
template's threshold, or (four-eyes) whose creator is the approver, and the
admin shows that one-line reason. "Retire" and "Roll back to this version"
(issue 17) ask for a reason first, like the pause actions, then call
``services.version_retire`` / ``version_rollback``; both need ``templates.approve``,
as does turning a template's four-eyes approval on or off. Re-scoring is
published by task name: the registry never imports deliverability (the imports
run dispatch -> deliverability -> templates_registry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, QuerySet
from django.forms.fields import InvalidJSONInput
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from access.permissions import Capability
from audit.services import audit_record
from controlplane.admin_roles import CapabilityAccess, PauseForm, ServiceModelForm, control_action
from controlplane.json_values import BoundedJSONField
from templates_registry import selectors, services
from templates_registry.models import AssessmentState, Template, Variant, VariantVersion, VersionAssessment
from templates_registry.preview import APPEARANCE_LABELS, Appearance, Preview, PreviewError, RecipientContext
from templates_registry.rendering import RenderError

CONTENT_FIELDS: tuple[str, ...] = ("subject", "sender_name", "preheader", "mjml_body", "text_body", "variables")
_PROVENANCE_FIELDS = ("origin", "generator", "model_name", "prompt", "prompt_hash", "generation_params")
_LINEAGE_FIELDS = ("parent", "created_by", "created_at")
_SOURCE_TEXTAREAS = ("mjml_body", "text_body")
_TEMPLATES = "admin/templates_registry/variantversion"


# --- Access ---------------------------------------------------------------------------


class RegistryAccess(CapabilityAccess):
    """Permission answers from the table; mixed into every ModelAdmin and inline here."""

    add_capability: Capability | None = Capability.TEMPLATES_WRITE
    change_capability: Capability | None = Capability.TEMPLATES_WRITE
    delete_capability = None  # foreign keys are PROTECT and there is no delete service: nothing is deleted here


# --- Forms that write through a service --------------------------------------------------


class VariablesField(BoundedJSONField):
    """Sample values, edited as a JSON object; the service checks them against the template."""

    default_error_messages = {
        "invalid": 'Enter the sample values as a JSON object, e.g. {"first_name": "Ana"}.',
        "not_object": 'Sample values must be a JSON object of name to value, e.g. {"first_name": "Ana"}.',
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs["show_hidden_initial"] = False  # set for the model's callable default; only clutters the form
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value  # re-shown as typed, so it can be fixed
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)

    def clean(self, value: Any) -> Any:
        data = super().clean(value)
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValidationError(self.error_messages["not_object"], code="not_object")
        return data


class TemplateForm(ServiceModelForm):
    class Meta:
        model = Template
        fields = ("slug", "name", "description", "spam_threshold", "four_eyes")

    def write(self) -> Template:
        data = self.cleaned_data
        return services.template_create(
            slug=data["slug"], name=data["name"], description=data["description"], spam_threshold=data["spam_threshold"],
            four_eyes=data.get("four_eyes", True), created_by=self.user,  # the field is an admin's (TemplateAdmin.get_fields)
        )


class VariantForm(ServiceModelForm):
    class Meta:
        model = Variant
        fields = ("template", "slug", "weight")

    def write(self) -> Variant:
        data = self.cleaned_data
        if self.instance.pk is not None:  # a change: only the weight is editable
            return services.variant_set_weight(variant=self.instance, weight=data["weight"], actor=self.user)
        return services.variant_create(template=data["template"], slug=data["slug"], weight=data["weight"], created_by=self.user)


class VersionContentForm(ServiceModelForm):
    """A version's sources and sample values; subclasses say which service writes them."""

    class Meta:
        model = VariantVersion
        fields = CONTENT_FIELDS
        field_classes = {"variables": VariablesField}
        widgets = {
            name: forms.Textarea(attrs={"rows": 20, "class": "vLargeTextField sp-code"}) for name in _SOURCE_TEXTAREAS
        } | {"variables": forms.Textarea(attrs={"rows": 8, "class": "vLargeTextField sp-code"})}
        labels = {"mjml_body": "MJML body", "text_body": "Plain text body", "variables": "Sample values"}
        help_texts = {
            "text_body": "Leave empty to derive the plain text part from the HTML.",
            "variables": 'Every variable the template uses, with a sample value: {"first_name": "Ana"}. '
            "Previews and spam scoring render with these.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in _SOURCE_TEXTAREAS:
            field = self.fields.get(name)
            if isinstance(field, forms.CharField):  # a TextField's form field
                field.strip = False  # keep sources byte-for-byte, so unchanged means unchanged

    # Browsers submit textareas with CRLF line ends; without this every line of a
    # version edited in the admin would differ from one pushed through the API.
    def clean_mjml_body(self) -> str:
        return _unix_newlines(self.cleaned_data["mjml_body"])

    def clean_text_body(self) -> str:
        return _unix_newlines(self.cleaned_data["text_body"])

    def content(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in CONTENT_FIELDS}


class VersionAddForm(VersionContentForm):
    class Meta(VersionContentForm.Meta):
        fields = ("variant", *CONTENT_FIELDS)

    def write(self) -> VariantVersion:
        return services.version_create(variant=self.cleaned_data["variant"], created_by=self.user, **self.content())


class VersionDeriveForm(VersionContentForm):
    """The content of ``source``, edited into the next version of the same variant."""

    def __init__(self, *args: Any, source: VariantVersion, user: Any, **kwargs: Any) -> None:
        self.source, self.user = source, user
        super().__init__(*args, initial={name: getattr(source, name) for name in CONTENT_FIELDS}, **kwargs)

    def write(self) -> VariantVersion:
        content = self.content()
        if all(content[name] == getattr(self.source, name) for name in CONTENT_FIELDS):
            raise services.RegistryError(f"nothing changed from v{self.source.number}; edit a field first")
        return services.version_derive(source=self.source, created_by=self.user, **content)


class ContextField(VariablesField):
    default_error_messages = {
        "invalid": 'Enter the context as a JSON object, e.g. {"first_name": "Ana"}.',
        "not_object": 'The context must be a JSON object of name to value, e.g. {"first_name": "Ana"}.',
    }


class PreviewContextForm(forms.Form):
    """A context to render the preview with: rendered, never saved."""

    context = ContextField(
        label="Context (JSON)", help_text="The values the template fills in. Edit them and render: nothing is saved."
    )


class PreviewRecipientForm(forms.Form):
    recipient = forms.CharField(
        label="A real recipient: message UUID or address",
        max_length=320,
        help_text="Renders with the context a message of this version was sent with. Personal data: "
        "only roles with campaigns.write may, and nothing is saved.",
    )


def _unix_newlines(text: str) -> str:
    return text.replace("\r\n", "\n")


class ServiceWrites:
    """For ModelAdmins whose form writes through a service (see ServiceModelForm)."""

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)  # type: ignore[misc]
        return type(form.__name__, (form,), {"user": request.user})

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        pass  # the form's validation already wrote it through the service


# --- Spam scores ---------------------------------------------------------------------------

# A score this close under the threshold is shown amber: a small edit could tip it over.
AMBER_MARGIN = 1.0


@dataclass(frozen=True)
class Badge:
    """How a version's assessment reads at a glance: green, amber, red, or grey when there is no score."""

    colour: str
    label: str
    why: str  # one line: what decided the colour

    def html(self) -> SafeString:
        return format_html('<span class="sp-badge sp-badge-{}" title="{}">{}</span>', self.colour, self.why, self.label)


def assessment_of(version: VariantVersion) -> VersionAssessment | None:
    try:
        return version.assessment
    except VersionAssessment.DoesNotExist:
        return None


def score_badge(assessment: VersionAssessment | None, threshold: float) -> Badge:
    if assessment is None or assessment.state == AssessmentState.PENDING:
        return Badge("grey", "pending", "waiting to be scored")
    if assessment.state == AssessmentState.NOT_SCORED:
        return Badge("grey", "not scored", assessment.not_scored_reason or "not scored")
    score, blocking = assessment.score, assessment.blocking_failures
    if score is None:
        return Badge("red", "no score", "scored without a score")
    label = f"{score:g}"
    if blocking:
        return Badge("red", label, f"pre-send check {blocking[0].get('name')} failed")
    if score >= threshold:
        return Badge("red", label, f"at or over the template's threshold {threshold:g}")
    warnings = [c for c in assessment.checks if not c.get("passed")]
    if score >= threshold - AMBER_MARGIN:
        return Badge("amber", label, f"within {AMBER_MARGIN:g} of the template's threshold {threshold:g}")
    if warnings:
        return Badge("amber", label, f"under the threshold {threshold:g}; warning: {warnings[0].get('name')}")
    return Badge("green", label, f"under the template's threshold {threshold:g}")


def version_badge(version: VariantVersion) -> Badge:
    return score_badge(assessment_of(version), float(version.variant.template.spam_threshold))


@dataclass(frozen=True)
class ScoreRow:
    """One version in a template's comparison by score."""

    version: VariantVersion
    assessment: VersionAssessment | None
    badge: Badge
    blocking_failures: int
    approvable_reason: str | None

    @property
    def sort_key(self) -> tuple[bool, float, str, int]:
        score = self.assessment.score if self.assessment and self.assessment.state == AssessmentState.SCORED else None
        return (score is None, score or 0.0, self.version.variant.slug, -self.version.number)


def score_rows(template: Template) -> list[ScoreRow]:
    """Every version of every variant of ``template``, lowest spam score first, unscored last."""
    versions = VariantVersion.objects.filter(variant__template=template).select_related(
        "variant__template", "assessment", "approved_by"
    )
    return sorted((_score_row(version) for version in versions), key=lambda row: row.sort_key)


def _score_row(version: VariantVersion) -> ScoreRow:
    assessment = assessment_of(version)
    return ScoreRow(
        version=version,
        assessment=assessment,
        badge=score_badge(assessment, float(version.variant.template.spam_threshold)),
        blocking_failures=len(assessment.blocking_failures) if assessment else 0,
        approvable_reason=services.version_approvable(version=version),
    )


# --- Templates and variants ----------------------------------------------------------------


def _versions_link(variant: Variant, count: int) -> str:
    url = reverse("admin:templates_registry_variantversion_changelist")
    return format_html('<a href="{}?variant__id__exact={}">{} version(s)</a>', url, variant.pk, count)


class VariantInline(RegistryAccess, admin.TabularInline):
    """Read-only: variants are added on their own page, where the service validates them."""

    model = Variant
    fields = readonly_fields = ("slug", "weight", "versions")
    extra = max_num = 0
    can_delete = False
    show_change_link = True
    add_capability = change_capability = None

    def get_queryset(self, request: HttpRequest) -> QuerySet[Variant]:
        return super().get_queryset(request).annotate(version_count=Count("versions"))

    @admin.display(description="Versions")
    def versions(self, obj: Variant) -> str:
        return _versions_link(obj, obj.version_count)  # type: ignore[attr-defined]


@admin.register(Template)
class TemplateAdmin(ServiceWrites, RegistryAccess, admin.ModelAdmin):
    form = TemplateForm
    list_display = ("slug", "name", "spam_threshold", "four_eyes", "variant_count", "updated_at")
    search_fields = ("slug", "name")
    inlines = [VariantInline]
    actions = ["four_eyes_on", "four_eyes_off"]
    change_capability = None  # only four-eyes changes after creation, through the actions below
    policy_capability = Capability.APPROVAL_POLICY  # who may approve: four-eyes on or off

    def has_policy_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.allows(request, "policy")

    @admin.action(description="Turn four-eyes approval on", permissions=["policy"])
    def four_eyes_on(self, request: HttpRequest, queryset: QuerySet[Template]) -> None:
        self._four_eyes(request, queryset, True)

    @admin.action(description="Turn four-eyes approval off (creators may approve their own versions)", permissions=["policy"])
    def four_eyes_off(self, request: HttpRequest, queryset: QuerySet[Template]) -> None:
        self._four_eyes(request, queryset, False)

    def _four_eyes(self, request: HttpRequest, queryset: QuerySet[Template], on: bool) -> None:
        for template in queryset:
            services.template_set_four_eyes(template=template, four_eyes=on, actor=request.user)
        self.message_user(request, f"Four-eyes approval {'on' if on else 'off'} for {queryset.count()} template(s).", messages.SUCCESS)

    def get_fields(self, request: HttpRequest, obj: Template | None = None) -> Any:
        fields = list(super().get_fields(request, obj))
        if not self.has_policy_permission(request):  # four-eyes stays on: switching it is an admin's decision
            fields = [name for name in fields if name != "four_eyes"]
        return fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Template]:
        return super().get_queryset(request).annotate(variant_count=Count("variants"))

    def get_inlines(self, request: HttpRequest, obj: Template | None) -> list[Any]:
        return self.inlines if obj is not None else []

    @admin.display(description="Variants", ordering="variant_count")
    def variant_count(self, obj: Template) -> int:
        return obj.variant_count  # type: ignore[attr-defined]

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_scores"
        own = [path("<int:object_id>/scores/", self.admin_site.admin_view(self.scores_view), name=name)]
        return own + super().get_urls()  # before the catch-all <path:object_id>/

    def scores_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """All versions of the template's variants side by side, by spam score: how an A/B test is vetted."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        template = get_object_or_404(Template, pk=object_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": template,
            "title": f"Spam scores of {template}",
            "rows": score_rows(template),
            "version_opts": VariantVersion._meta,
        }
        return TemplateResponse(request, "admin/templates_registry/template/scores.html", context)


@admin.register(Variant)
class VariantAdmin(ServiceWrites, RegistryAccess, admin.ModelAdmin):
    form = VariantForm
    list_display = ("__str__", "template", "weight", "versions")
    list_filter = ("template",)
    search_fields = ("slug", "template__slug", "template__name")
    list_select_related = ("template",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Variant]:
        return super().get_queryset(request).annotate(version_count=Count("versions"))

    def get_readonly_fields(self, request: HttpRequest, obj: Variant | None = None) -> tuple[str, ...]:
        return ("template", "slug") if obj is not None else ()

    @admin.display(description="Versions", ordering="version_count")
    def versions(self, obj: Variant) -> str:
        return _versions_link(obj, obj.version_count)  # type: ignore[attr-defined]


# --- Versions ----------------------------------------------------------------------------


def diff_rows(lines: list[str]) -> list[tuple[str, str]]:
    """(css class, line) pairs, so the template can colour a unified diff."""
    return [(_diff_class(index, line), line) for index, line in enumerate(lines)]


def _diff_class(index: int, line: str) -> str:
    if index < 2:  # the ---/+++ header, by position: a removed line "-- x" also reads "--- x"
        return "diff-file"
    if line.startswith("@@"):
        return "diff-hunk"
    return {"+": "diff-add", "-": "diff-del"}.get(line[:1], "diff-ctx")


@admin.register(VariantVersion)
class VariantVersionAdmin(ServiceWrites, RegistryAccess, admin.ModelAdmin):
    form = VersionAddForm
    change_form_template = f"{_TEMPLATES}/change_form.html"
    list_display = ("__str__", "subject", "status", "spam_score", "origin", "created_by", "created_at", "tools")
    list_filter = ("status", "origin", "variant__template")
    search_fields = ("subject", "variant__template__slug", "variant__slug")
    list_select_related = ("variant__template", "created_by", "assessment")
    actions = ["approve_selected", "rescore_selected", "retire_selected", "rollback_to_selected"]
    add_fieldsets = ((None, {"fields": ("variant", *CONTENT_FIELDS)}),)
    view_fieldsets = (
        (None, {"fields": ("variant", "number", "status", "status_changed_at", "content_hash")}),
        ("Content", {"fields": CONTENT_FIELDS}),
        ("Provenance", {"fields": _PROVENANCE_FIELDS + _LINEAGE_FIELDS}),
    )

    change_capability = None  # immutable: the change page is a read-only view, and a POST to it is refused
    approve_capability = Capability.TEMPLATES_APPROVE  # the action, the button, and asking for a new score
    # A real recipient's context in the preview is personal data: those who may trigger sends to them, not on-call.
    recipient_context_capability = Capability.CAMPAIGNS_WRITE

    def get_fieldsets(self, request: HttpRequest, obj: VariantVersion | None = None) -> Any:
        return self.view_fieldsets if obj is not None else self.add_fieldsets

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "variant":  # its label names the template
            kwargs["queryset"] = Variant.objects.select_related("template")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_approve_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.allows(request, "approve")

    def has_recipient_context_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.allows(request, "recipient_context")

    @admin.display(description="Spam score")
    def spam_score(self, obj: VariantVersion) -> str:
        badge = version_badge(obj)
        if badge.colour == "grey" and badge.label == "not scored":
            return format_html("{} {}", badge.html(), badge.why)
        return badge.html()

    @admin.action(description="Approve selected versions", permissions=["approve"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[VariantVersion]) -> None:
        approved = 0
        for version in queryset.select_related("variant__template"):
            if self._approve(request, version):
                approved += 1
        if approved:
            self.message_user(request, f"Approved {approved} version(s).", messages.SUCCESS)

    @admin.action(description="Re-score the selected versions", permissions=["approve"])
    def rescore_selected(self, request: HttpRequest, queryset: QuerySet[VariantVersion]) -> TemplateResponse:
        """Confirm, then the page posts the ids to dispatch's job page, which shows the progress (by URL name only:
        the registry imports nothing of dispatch)."""
        versions = queryset.select_related("variant__template").order_by("variant__template__slug", "variant__slug", "number")
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "title": "Re-score the selected versions",
            "ids": list(versions.values_list("pk", flat=True)), "shown": versions[:50],  # named; the rest counted
        }
        return TemplateResponse(request, f"{_TEMPLATES}/rescore.html", context)

    @admin.action(description="Retire selected versions (new triggers stop sending them)", permissions=["approve"])
    def retire_selected(self, request: HttpRequest, queryset: QuerySet[VariantVersion]) -> Any:
        def apply(version: VariantVersion, data: dict[str, Any]) -> str:
            services.version_retire(version=version, actor=request.user, reason=data["reason"])
            live = selectors.version_latest_approved(variant=version.variant)
            now = f"now sends v{live.number}" if live else "has no approved version left: it is out of rotation"
            return f"Retired {version}; {version.variant} {now}."

        return control_action(self, request, queryset, title="Retire the selected versions", form_class=PauseForm, apply=apply)

    @admin.action(description="Roll back to this version", permissions=["approve"])
    def rollback_to_selected(self, request: HttpRequest, queryset: QuerySet[VariantVersion]) -> Any:
        variants = list(queryset.values_list("variant_id", flat=True))
        if len(set(variants)) != len(variants):
            self.message_user(request, "Select one version per variant to roll back to.", messages.ERROR)
            return None

        def apply(version: VariantVersion, data: dict[str, Any]) -> str:
            done = services.version_rollback(variant=version.variant, to_version=version, actor=request.user, reason=data["reason"])
            retired = ", ".join(f"v{old.number}" for old in done.retired) or "nothing"
            return f"Rolled {version.variant} back to v{version.number} (retired {retired})."

        queryset = queryset.select_related("variant__template")
        return control_action(self, request, queryset, title="Roll back to the selected versions", form_class=PauseForm, apply=apply)

    def _approve(self, request: HttpRequest, version: VariantVersion) -> bool:
        """Through the gate; a refusal is shown as its one-line reason and changes nothing."""
        try:
            approved = services.version_approve(version=version, approved_by=request.user)
        except services.RegistryError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return False
        self.log_change(request, approved, "Approved.")
        return True

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        version = self.get_object(request, unquote(object_id))
        if version is not None:
            extra_context = {**(extra_context or {}), **self._assessment_context(request, version)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _assessment_context(self, request: HttpRequest, version: VariantVersion) -> dict[str, Any]:
        assessment = assessment_of(version)
        threshold = float(version.variant.template.spam_threshold)
        return {
            "assessment": assessment,
            "badge": score_badge(assessment, threshold),
            "threshold": threshold,
            "rules": sorted(assessment.rules, key=lambda rule: -float(rule.get("points") or 0)) if assessment else [],
            "checks": assessment.checks if assessment else [],
            "approvable_reason": services.version_approvable(version=version, approver=request.user),
            "can_approve": self.has_approve_permission(request),
            "is_live": _is_live(version),
        }

    def approve_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if not self.has_approve_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        version = self._viewable(request, object_id)
        if self._approve(request, version):
            self.message_user(request, f"Approved {version}.", messages.SUCCESS)
        return HttpResponseRedirect(self._url("change", version))

    def rescore_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if not self.has_approve_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        version = self._viewable(request, object_id)
        _publish_rescore(version.pk)
        self.message_user(request, f"{version} is queued for scoring; reload this page in a moment.", messages.INFO)
        return HttpResponseRedirect(self._url("change", version))

    @admin.display(description="")
    def tools(self, obj: VariantVersion) -> str:
        links = [(self._url("preview", obj), "Preview"), (self._url("diff", obj), "Diff")]
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        own = [
            path("<int:object_id>/preview/", view(self.preview_view), name=self._url_name("preview")),
            path("<int:object_id>/diff/", view(self.diff_view), name=self._url_name("diff")),
            path("<int:object_id>/derive/", view(self.derive_view), name=self._url_name("derive")),
            path("<int:object_id>/approve/", view(self.approve_view), name=self._url_name("approve")),
            path("<int:object_id>/rescore/", view(self.rescore_view), name=self._url_name("rescore")),
        ]
        return own + super().get_urls()  # before the catch-all <path:object_id>/

    def preview_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """Desktop and mobile frames, light or dark, where Gmail clips, the plain text; with the sample values.

        A POST renders with an edited context, or with a real message's (``recipient``: personal data, so
        ``recipient_context_capability``). Nothing is saved. A context that does not fit shows one line and the
        sample values' render; a version that no longer renders shows its line and nothing else.
        """
        if request.method not in ("GET", "HEAD", "POST"):
            return HttpResponseNotAllowed(["GET", "POST"])
        version = self._viewable(request, object_id)
        ask = _PreviewAsk(context_form=PreviewContextForm(initial={"context": version.variables}))
        if request.method == "POST" and "recipient" in request.POST:
            if not self.has_recipient_context_permission(request):
                raise PermissionDenied
            ask.from_recipient(version, PreviewRecipientForm(request.POST))
            if ask.recipient is not None:  # a person's data was shown: who looked, at whose (by message), and why not
                audit_record(
                    action="preview.recipient_context", target=version, actor=request.user,
                    data={"message": ask.recipient.message},
                )
        elif request.method == "POST":
            ask.from_context(PreviewContextForm(request.POST))
        preview, error = _preview_or_error(version, ask.context)
        if error and ask.context is not None:  # that context does not fit: its line, and the sample values' render
            ask.refuse(error, "recipient" if ask.recipient else "context")
            preview, error = _preview_or_error(version, None)
        context = {
            **ask.page_context(),
            "preview": preview,
            "error": error,
            "dark_frames": {str(a): html for a, html in preview.frames.items() if a != Appearance.LIGHT} if preview else {},
            "appearances": [(str(a), label) for a, label in APPEARANCE_LABELS.items()],
            "can_read_recipients": self.has_recipient_context_permission(request),
        }
        return self._page(request, "preview", version, f"Preview of {version}", context)

    def diff_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        version = self._viewable(request, object_id)
        against = self._diff_base(request, version)
        diffs = [] if against is None else selectors.version_diff(old=against, new=version)
        context = {
            "against": against,
            "diffs": [(name, diff_rows(lines)) for name, lines in diffs],
            "choices": self._comparable(version),
        }
        return self._page(request, "diff", version, f"Changes in {version}", context)

    def derive_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        source = self._viewable(request, object_id)
        data = request.POST if request.method == "POST" else None
        form = VersionDeriveForm(data, source=source, user=request.user)
        if form.is_bound:
            with transaction.atomic():  # the version and its log entry, or neither
                if form.is_valid():
                    return self._derived(request, source, form.instance)
        return self._page(request, "derive", source, f"New version from {source}", {"form": form})

    def _derived(self, request: HttpRequest, source: VariantVersion, created: VariantVersion) -> HttpResponse:
        self.log_addition(request, created, [{"added": {}}])
        self.message_user(request, f"Created {created} from v{source.number}.", messages.SUCCESS)
        return HttpResponseRedirect(self._url("change", created))

    def _viewable(self, request: HttpRequest, object_id: int) -> VariantVersion:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(self.get_queryset(request).select_related("variant__template"), pk=object_id)

    def _diff_base(self, request: HttpRequest, version: VariantVersion) -> VariantVersion | None:
        """The version named by ?against=, else the parent, else the previous number."""
        against = request.GET.get("against", "")
        if against:
            if not against.isdigit():
                raise Http404("against must be a version id")
            return get_object_or_404(VariantVersion, pk=int(against))
        if version.parent is not None:
            return version.parent
        return selectors.version_list(variant=version.variant).filter(number__lt=version.number).first()

    def _comparable(self, version: VariantVersion) -> QuerySet[VariantVersion]:
        # Any version of the same template: comparing variant A with B is how an A/B test is read.
        others = VariantVersion.objects.filter(variant__template_id=version.variant.template_id).exclude(pk=version.pk)
        return others.select_related("variant__template").order_by("variant__slug", "-number")

    def _page(
        self, request: HttpRequest, name: str, version: VariantVersion, title: str, extra: dict[str, Any]
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": version,
            "title": title,
            "has_add_permission": self.has_add_permission(request),
            **extra,
        }
        return TemplateResponse(request, f"{_TEMPLATES}/{name}.html", context)

    def _url_name(self, view: str) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_{view}"

    def _url(self, view: str, version: VariantVersion) -> str:
        return reverse(f"admin:{self._url_name(view)}", args=[version.pk])


@dataclass
class _PreviewAsk:
    """What a preview request asks to render with, and the one line it is refused with if it is."""

    context_form: PreviewContextForm
    recipient_form: PreviewRecipientForm | None = None
    context: dict[str, Any] | None = None  # None: the sample values
    recipient: RecipientContext | None = None
    problem: str | None = None
    problem_on: str | None = None  # the field the problem is about: "context" or "recipient"

    def from_context(self, form: PreviewContextForm) -> None:
        self.context_form = form
        if form.is_valid():
            self.context = form.cleaned_data["context"]
        else:
            self.refuse(str(form.errors["context"][0]), "context")

    def from_recipient(self, version: VariantVersion, form: PreviewRecipientForm) -> None:
        self.recipient_form = form
        if not form.is_valid():
            return self.refuse(str(form.errors["recipient"][0]), "recipient")
        try:
            found = selectors.version_recipient_context(version=version, reference=form.cleaned_data["recipient"])
        except PreviewError as exc:
            return self.refuse(exc.message, "recipient")
        if found.erased:
            return self.refuse(
                f"message {found.message} keeps no context: its recipient was erased, or it is past retention", "recipient"
            )
        self.context, self.recipient = found.context, found
        self.context_form = PreviewContextForm(initial={"context": found.context})  # to edit on from there
        return None

    def refuse(self, problem: str, field: str) -> None:
        self.problem, self.problem_on = " ".join(problem.split()), field
        self.context, self.recipient = None, None

    def page_context(self) -> dict[str, Any]:
        return {
            "context_form": self.context_form,
            "recipient_form": self.recipient_form or PreviewRecipientForm(),
            "recipient": self.recipient,
            "edited": self.context is not None and self.recipient is None,
            "problem": self.problem,
            "problem_on": self.problem_on,
        }


def _preview_or_error(version: VariantVersion, context: dict[str, Any] | None) -> tuple[Preview | None, str | None]:
    try:
        return selectors.version_preview(version=version, context=context), None
    except RenderError as exc:
        return None, str(exc)


def _is_live(version: VariantVersion) -> bool:
    live = selectors.version_latest_approved(variant=version.variant)
    return live is not None and live.pk == version.pk


def _publish_rescore(version_id: int) -> None:
    """Ask the sandbox to score the version again, by task name once committed (see the module docstring)."""
    from celery import current_app

    transaction.on_commit(lambda: current_app.send_task(services.ASSESS_TASK, args=[version_id]))
