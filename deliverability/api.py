"""REST API of deliverability: the suppression list, the feedback events behind it, reputation history.

Every role reads; marketers, on-call and admins add a manual suppression;
only admins lift one (it may be a complaint or a hard bounce).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.permissions import Capability, CapabilityPermission
from controlplane.addresses import address_hash, validate_address
from controlplane.api import (
    Pagination,
    StrictInputSerializer,
    error_responses,
    get_or_404,
    paginated_response,
)
from deliverability.errors import DeliverabilityError
from deliverability.models import EventType, FeedbackEvent, PauseEvidence, SendingDomain, Suppression, SuppressionReason
from deliverability.providers import OTHER_PROVIDERS, PROVIDER_DOMAINS
from deliverability.selectors import domain_pause_evidence, domain_reputation_history
from deliverability.services import suppression_add, suppression_remove

TAG = "suppression"
_DESCRIBED = {
    400: "Bad input (unknown field, wrong type, not an address, unknown domain); nothing was saved.",
    401: "No or invalid token.",
    403: "Your role does not allow this.",
    404: "No such suppression.",
}


def _errors(*codes: int) -> dict[int, Any]:
    return error_responses(_DESCRIBED, *codes)


class DeliverabilityApi(APIView):
    # Role checks, and service errors in the one error shape (a comment: drf-spectacular shows docstrings).

    permission_classes = (CapabilityPermission,)
    read_capability = Capability.READ  # each view that writes declares its write_capability


class EventSummarySerializer(serializers.ModelSerializer):
    message = serializers.SerializerMethodField(help_text="The outbox message (uuid hex) it is about, if found.")

    class Meta:
        model = FeedbackEvent
        ref_name = "FeedbackEventSummary"
        fields = ["id", "event_type", "kind", "reason", "status", "source", "occurred_at", "message"]

    def get_message(self, event: FeedbackEvent) -> str | None:
        return event.message_uuid.hex if event.message_uuid else None


class SuppressionOutputSerializer(serializers.ModelSerializer):
    domain = serializers.CharField(
        source="sending_domain.domain", default=None, allow_null=True, help_text="Null: every domain."
    )
    event = EventSummarySerializer(allow_null=True, help_text="The event that caused it, if any.")
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)

    class Meta:
        model = Suppression
        ref_name = "Suppression"
        fields = ["id", "address", "domain", "reason", "source", "event", "created_by", "created_at"]


class EventOutputSerializer(EventSummarySerializer):
    domain = serializers.CharField(source="sending_domain.domain", default=None, allow_null=True)

    class Meta(EventSummarySerializer.Meta):
        ref_name = "FeedbackEvent"
        fields = [
            *EventSummarySerializer.Meta.fields,
            "recipient", "domain", "smtp_reply", "feedback_type", "matched_by", "verified", "received_at",
        ]


_SUPPRESSIONS = Suppression.objects.select_related("sending_domain", "event", "created_by")


class SuppressionListCreateApi(DeliverabilityApi):
    write_capability = Capability.SUPPRESSIONS_ADD
    pagination_class = Pagination  # what paginated_response answers with; the schema describes it from here

    class InputSerializer(StrictInputSerializer):
        address = serializers.CharField(max_length=320, validators=[validate_address])
        domain = serializers.SlugRelatedField(
            slug_field="domain", queryset=SendingDomain.objects.all(), required=False, allow_null=True,
            help_text="A sending domain; omit for every domain.",
        )
        note = serializers.CharField(max_length=150, required=False, default="", help_text="Why (kept as the source).")

        class Meta:
            ref_name = "SuppressionCreate"

    @extend_schema(
        tags=[TAG],
        operation_id="suppressions_list",
        description="Suppressed addresses, newest first, with the reason and the event that caused each.",
        parameters=[
            OpenApiParameter("address", str, description="Only this address."),
            OpenApiParameter("domain", str, description="Only suppressions for this sending domain."),
            OpenApiParameter("reason", str, enum=SuppressionReason.values),
        ],
        responses={200: SuppressionOutputSerializer(many=True), **_errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        rows = _filtered(_SUPPRESSIONS, request, _SUPPRESSION_FILTERS)
        return paginated_response(self, request, rows.order_by("-created_at", "-id"), SuppressionOutputSerializer)

    @extend_schema(
        tags=[TAG],
        operation_id="suppressions_create",
        description="Suppress an address by hand (reason `manual`), for one domain or all. Idempotent: 200 if it already was.",
        request=InputSerializer,
        responses={201: SuppressionOutputSerializer, 200: SuppressionOutputSerializer, **_errors(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        row, created = suppression_add(
            address=data["address"], reason=SuppressionReason.MANUAL, sending_domain=data.get("domain"),
            source=f"api: {request.user.username}: {data['note']}".rstrip(": "), created_by=request.user,
        )
        return Response(SuppressionOutputSerializer(row).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class SuppressionDetailApi(DeliverabilityApi):
    write_capability = Capability.SUPPRESSIONS_LIFT

    @extend_schema(tags=[TAG], operation_id="suppressions_retrieve", responses={200: SuppressionOutputSerializer, **_errors(401, 403, 404)})
    def get(self, request: Request, suppression_id: int) -> Response:
        return Response(SuppressionOutputSerializer(_suppression(suppression_id)).data)

    @extend_schema(
        tags=[TAG],
        operation_id="suppressions_destroy",
        description="Lift a suppression (admins only); the events that caused it are kept.",
        responses={204: None, **_errors(401, 403, 404)},
    )
    def delete(self, request: Request, suppression_id: int) -> Response:
        suppression_remove(suppression=_suppression(suppression_id), removed_by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _suppression(suppression_id: int) -> Suppression:
    return get_or_404(_SUPPRESSIONS, f"suppression {suppression_id}", pk=suppression_id)


class EventListApi(DeliverabilityApi):
    pagination_class = Pagination

    @extend_schema(
        tags=[TAG],
        operation_id="events_list",
        description="Feedback events (bounces, complaints, deliveries, unsubscribes), newest first.",
        parameters=[
            OpenApiParameter("recipient", str, description="Only events about this address."),
            OpenApiParameter("domain", str, description="Only events of this sending domain."),
            OpenApiParameter("event_type", str, enum=EventType.values),
            OpenApiParameter("message", str, description="Only events about this outbox message (uuid)."),
        ],
        responses={200: EventOutputSerializer(many=True), **_errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        rows = _filtered(FeedbackEvent.objects.select_related("sending_domain"), request, _EVENT_FILTERS)
        return paginated_response(self, request, rows, EventOutputSerializer)


def _uuid_param(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise DeliverabilityError("must be a message uuid", field="message") from None


# Query parameter -> the lookup it filters by, for the suppression and event lists.
_Lookups = dict[str, Callable[[str], dict[str, Any]]]
_DOMAIN: _Lookups = {"domain": lambda value: {"sending_domain__domain": value.lower()}}
_SUPPRESSION_FILTERS: _Lookups = {
    "address": lambda value: {"address_hash": address_hash(value)},
    **_DOMAIN,
    "reason": lambda value: {"reason": value},
}
_EVENT_FILTERS: _Lookups = {
    "recipient": lambda value: {"recipient_hash": address_hash(value)},
    **_DOMAIN,
    "event_type": lambda value: {"event_type": value},
    "message": lambda value: {"message_uuid": _uuid_param(value)},
}


def _filtered(rows: QuerySet[Any], request: Request, lookups: _Lookups) -> QuerySet[Any]:
    """Rows filtered by the parameters given; a NUL never reaches PostgreSQL, which refuses it in text (a 500)."""
    for name, lookup in lookups.items():
        value = request.query_params.get(name)
        if not value:
            continue
        if "\x00" in value:
            raise DeliverabilityError("must not contain NUL characters", field=name)
        rows = rows.filter(**lookup(value))
    return rows


# --- Reputation history (issue 6) ---------------------------------------------------------

MAX_HISTORY_HOURS = 24 * 14


class ReputationPointSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    bounced = serializers.IntegerField(help_text="Every bounce: hard, soft and reputation.")
    bounced_hard = serializers.IntegerField()
    bounced_reputation = serializers.IntegerField(help_text="Blocks, spam refusals, authentication failures.")
    complained = serializers.IntegerField()
    bounce_rate = serializers.FloatField(allow_null=True, help_text="bounced / sent; null when nothing was sent.")
    complaint_rate = serializers.FloatField(allow_null=True)

    class Meta:
        ref_name = "ReputationPoint"


class PauseEvidenceSerializer(serializers.ModelSerializer):
    summary = serializers.CharField()

    class Meta:
        model = PauseEvidence
        ref_name = "PauseEvidence"
        fields = [
            "id", "provider", "minute", "signal", "rule", "baseline", "observed", "statistic", "threshold", "volume", "events",
            "replies", "summary", "created_at", "resumed_at",
        ]


class ReputationOutputSerializer(serializers.Serializer):
    domain = serializers.CharField()
    provider = serializers.CharField(allow_null=True, help_text="The provider stream drawn; null: the whole domain.")
    paused = serializers.BooleanField()
    paused_by = serializers.CharField()
    paused_reason = serializers.CharField()
    step_minutes = serializers.IntegerField()
    points = ReputationPointSerializer(many=True)
    pauses = PauseEvidenceSerializer(many=True, help_text="The detector's pauses in the window, with their evidence.")

    class Meta:
        ref_name = "ReputationHistory"


class DomainReputationApi(DeliverabilityApi):
    class QuerySerializer(StrictInputSerializer):
        hours = serializers.IntegerField(min_value=1, max_value=MAX_HISTORY_HOURS, default=24)
        step_minutes = serializers.IntegerField(min_value=1, max_value=1440, default=10)
        provider = serializers.ChoiceField(
            choices=[*PROVIDER_DOMAINS, OTHER_PROVIDERS], required=False,
            help_text="One provider stream's counters instead of the whole domain's ('other': every receiver outside the groups).",
        )

        class Meta:
            ref_name = "ReputationQuery"

    @extend_schema(
        tags=["domains"],
        operation_id="domains_reputation",
        description="A sending domain's volume, bounce and complaint rates per step, and the detector's pauses with their evidence.",
        parameters=[QuerySerializer],
        responses={200: ReputationOutputSerializer, **_errors(400, 401, 403, 404)},
    )
    def get(self, request: Request, domain: str) -> Response:
        query = self.QuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        sending_domain = get_or_404(SendingDomain.objects.all(), f"domain {domain}", domain=domain.lower())
        end = timezone.now()
        start = end - timedelta(hours=query.validated_data["hours"])
        step = query.validated_data["step_minutes"]
        asked = query.validated_data.get("provider")
        provider = None if asked is None else "" if asked == OTHER_PROVIDERS else asked
        points = domain_reputation_history(domain=sending_domain, start=start, end=end, step_minutes=step, provider=provider)
        body = {
            "domain": sending_domain.domain,
            "provider": asked,
            "paused": sending_domain.paused,
            "paused_by": sending_domain.paused_by,
            "paused_reason": sending_domain.paused_reason,
            "step_minutes": step,
            "points": [dict(vars(p), bounce_rate=p.bounce_rate, complaint_rate=p.complaint_rate) for p in points],
            "pauses": domain_pause_evidence(domain=sending_domain, since=start),
        }
        return Response(ReputationOutputSerializer(body).data)
