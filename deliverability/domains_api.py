"""REST API of a sending domain's settings: create one (``POST /api/v1/domains/``), change one (``PATCH /api/v1/domains/{domain}/``).

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
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api import StrictInputSerializer, error_responses
from deliverability.models import SendingDomain
from deliverability.services import domain_create, domain_update

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
            "smtp_deliveries_per_connection", "dkim_dns",
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
