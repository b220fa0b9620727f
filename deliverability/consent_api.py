"""REST API of consent: purposes, consent records, withdrawal.

Every role reads. Marketers and admins record consent (it lets mail go where a
domain requires consent); every role may withdraw one, as it may suppress: a
withdrawal only stops mail.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from access.permissions import Capability
from controlplane.addresses import address_hash, validate_address
from controlplane.api import JsonObjectField, Pagination, StrictInputSerializer, error_responses, paginated_response
from deliverability.api import DeliverabilityApi
from deliverability.models import ConsentRecord, LawfulBasis, Purpose
from deliverability.services.consent import consent_give, consent_withdraw

TAG = "consent"
_DESCRIBED = {
    400: "Bad input (unknown field, wrong type, not an address, unknown purpose); nothing was saved.",
    401: "No or invalid token.",
    403: "Your role does not allow this.",
}


def _errors(*codes: int) -> dict[int, Any]:
    return error_responses(_DESCRIBED, *codes)


class ConsentApi(DeliverabilityApi):
    """Role checks as every deliverability view; the consent views' own error descriptions (``_errors``)."""


class PurposeOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Purpose
        fields = ["slug", "name", "description", "created_at"]
        ref_name = "Purpose"


class ConsentOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = ConsentRecord
        fields = ["id", "address", "purpose", "lawful_basis", "source", "evidence", "given_at", "withdrawn_at", "withdrawn_source"]
        ref_name = "Consent"


class PurposeListApi(ConsentApi):
    @extend_schema(
        tags=[TAG],
        operation_id="purposes_list",
        description="The marketing purposes defined in the admin; `marketing` and `transactional` are built in.",
        responses={200: PurposeOutputSerializer(many=True), **_errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        return Response(PurposeOutputSerializer(Purpose.objects.all(), many=True).data)


class ConsentListCreateApi(ConsentApi):
    write_capability = Capability.CONSENT_RECORD
    pagination_class = Pagination

    class InputSerializer(StrictInputSerializer):
        address = serializers.CharField(max_length=320, validators=[validate_address])
        purpose = serializers.SlugField(max_length=64, help_text="`marketing`, or a purpose defined in the admin.")
        lawful_basis = serializers.ChoiceField(choices=LawfulBasis.values, required=False, default=LawfulBasis.CONSENT)
        source = serializers.CharField(  # type: ignore[assignment]  # drf-stubs: a declared field, not Field.source
            max_length=200, help_text="Where it was given: a sign-up form, an import."
        )
        evidence = JsonObjectField(required=False, default=dict, help_text="What proves it (at most 4 KB of JSON).")
        given_at = serializers.DateTimeField(required=False, default=None, help_text="When; default now. Never in the future.")

        class Meta:
            ref_name = "ConsentCreate"

    @extend_schema(
        tags=[TAG],
        operation_id="consents_list",
        description="Consent records, newest first.",
        parameters=[OpenApiParameter("address", str, description="Only this address."), OpenApiParameter("purpose", str)],
        responses={200: ConsentOutputSerializer(many=True), **_errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        return paginated_response(self, request, _filtered(request).order_by("-given_at", "-id"), ConsentOutputSerializer)

    @extend_schema(
        tags=[TAG],
        operation_id="consents_create",
        description="Record a recipient's consent to a purpose (or give it again after a withdrawal). 200 if it was already given.",
        request=InputSerializer,
        responses={201: ConsentOutputSerializer, 200: ConsentOutputSerializer, **_errors(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row, changed = consent_give(created_by=request.user, **serializer.validated_data)
        return Response(ConsentOutputSerializer(row).data, status=status.HTTP_201_CREATED if changed else status.HTTP_200_OK)


class ConsentWithdrawApi(ConsentApi):
    write_capability = Capability.SUPPRESSIONS_ADD

    class InputSerializer(StrictInputSerializer):
        address = serializers.CharField(max_length=320, validators=[validate_address])
        purpose = serializers.SlugField(max_length=64)
        note = serializers.CharField(max_length=150, required=False, default="", help_text="Why, or where it was asked.")

        class Meta:
            ref_name = "ConsentWithdraw"

    @extend_schema(
        tags=[TAG],
        operation_id="consents_withdraw",
        description="Withdraw consent to a purpose: an unsubscribe from it, whatever the domain's policy. Idempotent.",
        request=InputSerializer,
        responses={200: ConsentOutputSerializer, **_errors(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        source = f"api: {request.user.username}: {data['note']}".rstrip(": ")
        row, _ = consent_withdraw(address=data["address"], purpose=data["purpose"], source=source, withdrawn_by=request.user)
        return Response(ConsentOutputSerializer(row).data)


def _filtered(request: Request) -> QuerySet[ConsentRecord]:
    rows = ConsentRecord.objects.all()
    address = request.query_params.get("address")
    if address:
        rows = rows.filter(address_hash=address_hash(address))
    purpose = request.query_params.get("purpose")
    if purpose:
        rows = rows.filter(purpose=purpose)
    return rows
