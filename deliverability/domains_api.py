"""REST API of a sending domain's settings: create one (``POST /api/v1/domains/``), change one (``PATCH /api/v1/domains/{domain}/``);
and its sender-rules check (``GET``/``POST /api/v1/domains/{domain}/check``, ``DomainCheckApi`` below).

The routes are those of the on-call views that read domains (``dispatch/controls_api.py``:
``DomainListApi.post`` and ``DomainDetailApi.patch`` call the two functions below with their
schemas), since Django dispatches a path to one view whatever the method. Both need
``domains.configure`` (admins): a marketer must not change a domain's pace. Validation,
the DKIM check against DNS and the audit entry are the services' (``domain_create``,
``domain_update``); a refusal is the one error shape, naming the field.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.permissions import Capability, CapabilityPermission, user_can
from controlplane.api import StrictInputSerializer, error_responses, get_or_404
from deliverability.models import DomainCheck, SenderRules, SendingDomain
from deliverability.services import domain_create, domain_update
from deliverability.services.bulk_senders import is_bulk_sender, organisational_domain
from deliverability.services.sender_rules import domain_check, domain_check_report

TAG = "domains"
_DESCRIBED = {
    400: (
        "Bad input (unknown field, wrong type, a setting out of range, a DKIM key that cannot be read or does not match "
        "the record published for its selector); nothing was saved."
    ),
    401: "No or invalid token.",
    403: "Your role does not allow this (configuring domains needs admin).",
    404: "No such domain.",
}
_INT_MAX = 2_147_483_647  # PostgreSQL integer: the columns of burst and the SMTP limits


def _errors(*codes: int) -> dict[int, Any]:
    return error_responses(_DESCRIBED, *codes)


class DomainSettingsInputSerializer(StrictInputSerializer):
    # Shapes and types; the ranges and the DKIM check are the service's (deliverability/services/__init__.py).
    default_sender = serializers.CharField(max_length=254, help_text="From address at the domain, e.g. news@mail.example.com.")
    rate_per_second = serializers.FloatField(help_text="Messages per second at most (positive).")
    burst = serializers.IntegerField(max_value=_INT_MAX, help_text="Messages the token bucket holds: sent at once after a quiet spell.")
    dkim_selector = serializers.CharField(
        max_length=63, allow_blank=True, help_text="DKIM selector (s= of the signatures); empty with dkim_key_path to send unsigned."
    )
    dkim_key_path = serializers.CharField(
        max_length=500, allow_blank=True,
        help_text=(
            "Absolute path of the PEM RSA private key on the web and worker machines (the key stays out of the database). "
            "Checked at save: it must read, and its public half must be the p= published at <selector>._domainkey.<domain> "
            "when DNS answers."
        ),
    )
    warmup_schedule = serializers.ListField(child=serializers.FloatField(), help_text="Warm-up steps' rates, messages a second.")
    warmup_daily_caps = serializers.ListField(
        child=serializers.IntegerField(max_value=_INT_MAX), help_text="Warm-up steps' messages a day (optional, one per step)."
    )
    warmup_started_on = serializers.DateField(allow_null=True, help_text="Set to start the warm-up; null: no warm-up.")
    provider_rates = serializers.DictField(
        child=serializers.FloatField(), help_text='Messages per second per provider group, e.g. {"gmail": 5, "microsoft": 3}.'
    )
    smtp_connections = serializers.IntegerField(
        max_value=_INT_MAX, allow_null=True, help_text="SMTP sessions at once for this domain, per worker process; null: the relay's."
    )
    smtp_deliveries_per_connection = serializers.IntegerField(
        max_value=_INT_MAX, allow_null=True, help_text="Messages per SMTP session of this domain; null: the relay's."
    )
    consent_required = serializers.BooleanField(
        help_text="A marketing campaign's trigger refuses recipients with no consent for its purpose (a withdrawal always refuses)."
    )
    sender_rules = serializers.ChoiceField(
        choices=SenderRules.choices,
        help_text="enforce: a marketing trigger is refused while a required sender rule fails (GET .../check says which); "
        "warn: shown only.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():  # only what the caller gives is passed on: the service keeps its defaults
            field.required = False


class DomainCreateInputSerializer(DomainSettingsInputSerializer):
    domain = serializers.CharField(max_length=253, help_text="The From domain, e.g. mail.example.com.")

    class Meta:
        ref_name = "DomainCreate"  # DomainCreateRequest in the schema

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["domain"].required = self.fields["default_sender"].required = True


class DomainUpdateInputSerializer(DomainSettingsInputSerializer):
    reason = serializers.CharField(
        max_length=1000, help_text="Required (the schema of a PATCH marks nothing required): why, kept in the audit trail."
    )

    class Meta:
        ref_name = "DomainUpdate"  # PatchedDomainUpdateRequest in the schema

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = True

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if set(attrs) == {"reason"}:
            raise serializers.ValidationError("give at least one setting to change")
        return attrs


class DomainSettingsSerializer(serializers.ModelSerializer):
    dkim_dns = serializers.SerializerMethodField(
        help_text=(
            "What this save's DKIM check found in DNS: 'matches <selector>._domainkey.<domain>', or 'unchecked: <why>' when "
            "DNS did not answer (the key was accepted without its record); empty when the save did not touch DKIM."
        )
    )

    class Meta:
        model = SendingDomain
        ref_name = "DomainSettings"
        fields = [
            "domain", "default_sender", "rate_per_second", "burst", "dkim_selector", "dkim_key_path", "warmup_schedule",
            "warmup_daily_caps", "warmup_started_on", "warmup_step", "provider_rates", "smtp_connections",
            "smtp_deliveries_per_connection", "consent_required", "sender_rules", "dkim_dns",
        ]

    @extend_schema_field(serializers.CharField())
    def get_dkim_dns(self, domain: SendingDomain) -> str:
        return getattr(domain, "dkim_dns", "")  # set by domain_create / domain_update on the row they return


def _input(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


create_schema = extend_schema(
    tags=[TAG], operation_id="domains_create",
    description=(
        "Add a sending domain. Every setting is validated; a DKIM selector and key are checked at save (the key file must read "
        "as an RSA private key; its public half must be the p= published at <selector>._domainkey.<domain>: a record that DNS "
        "says does not exist, or is revoked, is refused; when DNS does not answer the key is accepted and dkim_dns says "
        "'unchecked'). Audited."
    ),
    request=DomainCreateInputSerializer,
    examples=[OpenApiExample("create", request_only=True, value={
        "domain": "mail.example.com", "default_sender": "news@mail.example.com", "rate_per_second": 20, "burst": 40,
        "dkim_selector": "s2026", "dkim_key_path": "/etc/sendplane/dkim/mail.example.com.pem",
    })],
    responses={201: DomainSettingsSerializer, **_errors(400, 401, 403)},
)

update_schema = extend_schema(
    tags=[TAG], operation_id="domains_update",
    description=(
        "Change a domain's settings (only those given), with a reason. Validated and DKIM-checked like a create; audited with "
        "the changed values before and after. Pause and resume are their own calls."
    ),
    request=DomainUpdateInputSerializer,
    examples=[OpenApiExample("slow down", request_only=True, value={"rate_per_second": 5, "reason": "Gmail deferrals, OPS-231"})],
    responses={200: DomainSettingsSerializer, **_errors(400, 401, 403, 404)},
)


def domain_create_answer(request: Request) -> Response:
    """``POST /api/v1/domains/``: validate, create through the service, answer the settings (201)."""
    data = _input(DomainCreateInputSerializer, request)
    row = domain_create(actor=request.user, **data)
    return Response(DomainSettingsSerializer(row).data, status=status.HTTP_201_CREATED)


def domain_update_answer(request: Request, domain: SendingDomain) -> Response:
    """``PATCH /api/v1/domains/{domain}/``: validate, change through the service, answer the settings."""
    data = _input(DomainUpdateInputSerializer, request)
    row = domain_update(domain=domain, actor=request.user, **data)
    return Response(DomainSettingsSerializer(row).data)


# --- the providers' sender rules (issue 18) ---------------------------------------------------------


class RuleResultSerializer(serializers.Serializer):
    rule = serializers.CharField(help_text="spf, spf_lookups, dkim, spf_or_dkim, dmarc, alignment, reverse_dns, unsubscribe.")
    status = serializers.ChoiceField(choices=["pass", "fail", "warn", "unknown"])
    required = serializers.BooleanField(  # type: ignore[assignment]  # a result's key; DRF's metaclass takes it off the class
        help_text="Required of this domain now (Gmail's rules; stricter for a bulk sender)."
    )
    message = serializers.CharField(help_text="What the check found, one line.")
    fix = serializers.CharField(allow_blank=True, help_text="What to change; empty when nothing.")

    class Meta:
        ref_name = "SenderRuleResult"


class DomainCheckSerializer(serializers.Serializer):
    domain = serializers.CharField()
    org_domain = serializers.CharField(help_text="The organisational domain of the From address (DMARC, bulk-sender status).")
    bulk_sender = serializers.BooleanField(help_text="It once sent 5,000 messages a day to Gmail: the stricter rules apply for good.")
    sender_rules = serializers.ChoiceField(
        choices=SenderRules.choices, help_text="enforce: a failing required rule stops marketing launches; warn: shown only."
    )
    checked_at = serializers.DateTimeField(allow_null=True, help_text="null: never checked (POST to check now).")
    passed = serializers.BooleanField(allow_null=True, help_text="Every required rule passes (pass or warn).")
    results = RuleResultSerializer(many=True)

    class Meta:
        ref_name = "DomainCheck"


class DomainCheckQuerySerializer(StrictInputSerializer):
    refresh = serializers.BooleanField(default=False, help_text="Run the check now (on-call and admins), as a POST does.")

    class Meta:
        ref_name = "DomainCheckQuery"


_CHECK_DESCRIPTION = (
    "The providers' sender rules for the domain: SPF covers the relay (within 10 lookups), the DKIM selector is published and "
    "matches the key, DMARC is published and aligned with the From domain, the relay's reverse DNS is forward-confirmed, "
    "one-click unsubscribe is served over https. Each result says what to fix."
)


class DomainCheckApi(APIView):
    # Reading the last check: every role. Running it (DNS lookups, a stored result): on-call and admins.
    permission_classes = (CapabilityPermission,)
    read_capability = Capability.READ
    write_capability = Capability.SENDING_CONTROL

    @extend_schema(
        tags=[TAG], operation_id="domains_check_retrieve", parameters=[DomainCheckQuerySerializer],
        description=_CHECK_DESCRIPTION + " The last stored check; ?refresh=1 runs it first (needs on-call or admin).",
        responses={200: DomainCheckSerializer, **_errors(400, 401, 403, 404)},
    )
    def get(self, request: Request, domain: str) -> Response:
        query = DomainCheckQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        if query.validated_data["refresh"] and not user_can(request.user, self.write_capability):
            raise PermissionDenied("Your role does not allow running the check (on-call or admin).")
        return _check_answer(_sending_domain(domain), refresh=query.validated_data["refresh"])

    @extend_schema(
        tags=[TAG], operation_id="domains_check_run", request=None,
        description=_CHECK_DESCRIPTION + " Runs the check now and stores it as the domain's last.",
        responses={200: DomainCheckSerializer, **_errors(401, 403, 404)},
    )
    def post(self, request: Request, domain: str) -> Response:
        return _check_answer(_sending_domain(domain), refresh=True)


def _sending_domain(name: str) -> SendingDomain:
    found: SendingDomain = get_or_404(SendingDomain.objects.all(), f"domain {name}", domain=name.lower())
    return found


def _check_answer(domain: SendingDomain, *, refresh: bool) -> Response:
    stored = DomainCheck.objects.filter(sending_domain=domain).select_related("sending_domain").first()
    report = domain_check(domain) if refresh else domain_check_report(stored) if stored is not None else None
    if report is None:
        org_domain = organisational_domain(domain.domain)
        body = {"domain": domain.domain, "org_domain": org_domain, "bulk_sender": is_bulk_sender(org_domain), "checked_at": None,
                "passed": None, "results": []}  # fmt: skip
    else:
        body = {**report.as_dict(), "checked_at": report.checked_at}
    return Response(DomainCheckSerializer({**body, "sender_rules": domain.sender_rules}).data)
