"""Admin for sending domains, suppressions, feedback events and per-minute counters.

Writes go through services: a manual suppression is ``suppression_add``,
lifting one (``suppressions.lift``, access/permissions.py) is ``suppression_remove``; adding a sending domain or
changing its settings (``domains.configure``) is ``domain_create`` / ``domain_update``, pausing and resuming it the
on-call actions. Events and counters are read-only here.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from access.permissions import Capability
from audit.services import audit_record
from controlplane.addresses import address_hash, validate_address
from controlplane.admin_roles import (
    ControlActions,
    DomainResumeForm,
    PauseForm,
    ReadOnlyAdmin,
    ResumeForm,
    ServiceModelForm,
    control_action,
)
from deliverability.chart_data import RANGES, reputation_chart_data
from deliverability.charts import reputation_chart
from deliverability.glance import domains_at_a_glance, troubled_streams
from deliverability.models import (
    ConsentRecord,
    DomainCheck,
    DomainMinute,
    FeedbackEvent,
    ProviderStream,
    Purpose,
    SendingDomain,
    SendingSwitch,
    Suppression,
    SuppressionReason,
)
from deliverability.selectors import domain_pause_evidence
from deliverability.services import (
    domain_create,
    domain_pause,
    domain_resume,
    domain_update,
    sending_pause_all,
    sending_resume_all,
    sending_switch,
    suppression_add,
    suppression_remove,
)
from deliverability.services.consent import consent_give, consent_withdraw
from deliverability.services.sender_rules import domain_check
from deliverability.services.streams import stream_resume


@admin.register(ProviderStream)
class ProviderStreamAdmin(ControlActions, ReadOnlyAdmin):
    """Each domain's mail to each provider group it was heard from: paused or slowed by what the provider said."""

    list_display = ["sending_domain", "shown_provider", "paused", "paused_reason", "rate_factor", "slowed_at", "updated_at"]
    list_filter = ["paused", "provider", "sending_domain"]
    list_select_related = ["sending_domain"]
    actions = ["resume"]

    @admin.display(description="provider")
    def shown_provider(self, stream: ProviderStream) -> str:
        return stream.provider or "other receivers"

    @admin.action(description="Resume the selected streams", permissions=["control"])
    def resume(self, request: HttpRequest, queryset: QuerySet[ProviderStream]) -> Any:
        def apply(stream: ProviderStream, data: dict[str, Any]) -> str:
            stream_resume(domain=stream.sending_domain, provider=stream.provider, actor=request.user, reason=data["reason"])
            return f"{stream} resumed at {stream.rate_factor:.0%} of its rate."

        return control_action(self, request, queryset, title="Resume the selected streams", form_class=ResumeForm, apply=apply)


_SETTINGS = [
    "default_sender", "rate_per_second", "burst", "dkim_selector", "dkim_key_path", "warmup_schedule", "warmup_daily_caps",
    "warmup_started_on", "provider_rates", "smtp_connections", "smtp_deliveries_per_connection", "consent_required", "sender_rules",
]
_STATE = ["paused", "paused_by", "paused_reason", "paused_at", "override_until", "warmup_step", "warmup_step_since"]


class SendingDomainForm(ServiceModelForm):
    """A domain's settings, written by ``domain_create`` / ``domain_update`` when the form validates.

    Only the service validates fully (the DKIM key against DNS), so it is
    called from validation, where its one-line refusal can still become the
    named field's error; the admin's ``save_model`` has nothing left to save.
    """

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), max_length=1000, required=False,
        help_text="Why this change: kept in the audit trail with the values before and after.",
    )

    class Meta:
        model = SendingDomain
        fields = ["domain", *_SETTINGS]
        help_texts = {
            "domain": "The From domain, e.g. mail.example.com. It cannot be renamed later.",
            "rate_per_second": "Messages per second at most.",
            "burst": "Messages the token bucket holds: what may go at once after a quiet spell.",
            "dkim_selector": "The s= of the signatures; empty, with the key path, to send unsigned.",
            "dkim_key_path": (
                "Absolute path of the PEM RSA private key on the web and worker machines (the key stays out of the database). "
                "Checked at save: it must read, and its public half must be the p= published at "
                "SELECTOR._domainkey.DOMAIN when DNS answers."
            ),
            "warmup_schedule": "Warm-up steps' rates, messages a second, as a JSON list: [1, 5, 20]. Empty list: no warm-up.",
            "warmup_daily_caps": "Optionally, each step's messages a day, as a JSON list: [500, 5000, 50000].",
            "warmup_started_on": "Set to start the warm-up; the step advances a day at a time while the domain is healthy.",
            "provider_rates": 'Messages per second per provider group, as a JSON object: {"gmail": 5, "microsoft": 3}.',
            "consent_required": (
                "Marketing triggers refuse recipients with no consent for the campaign's purpose (a withdrawal always refuses)."
            ),
            "sender_rules": "Enforce: a marketing trigger is refused while a required sender rule fails; warn: the check only shows it.",
        }
        labels = {
            "dkim_selector": "DKIM selector", "dkim_key_path": "DKIM key path",
            "smtp_connections": "SMTP connections", "smtp_deliveries_per_connection": "SMTP deliveries per connection",
        }
        widgets = {"dkim_key_path": forms.TextInput(attrs={"class": "vLargeTextField"})}  # a whole path stays readable

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        for name, empty in (("warmup_schedule", []), ("warmup_daily_caps", []), ("provider_rates", {})):
            if name in data and data[name] is None:  # an emptied JSON box
                data[name] = empty
        if self.instance.pk is not None and not data.get("reason", "").strip():
            self.add_error("reason", "Say why: the change is audited with its reason.")
        return data

    def write(self) -> SendingDomain:
        data = self.cleaned_data
        if self.instance.pk is None:
            return domain_create(domain=data["domain"], actor=self.user, **{name: data[name] for name in _SETTINGS})
        changes = {name: data[name] for name in self.changed_data if name in _SETTINGS}
        current = SendingDomain.objects.get(pk=self.instance.pk)  # construct_instance already put the new values on instance
        return domain_update(domain=current, actor=self.user, reason=data["reason"].strip(), **changes)


class PausedByFilter(admin.SimpleListFilter):
    """Who paused it, in words: Django's filter of the raw column offers a link with no text for "" (running)."""

    title = "paused by"
    parameter_name = "paused_by"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("detector", "the detector"), ("person", "a person")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[SendingDomain]) -> QuerySet[SendingDomain]:
        if self.value() == "detector":
            return queryset.filter(paused_by="detector")
        if self.value() == "person":
            return queryset.filter(paused=True).exclude(paused_by="detector")
        return queryset


@admin.register(SendingDomain)
class SendingDomainAdmin(ControlActions, ReadOnlyAdmin):
    """Every role reads; admins (``domains.configure``) add domains and change their settings through the services."""

    form = SendingDomainForm
    add_capability = change_capability = Capability.DOMAINS_CONFIGURE
    list_display = ["domain", "default_sender", "rate_per_second", "burst", "paused", "paused_by", "paused_reason"]
    actions = ["pause", "resume", "check_now"]

    @admin.action(description="Check the sender rules now", permissions=["control"])
    def check_now(self, request: HttpRequest, queryset: QuerySet[SendingDomain]) -> None:
        for domain in queryset:  # DNS lookups: a few seconds a domain at most (SENDPLANE_DNS_TIMEOUT_SECONDS per lookup)
            report = domain_check(domain)
            failing = ", ".join(f"{result.rule} ({result.status})" for result in report.failing())
            if report.passed:
                self.message_user(request, f"{domain}: every required sender rule passes.", messages.SUCCESS)
            else:
                self.message_user(request, f"{domain}: required sender rules not passing: {failing}.", messages.WARNING)

    @admin.action(description="Pause the selected domains", permissions=["control"])
    def pause(self, request: HttpRequest, queryset: QuerySet[SendingDomain]) -> Any:
        def apply(domain: SendingDomain, data: dict[str, Any]) -> str:
            outcome = domain_pause(domain=domain, reason=data["reason"], actor=request.user)
            return f"{domain} paused." if outcome.changed else f"{domain} was already paused."

        return control_action(self, request, queryset, title="Pause the selected domains", form_class=PauseForm, apply=apply)

    @admin.action(description="Resume the selected domains", permissions=["control"])
    def resume(self, request: HttpRequest, queryset: QuerySet[SendingDomain]) -> Any:
        def apply(domain: SendingDomain, data: dict[str, Any]) -> str:
            outcome = domain_resume(
                domain=domain, actor=request.user, ramp_minutes=data["ramp_minutes"], force=data["force"], reason=data["reason"],
                override_minutes=data.get("override_minutes"),
            )
            if not outcome.changed:
                return f"{domain} was not paused."
            until = f", the detector overridden until {outcome.domain.override_until:%H:%M} UTC" if outcome.domain.override_until else ""
            return f"{domain} resumed, ramping over {outcome.domain.ramp_minutes} min{until}."

        return control_action(self, request, queryset, title="Resume the selected domains", form_class=DomainResumeForm, apply=apply)

    list_filter = ["paused", PausedByFilter]
    search_fields = ["domain"]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        sets: list[Any] = [
            (None, {"fields": ["domain", "default_sender", "rate_per_second", "burst"]}),
            ("DKIM", {"fields": ["dkim_selector", "dkim_key_path"]}),
            ("Warm-up", {"fields": ["warmup_schedule", "warmup_daily_caps", "warmup_started_on"]}),
            ("Per provider group", {"fields": ["provider_rates"]}),
            ("SMTP sessions (empty: the relay's limits)", {"fields": ["smtp_connections", "smtp_deliveries_per_connection"]}),
            ("Policies for marketing mail", {"fields": ["consent_required", "sender_rules"]}),
        ]
        if obj is None:
            return sets
        # Above the form: the domain at a glance, with its pause or resume button (change_form.html, glance.py).
        # Then what on-call reads next (the chart and the evidence, the state in detail), and the settings last,
        # with "Why" right above the save button.
        why = [("Why", {"fields": ["reason"]})] if self.has_change_permission(request, obj) else []
        return [
            ("Reputation (1 hour to 30 days)", {"fields": ["reputation", "evidence"]}),
            ("State in detail", {"fields": _STATE}),
            ("Sender rules (the last check; 'Check the sender rules now' is an action)", {"fields": ["last_sender_check"]}),
            *sets,
            *why,
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None) -> Any:
        domain = self.get_object(request, unquote(object_id))
        glance = None if domain is None else domains_at_a_glance([domain], switch=sending_switch())[0]
        context = {
            "glance": glance, "can_control": self.has_control_permission(request),
            "streams": [] if domain is None else list(troubled_streams(domain)), **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, context)

    def control_urls(self) -> list[URLPattern]:
        """``<id>/pause/`` and ``<id>/resume/``: the page's buttons lead to the list's actions for that one domain."""
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path(f"<int:object_id>/{verb}/", self.admin_site.admin_view(self.control_view), {"verb": verb}, name=f"{prefix}_{verb}")
            for verb in ("pause", "resume")
        ]

    def control_view(self, request: HttpRequest, object_id: int, verb: str) -> Any:
        """The action's own reason form and service call (``pause`` / ``resume`` above), then back to the domain's page."""
        if not self.has_control_permission(request):
            raise PermissionDenied
        domain = get_object_or_404(SendingDomain, pk=object_id)
        action = self.pause if verb == "pause" else self.resume
        answer = action(request, SendingDomain.objects.filter(pk=domain.pk))
        return answer or HttpResponseRedirect(reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[domain.pk]))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        shown = ["reputation", "evidence"]
        return shown if obj is None else ["domain", *_STATE, "last_sender_check", *shown]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

    def save_model(self, request: HttpRequest, obj: SendingDomain, form: Any, change: bool) -> None:
        # The form's validation already wrote it through domain_create / domain_update; what DNS said is left to show.
        note = getattr(obj, "dkim_dns", "")
        if note.startswith("unchecked"):
            self.message_user(request, f"DKIM key saved without checking its DNS record ({note}).", messages.WARNING)
        elif note:
            self.message_user(request, f"DKIM key checked: its public half {note}.", messages.INFO)

    @admin.display(description="chart")
    def reputation(self, domain: SendingDomain) -> Any:
        return reputation_chart(domain)

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_chart"
        own = [path("<int:object_id>/chart.json", self.admin_site.admin_view(self.chart_view), name=name)]
        own += self.control_urls()  # pause and resume from the domain's page
        return own + super().get_urls()  # before the catch-all <path:object_id>/

    def chart_view(self, request: HttpRequest, object_id: int) -> JsonResponse:
        """What the reputation chart draws (deliverability/chart_data.py), for ``?range=`` one of ``chart_data.RANGES``."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        domain = get_object_or_404(SendingDomain, pk=object_id)
        chosen = request.GET.get("range", "24h")
        if chosen not in RANGES:
            message = f"one of {', '.join(RANGES)}"
            return JsonResponse({"error": f"range: {message}", "fields": {"range": [message]}}, status=400)
        return JsonResponse(reputation_chart_data(domain=domain, range_name=chosen))

    @admin.display(description="last check")
    def last_sender_check(self, domain: SendingDomain) -> Any:
        stored = DomainCheck.objects.filter(sending_domain=domain).first()
        if stored is None:
            return "Never checked."
        verdict = "every required rule passes" if stored.passed else "a required rule does not pass"
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", map(_rule_cells, stored.results))
        return format_html(
            "<p>{} UTC: {}</p><table><tr><th>status</th><th>rule</th><th></th><th>found</th><th>fix</th></tr>{}</table>",
            f"{stored.checked_at:%Y-%m-%d %H:%M}", verdict, rows,
        )

    @admin.display(description="detector evidence")
    def evidence(self, domain: SendingDomain) -> Any:
        rows = domain_pause_evidence(domain=domain)[:10]
        if not rows:
            return "The detector never paused this domain."
        return format_html_join(
            "",
            "<p>{}: {}{}</p>",
            ((row.created_at.strftime("%Y-%m-%d %H:%M"), row.summary(), " (resumed)" if row.resumed_at else "") for row in rows),
        )


def _rule_cells(result: dict[str, Any]) -> tuple[str, ...]:
    status, rule, message, fix = (str(result.get(key, "")) for key in ("status", "rule", "message", "fix"))
    return status.upper(), rule, "required" if result.get("required") else "optional", message, fix


class AddressSearch(admin.ModelAdmin):
    """A search term that is an address also finds it in every other spelling (case, Unicode or punycode domain)."""

    hash_field = ""

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        found, duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if "@" in term and " " not in term:
            found = found | queryset.filter(**{self.hash_field: address_hash(term)})
        return found, duplicates


class SuppressionAddForm(forms.ModelForm):
    """A manual suppression: the address, optionally one domain, and why (kept as the source)."""

    source = forms.CharField(label="Why", max_length=150, required=False)

    class Meta:
        model = Suppression
        fields = ["address", "sending_domain", "source"]

    def clean_address(self) -> str:
        address = self.cleaned_data["address"].strip()
        validate_address(address)  # the service's own rule, as a form error rather than an exception
        return address

    def validate_unique(self) -> None:
        """Adding an address that is already suppressed is fine: the service returns the existing row."""


@admin.register(Suppression)
class SuppressionAdmin(AddressSearch, ReadOnlyAdmin):
    hash_field = "address_hash"
    list_display = ["shown_address", "sending_domain", "reason", "source", "cause", "created_by", "created_at"]
    list_filter = ["reason", "sending_domain"]
    search_fields = ["address"]
    list_select_related = ["sending_domain", "event", "created_by"]
    form = SuppressionAddForm
    actions = ["lift"]
    add_capability = Capability.SUPPRESSIONS_ADD
    delete_capability = lift_capability = Capability.SUPPRESSIONS_LIFT  # the delete page and the action

    @admin.display(description="address")
    def shown_address(self, row: Suppression) -> str:
        return row.address or "(erased)"

    @admin.display(description="event")
    def cause(self, row: Suppression) -> Any:
        if row.event is None:
            return "-"
        url = reverse("admin:deliverability_feedbackevent_change", args=[row.event.pk])
        return format_html('<a href="{}">{} {} {}</a>', url, row.event.event_type, row.event.reason, row.event.status)

    def has_lift_permission(self, request: HttpRequest) -> bool:
        return self.allows(request, "lift")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # lifting goes through the service (the "lift" action)
        return actions

    def save_model(self, request: HttpRequest, obj: Suppression, form: Any, change: bool) -> None:
        row, _ = suppression_add(  # the form checked the address; the service cannot refuse it now
            address=obj.address, reason=SuppressionReason.MANUAL, sending_domain=obj.sending_domain,
            source=f"admin: {request.user.get_username()}: {obj.source}".rstrip(": "), created_by=request.user,
        )
        obj.pk, obj.reason, obj.created_at = row.pk, row.reason, row.created_at

    def delete_model(self, request: HttpRequest, obj: Suppression) -> None:
        suppression_remove(suppression=obj, removed_by=request.user)

    @admin.action(description="Lift the selected suppressions (admins only)", permissions=["lift"])
    def lift(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> None:
        rows = list(queryset)
        for row in rows:
            suppression_remove(suppression=row, removed_by=request.user)
        self.message_user(request, f"{len(rows)} suppression(s) lifted.")


@admin.register(FeedbackEvent)
class FeedbackEventAdmin(AddressSearch, ReadOnlyAdmin):
    hash_field = "recipient_hash"
    list_display = [
        "occurred_at", "event_type", "kind", "reason", "status", "shown_recipient", "sending_domain", "source", "matched_by", "verified",
    ]
    list_filter = ["verified", "event_type", "kind", "reason", "source", "sending_domain"]
    search_fields = ["recipient", "=message_uuid", "status"]
    list_select_related = ["sending_domain"]
    date_hierarchy = "occurred_at"

    @admin.display(description="recipient")
    def shown_recipient(self, event: FeedbackEvent) -> str:
        return event.recipient or "(erased or none)"


@admin.register(DomainMinute)
class DomainMinuteAdmin(ReadOnlyAdmin):
    list_display = ["minute", "sending_domain", *DomainMinute.COUNTS]
    list_filter = ["sending_domain"]
    date_hierarchy = "minute"
    list_select_related = ["sending_domain"]


@admin.register(SendingSwitch)
class SendingSwitchAdmin(ControlActions, ReadOnlyAdmin):
    """The global kill switch: one row; its actions stop or restart every domain."""

    list_display = ["__str__", "paused_reason", "paused_by", "paused_at"]
    actions = ["pause_all", "resume_all"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[SendingSwitch]:
        sending_switch()  # the row exists before anyone needs to press it
        return super().get_queryset(request)

    @admin.action(description="Pause ALL sending", permissions=["control"])
    def pause_all(self, request: HttpRequest, queryset: QuerySet[SendingSwitch]) -> Any:
        def apply(_: SendingSwitch, data: dict[str, Any]) -> str:
            _, changed = sending_pause_all(reason=data["reason"], actor=request.user)
            return "All sending paused." if changed else "All sending was already paused."

        return control_action(self, request, queryset[:1], title="Pause ALL sending", form_class=PauseForm, apply=apply)

    @admin.action(description="Resume all sending", permissions=["control"])
    def resume_all(self, request: HttpRequest, queryset: QuerySet[SendingSwitch]) -> Any:
        def apply(_: SendingSwitch, data: dict[str, Any]) -> str:
            return "All sending resumed." if sending_resume_all(actor=request.user, reason=data["reason"])[1] else "Sending was not paused."

        return control_action(self, request, queryset[:1], title="Resume all sending", form_class=ResumeForm, apply=apply)


# --- Consent (issue 18) ------------------------------------------------------------------------------


@admin.register(Purpose)
class PurposeAdmin(ReadOnlyAdmin):
    """Named marketing purposes (a newsletter, product offers); ``marketing`` and ``transactional`` are built in."""

    list_display = ["slug", "name", "description", "created_at"]
    fields = ["slug", "name", "description"]
    add_capability = change_capability = Capability.CONSENT_RECORD

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["slug"] if obj is not None else []  # consent records and campaigns name it

    def save_model(self, request: HttpRequest, obj: Purpose, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        audit_record(action="purpose.change" if change else "purpose.create", target=obj, actor=request.user,
                     data={"slug": obj.slug, "name": obj.name})


class ConsentGiveForm(ServiceModelForm):
    """Record a consent through ``consent_give`` (the service validates address, purpose and evidence)."""

    class Meta:
        model = ConsentRecord
        fields = ["address", "purpose", "lawful_basis", "source", "evidence", "given_at"]
        help_texts = {"purpose": "marketing, or a purpose defined under Purposes.", "given_at": "When it was given."}

    def write(self) -> ConsentRecord:
        data = self.cleaned_data
        row, _ = consent_give(
            address=data["address"], purpose=data["purpose"], lawful_basis=data["lawful_basis"], source=data["source"],
            evidence=data["evidence"], given_at=data["given_at"], created_by=self.user,
        )
        return row


class WithdrawForm(forms.Form):
    note = forms.CharField(max_length=150, required=False, help_text="Why, or where it was asked (kept as the withdrawal's source).")


@admin.register(ConsentRecord)
class ConsentRecordAdmin(AddressSearch, ReadOnlyAdmin):
    hash_field = "address_hash"
    list_display = ["shown_address", "purpose", "lawful_basis", "source", "given_at", "withdrawn_at", "withdrawn_source"]
    list_filter = ["purpose", "lawful_basis", ("withdrawn_at", admin.EmptyFieldListFilter)]
    search_fields = ["address"]
    form = ConsentGiveForm
    actions = ["withdraw"]
    add_capability = Capability.CONSENT_RECORD
    withdraw_capability = Capability.SUPPRESSIONS_ADD  # a withdrawal only stops mail, as a suppression does

    @admin.display(description="address")
    def shown_address(self, row: ConsentRecord) -> str:
        return row.address or "(erased)"

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

    def save_model(self, request: HttpRequest, obj: ConsentRecord, form: Any, change: bool) -> None:
        """The form's service call saved it."""

    def has_withdraw_permission(self, request: HttpRequest) -> bool:
        return self.allows(request, "withdraw")

    @admin.action(description="Withdraw the selected consents (an unsubscribe from their purpose)", permissions=["withdraw"])
    def withdraw(self, request: HttpRequest, queryset: QuerySet[ConsentRecord]) -> Any:
        def apply(row: ConsentRecord, data: dict[str, Any]) -> str:
            if not row.address:
                return f"{row} is erased: its withdrawal stands by hash."
            consent_withdraw(
                address=row.address, purpose=row.purpose, withdrawn_by=request.user,
                source=f"admin: {request.user.get_username()}: {data['note']}".rstrip(": "),
            )
            return f"{row.address}: consent to {row.purpose} withdrawn."

        return control_action(self, request, queryset, title="Withdraw the selected consents", form_class=WithdrawForm, apply=apply)
