"""REST API of dispatch: campaigns and their triggers. Validate, call a service or selector, serialize.

A product backend triggers a campaign for up to MAX_RECIPIENTS recipients with an
``Idempotency-Key`` header: the first request inserts the outbox rows, a repeat
with the same body answers the first response again and inserts nothing, and the
same key with another body is a 409. Shape and type errors are 400s that change
nothing; per-recipient problems (bad address, header injection, a context that
does not render) are reported in the 202 answer and only those recipients are left out.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.permissions import Capability, CapabilityPermission
from controlplane.api import (
    JsonObjectField,
    Pagination,
    StrictInputSerializer,
    error_responses,
    get_or_404,
)
from deliverability.models import DEFAULT_PURPOSE, SendingDomain
from dispatch.models import Campaign, CampaignStatus
from dispatch.selectors import campaign_progress
from dispatch.services.campaigns import LifecycleResult, campaign_cancel, campaign_complete, campaign_create
from dispatch.services.triggers import MAX_RECIPIENTS, trigger_accept
from templates_registry.models import Template

TAG = "campaigns"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 200  # Trigger.idempotency_key's column


_BAD_INPUT = "Bad input (unknown field, wrong type, unknown template or domain); nothing was saved."


def _errors(*codes: int, bad_input: str = _BAD_INPUT) -> dict[int, OpenApiResponse]:
    described = {
        400: bad_input,
        401: "No or invalid token.",
        403: "Your role does not allow this.",
        404: "No such campaign.",
        409: "This Idempotency-Key was already used for this campaign with a different body; nothing was saved.",
        413: "The request body is larger than the server accepts.",
    }
    return error_responses(described, *codes)


class DispatchApi(APIView):
    # Common to every dispatch view: role checks, and service errors in the one error shape.
    # (A comment, not a docstring: drf-spectacular would show it on every operation.)

    permission_classes = (CapabilityPermission,)
    read_capability = Capability.READ
    write_capability = Capability.CAMPAIGNS_WRITE  # create and trigger


_CAMPAIGNS = Campaign.objects.select_related("template", "sending_domain")


def _campaign(campaign_id: int) -> Campaign:
    return get_or_404(_CAMPAIGNS, f"campaign {campaign_id}", pk=campaign_id)


def _with_progress(campaign: Campaign) -> Campaign:
    campaign.progress = campaign_progress(campaign=campaign)  # type: ignore[attr-defined]
    return campaign


class StrictCharField(serializers.CharField):
    """A string and only a string: DRF's CharField turns 42 into "42" (it already refuses NUL and surrogates)."""

    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class DomainNameField(serializers.SlugRelatedField):
    """A sending domain by its name; DNS names are case-insensitive and stored lower-cased."""

    def to_internal_value(self, data: Any) -> Any:
        return super().to_internal_value(data.lower() if isinstance(data, str) else data)


class RecipientListField(serializers.ListField):
    """Refuses an oversized list before validating any item, so 10,001 items fail fast."""

    def to_internal_value(self, data: Any) -> list[Any]:
        if isinstance(data, list) and len(data) > MAX_RECIPIENTS:
            raise serializers.ValidationError(f"at most {MAX_RECIPIENTS} recipients per trigger, got {len(data)}")
        return super().to_internal_value(data)


# --- Campaigns ------------------------------------------------------------------------


class CampaignOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    template = serializers.SlugField(source="template.slug")
    sending_domain = serializers.CharField(source="sending_domain.domain")
    status = serializers.CharField(help_text=", ".join(CampaignStatus.values) + ".")
    purpose = serializers.SlugField(help_text="transactional, or the marketing purpose its recipients must not have withdrawn from.")
    created_at = serializers.DateTimeField()
    progress = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Messages by status (queued, sending, deferred, sent, failed, suppressed, unknown, cancelled; 0 when "
        "none) and their total.",
    )

    class Meta:
        ref_name = "Campaign"


class CampaignListCreateApi(DispatchApi):
    pagination_class = Pagination

    class InputSerializer(StrictInputSerializer):
        """A new campaign; fields other than these are refused."""

        name = serializers.CharField(max_length=200)
        template = serializers.SlugRelatedField(
            slug_field="slug", queryset=Template.objects.all(), help_text="Slug of the template to send."
        )
        sending_domain = DomainNameField(
            slug_field="domain", queryset=SendingDomain.objects.all(), help_text="Domain name, e.g. mail.example.com."
        )
        purpose = serializers.SlugField(
            max_length=64, required=False, default=DEFAULT_PURPOSE,
            help_text="transactional (needs no consent, any template), or a marketing purpose: marketing (the default) or "
            "one defined in the admin. A marketing campaign needs a marketing template.",
        )

        class Meta:
            ref_name = "CampaignCreate"

    @extend_schema(
        tags=[TAG],
        operation_id="campaigns_list",
        description="All campaigns, newest first, each with its messages counted by status.",
        responses={200: CampaignOutputSerializer(many=True), **_errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(_CAMPAIGNS.all(), request, view=self)
        campaigns = [_with_progress(campaign) for campaign in page or []]
        return paginator.get_paginated_response(CampaignOutputSerializer(campaigns, many=True).data)

    @extend_schema(
        tags=[TAG],
        operation_id="campaigns_create",
        description="Create a campaign (a draft) for a template and a sending domain; trigger it next.",
        request=InputSerializer,
        responses={201: CampaignOutputSerializer, **_errors(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = campaign_create(created_by=request.user, **serializer.validated_data)
        return Response(CampaignOutputSerializer(_with_progress(campaign)).data, status=status.HTTP_201_CREATED)


class CampaignDetailApi(DispatchApi):
    @extend_schema(
        tags=[TAG],
        operation_id="campaigns_retrieve",
        description="One campaign, with its messages counted by status.",
        responses={200: CampaignOutputSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        return Response(CampaignOutputSerializer(_with_progress(_campaign(campaign_id))).data)


# --- Lifecycle: cancel, complete -------------------------------------------------------------


_LIFECYCLE_ERRORS = {
    400: "Bad input (a missing reason, an unknown field, a wrong type); nothing changed.",
    401: "No or invalid token.",
    403: "Your role does not allow this (cancel and complete need marketer, oncall or admin).",
    404: "No such campaign.",
    409: "The campaign's state refuses it (a completed campaign is not cancelled, a cancelled one not completed, "
    "a campaign with messages still waiting or sending not completed); nothing changed.",
}


class LifecycleOutputSerializer(serializers.Serializer):
    campaign = CampaignOutputSerializer(help_text="The campaign now: its status and its messages by status.")
    changed = serializers.BooleanField(help_text="False when it already was in this state (nothing was written).")
    cancelled = serializers.IntegerField(help_text="Messages this call ended as cancelled (waiting, never handed over).")
    in_flight = serializers.IntegerField(
        help_text="Messages being handed over when the call returned: each ends with its real outcome (sent, failed, ...)."
    )
    detail = serializers.CharField(help_text="One line saying what happened.")

    class Meta:
        ref_name = "CampaignLifecycleResult"


class CancelInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(max_length=1000, help_text="Why: kept in the audit trail.")

    class Meta:
        ref_name = "CampaignCancelRequest"


class CompleteInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(max_length=1000, required=False, default="", allow_blank=True)

    class Meta:
        ref_name = "CampaignCompleteRequest"


class LifecycleApi(DispatchApi):
    write_capability = Capability.CAMPAIGNS_END

    @staticmethod
    def answer(result: LifecycleResult) -> Response:
        body = {**result.__dict__, "campaign": _with_progress(_campaign(result.campaign.pk))}
        return Response(LifecycleOutputSerializer(body).data)


class CampaignCancelApi(LifecycleApi):
    @extend_schema(
        tags=[TAG],
        operation_id="campaigns_cancel",
        description=(
            "Cancel a campaign for good: its waiting messages (queued, deferred) end cancelled, and none of its messages "
            "is handed to SMTP after this returns; those being handed over end with their real outcome. Idempotent."
        ),
        request=CancelInputSerializer,
        responses={200: LifecycleOutputSerializer, **error_responses(_LIFECYCLE_ERRORS, 400, 401, 403, 404, 409)},
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = _campaign(campaign_id)
        data = _valid(CancelInputSerializer, request)
        return self.answer(campaign_cancel(campaign=campaign, actor=request.user, reason=data["reason"]))


class CampaignCompleteApi(LifecycleApi):
    @extend_schema(
        tags=[TAG],
        operation_id="campaigns_complete",
        description="Mark a running or paused campaign whose messages have all ended completed; it takes no trigger after. Idempotent.",
        request=CompleteInputSerializer,
        responses={200: LifecycleOutputSerializer, **error_responses(_LIFECYCLE_ERRORS, 400, 401, 403, 404, 409)},
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = _campaign(campaign_id)
        data = _valid(CompleteInputSerializer, request)
        return self.answer(campaign_complete(campaign=campaign, actor=request.user, reason=data["reason"]))


def _valid(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


# --- Triggers -------------------------------------------------------------------------


class RecipientInputSerializer(StrictInputSerializer):
    """One recipient; fields other than these are refused."""

    # Passed on exactly as sent (no trimming): the body's fingerprint decides replay or conflict.
    address = StrictCharField(
        allow_blank=True,
        trim_whitespace=False,
        help_text="Email address; an invalid one is reported in rejections, not a 400.",
    )
    context = JsonObjectField(  # type: ignore[assignment]  # drf-stubs: a declared field, not Field.context
        required=False, default=dict, help_text="Values for the template's variables for this recipient."
    )

    class Meta:
        ref_name = "TriggerRecipient"


class RejectionOutputSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the recipient in the request, from 0.")
    address = serializers.CharField()
    reason = serializers.CharField()

    class Meta:
        ref_name = "TriggerRejection"


class TriggerOutputSerializer(serializers.Serializer):
    trigger = serializers.IntegerField(help_text="Id of the accepted trigger.")
    accepted = serializers.IntegerField(help_text="Messages queued.")
    suppressed = serializers.IntegerField(help_text="Recipients left out because they are suppressed.")
    without_consent = serializers.IntegerField(
        help_text="Recipients left out for the campaign's marketing purpose: consent withdrawn, or none where the domain requires it."
    )
    rejected = serializers.IntegerField(help_text="Recipients left out for the reason given in rejections.")
    suppressed_recipients = serializers.ListField(child=serializers.CharField(), help_text="At most 1000 shown.")
    without_consent_recipients = RejectionOutputSerializer(many=True, help_text="At most 1000 shown, each with why.")
    rejections = RejectionOutputSerializer(many=True, help_text="At most 1000 shown.")

    class Meta:
        ref_name = "TriggerResult"


class TriggerCreateApi(DispatchApi):
    class InputSerializer(StrictInputSerializer):
        """The recipients to queue; fields other than these are refused."""

        recipients = RecipientListField(
            child=RecipientInputSerializer(),
            allow_empty=False,
            max_length=MAX_RECIPIENTS,
            help_text=f"1 to {MAX_RECIPIENTS} recipients.",
        )

        class Meta:
            ref_name = "TriggerCreate"

    @extend_schema(
        tags=[TAG],
        operation_id="campaigns_trigger",
        description=(
            "Queue the campaign for a list of recipients, each with its own context. Suppressed addresses "
            "and recipients that cannot be sent (invalid address, duplicate, a context that does not render, "
            "a line break in a header) are left out and counted. A repeat with the same Idempotency-Key and "
            "body returns the first answer (header Idempotent-Replayed: true) and queues nothing."
        ),
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=True,
                description=f"A client-chosen key (1 to {MAX_IDEMPOTENCY_KEY} characters), unique per campaign.",
            ),
            OpenApiParameter(
                "Idempotent-Replayed",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                enum=["true"],
                response=[202],
                description="Present when this answer replays an earlier request with the same key.",
            ),
        ],
        request=InputSerializer,
        responses={
            202: TriggerOutputSerializer,
            **_errors(
                400,
                401,
                403,
                404,
                409,
                413,
                bad_input="Bad input (missing Idempotency-Key, unknown field, wrong type, too many recipients, "
                "none sendable, no approved version); nothing was saved.",
            ),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = _campaign(campaign_id)
        key = _idempotency_key(request)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result, replayed = trigger_accept(
            campaign=campaign,
            idempotency_key=key,
            recipients=[dict(recipient) for recipient in serializer.validated_data["recipients"]],
            created_by=request.user,
        )
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        return Response(TriggerOutputSerializer(result).data, status=status.HTTP_202_ACCEPTED, headers=headers)


def _idempotency_key(request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "")
    if not key.strip():
        problem = "this header is required"
    elif len(key) > MAX_IDEMPOTENCY_KEY:
        problem = f"must be at most {MAX_IDEMPOTENCY_KEY} characters"
    elif not key.isprintable():
        problem = "must not contain control characters"
    else:
        return key
    raise ValidationError({IDEMPOTENCY_HEADER: [problem]})


__all__ = ["CampaignDetailApi", "CampaignListCreateApi", "TriggerCreateApi"]
