"""On-call API: the state of every sending domain, and pause / resume of a domain, a campaign or everything.

Reads for every role; pause and resume for ``oncall`` and ``admin`` only (a
marketer cannot resume a paused domain). Every control is idempotent and
answers what is paused now and how many messages were in flight.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.permissions import Capability, CapabilityPermission
from controlplane.api import StrictInputSerializer, error_responses, get_or_404
from deliverability import domains_api
from deliverability.api import PauseEvidenceSerializer
from deliverability.models import PauseEvidence, ProviderStream, SendingDomain
from deliverability.providers import OTHER_PROVIDERS as OTHER
from deliverability.selectors import stream_health
from deliverability.services import domain_rate, sending_switch
from deliverability.services.streams import stream_resume
from dispatch.models import WAITING, Campaign, Message, MessageStatus
from dispatch.services.controls import (
    ControlResult,
    campaign_pause,
    campaign_resume,
    domain_pause_now,
    domain_resume_now,
    pause_all_now,
    resume_all_now,
)
from dispatch.services.hints import publish_send_batches

TAG = "on-call"
_DESCRIBED = {
    400: "Bad input (missing reason, unknown field, wrong type, a campaign that cannot be paused); nothing changed.",
    401: "No or invalid token.",
    403: "Your role does not allow this (pause and resume need oncall or admin).",
    404: "No such domain or campaign.",
    409: "The domain was paused by the anomaly detector: read its evidence, then resume with force.",
}


def _errors(*codes: int) -> dict[int, Any]:
    return error_responses(_DESCRIBED, *codes)


class OnCallApi(APIView):
    # Role checks and service errors in the one error shape (a comment: drf-spectacular shows docstrings).

    permission_classes = (CapabilityPermission,)
    read_capability = Capability.READ
    write_capability = Capability.SENDING_CONTROL


class ControlOutputSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=["domain", "campaign", "all"])
    target = serializers.CharField(help_text="The domain name, the campaign id, or 'all'.")
    paused = serializers.BooleanField(help_text="The state now.")
    changed = serializers.BooleanField(help_text="False when it already was in this state (nothing was written).")
    reason = serializers.CharField(allow_blank=True)
    in_flight = serializers.IntegerField(
        help_text="Messages of this scope claimed by a worker when the call returned; none of them is handed to SMTP after a pause."
    )

    class Meta:
        ref_name = "ControlResult"


class PauseInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(max_length=1000, help_text="Why: kept on the object and in the audit trail.")

    class Meta:
        ref_name = "PauseRequest"


class ResumeInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(max_length=1000, required=False, default="", allow_blank=True)

    class Meta:
        ref_name = "ResumeRequest"


class DomainResumeInputSerializer(ResumeInputSerializer):
    ramp_minutes = serializers.IntegerField(
        min_value=0, max_value=7 * 24 * 60, required=False, allow_null=True, default=None,
        help_text="Minutes from a tenth of the rate to all of it (default SENDPLANE_RESUME_RAMP_MINUTES).",
    )
    force = serializers.BooleanField(required=False, default=False, help_text="Needed to lift a pause by the anomaly detector.")
    override_minutes = serializers.IntegerField(
        min_value=1, max_value=7 * 24 * 60, required=False, allow_null=True, default=None,
        help_text=(
            "Override a detector pause for this long (a reason is required; at most SENDPLANE_DETECTOR_OVERRIDE_MAX_MINUTES): "
            "the detector keeps its view and it returns when the override lapses."
        ),
    )

    class Meta:
        ref_name = "DomainResumeRequest"


def _answer(result: ControlResult) -> Response:
    return Response(ControlOutputSerializer(result.as_dict()).data)


def _input(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _domain(name: str) -> SendingDomain:
    return get_or_404(SendingDomain.objects.all(), f"domain {name}", domain=name.lower())


# --- domain state ---------------------------------------------------------------------------


class DomainStateSerializer(serializers.ModelSerializer):
    current_rate = serializers.FloatField(help_text="Messages per second now (warm-up step and resume ramp applied).")
    queued = serializers.IntegerField(help_text="Messages waiting (queued or deferred).")
    in_flight = serializers.IntegerField(help_text="Messages claimed by a worker right now.")
    last_evidence = PauseEvidenceSerializer(allow_null=True, help_text="The detector's latest pause of this domain.")

    class Meta:
        model = SendingDomain
        ref_name = "DomainState"
        fields = [
            "domain", "default_sender", "rate_per_second", "burst", "current_rate", "paused", "paused_by", "paused_reason",
            "paused_at", "ramp_started_at", "ramp_minutes", "override_until", "warmup_step", "warmup_step_since",
            "queued", "in_flight", "last_evidence",
        ]


def _with_state(domains: list[SendingDomain]) -> list[SendingDomain]:
    """Message counts of every listed domain in one aggregate query; evidence rows are few, read at once."""
    rows = (
        Message.objects.filter(sending_domain__in=domains, status__in=[*WAITING, MessageStatus.SENDING])
        .values("sending_domain", "status")
        .annotate(n=Count("id"))
    )
    per_domain: dict[int, dict[str, int]] = defaultdict(dict)
    for row in rows:
        per_domain[row["sending_domain"]][row["status"]] = row["n"]
    latest: dict[int, PauseEvidence] = {}
    for evidence in PauseEvidence.objects.filter(sending_domain__in=domains).order_by("-created_at", "-id"):
        latest.setdefault(evidence.sending_domain_id, evidence)
    for domain in domains:
        counts = per_domain[domain.pk]
        domain.queued = sum(counts.get(s, 0) for s in WAITING)  # type: ignore[attr-defined]
        domain.in_flight = counts.get(MessageStatus.SENDING, 0)  # type: ignore[attr-defined]
        domain.current_rate = 0.0 if domain.paused else domain_rate(domain)  # type: ignore[attr-defined]
        domain.last_evidence = latest.get(domain.pk)  # type: ignore[attr-defined]
    return domains


class DomainListApi(OnCallApi):
    write_capability = Capability.DOMAINS_CONFIGURE  # POST: a new sending domain (deliverability/domains_api.py)

    @extend_schema(
        tags=[TAG], operation_id="domains_list",
        description="Every sending domain with its pause state, current rate (ramp applied), queued and in-flight messages.",
        responses={200: DomainStateSerializer(many=True), **_errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        return Response(DomainStateSerializer(_with_state(list(SendingDomain.objects.order_by("domain"))), many=True).data)

    @domains_api.create_schema
    def post(self, request: Request) -> Response:
        return domains_api.domain_create_answer(request)


class DomainDetailApi(OnCallApi):
    write_capability = Capability.DOMAINS_CONFIGURE  # PATCH: the domain's settings (deliverability/domains_api.py)

    @extend_schema(tags=[TAG], operation_id="domains_retrieve", responses={200: DomainStateSerializer, **_errors(401, 403, 404)})
    def get(self, request: Request, domain: str) -> Response:
        return Response(DomainStateSerializer(_with_state([_domain(domain)])[0]).data)

    @domains_api.update_schema
    def patch(self, request: Request, domain: str) -> Response:
        return domains_api.domain_update_answer(request, _domain(domain))


class DomainEvidenceApi(OnCallApi):
    @extend_schema(
        tags=[TAG], operation_id="domains_evidence",
        description="Every automatic pause of the domain, newest first, with the numbers the detector acted on.",
        responses={200: PauseEvidenceSerializer(many=True), **_errors(401, 403, 404)},
    )
    def get(self, request: Request, domain: str) -> Response:
        return Response(PauseEvidenceSerializer(PauseEvidence.objects.filter(sending_domain=_domain(domain)), many=True).data)


# --- controls ------------------------------------------------------------------------------------

_PAUSE_EXAMPLE = OpenApiExample("pause", value={"reason": "blocklisted at Spamhaus, ticket OPS-123"}, request_only=True)


class DomainPauseApi(OnCallApi):
    @extend_schema(
        tags=[TAG], operation_id="domains_pause",
        description="Pause a sending domain. When this returns, no message of the domain is handed to SMTP; idempotent.",
        request=PauseInputSerializer, examples=[_PAUSE_EXAMPLE],
        responses={200: ControlOutputSerializer, **_errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, domain: str) -> Response:
        target = _domain(domain)
        return _answer(domain_pause_now(domain=target, actor=request.user, **_input(PauseInputSerializer, request)))


class DomainResumeApi(OnCallApi):
    @extend_schema(
        tags=[TAG], operation_id="domains_resume",
        description=(
            "Resume a paused domain, ramping its rate from a tenth to all of it over ramp_minutes. A pause by the "
            "anomaly detector is lifted only with force (409 otherwise). Idempotent."
        ),
        request=DomainResumeInputSerializer,
        responses={200: ControlOutputSerializer, **_errors(400, 401, 403, 404, 409)},
    )
    def post(self, request: Request, domain: str) -> Response:
        target = _domain(domain)
        return _answer(domain_resume_now(domain=target, actor=request.user, **_input(DomainResumeInputSerializer, request)))


class StreamHealthSerializer(serializers.Serializer):
    sent = serializers.IntegerField()
    bounced = serializers.IntegerField()
    reputation = serializers.IntegerField(help_text="Refusals about us: blocks, spam, authentication")
    complained = serializers.IntegerField()
    bounce_rate = serializers.FloatField(allow_null=True)
    complaint_rate = serializers.FloatField(allow_null=True)

    class Meta:
        ref_name = "StreamHealth"


class StreamSerializer(serializers.ModelSerializer):
    provider = serializers.SerializerMethodField(help_text="Provider group; 'other' for every receiver outside the groups.")
    last_hour = serializers.SerializerMethodField(help_text="The stream's counters over the last hour (absent where not asked).")

    class Meta:
        model = ProviderStream
        ref_name = "ProviderStream"
        fields = [
            "provider", "paused", "paused_reason", "paused_at", "paused_by", "replies", "rate_factor", "slowed_at", "strikes",
            "last_hour",
        ]

    def get_provider(self, stream: ProviderStream) -> str:
        return stream.provider or OTHER

    @extend_schema_field(StreamHealthSerializer(allow_null=True))
    def get_last_hour(self, stream: ProviderStream) -> dict[str, Any] | None:
        health = self.context.get("health", {}).get(stream.provider)
        return None if health is None else StreamHealthSerializer(health).data


class DomainStreamsApi(OnCallApi):
    @extend_schema(
        tags=[TAG], operation_id="domains_streams",
        description=(
            "The domain's streams to each mailbox provider group it sent to: paused (by the replies that decided, or by "
            "the detector on the stream's own rates), slowed by rate limiting (rate_factor: the share of its rate "
            "allowed now), and their counters over the last hour."
        ),
        responses={200: StreamSerializer(many=True), **_errors(401, 403, 404)},
    )
    def get(self, request: Request, domain: str) -> Response:
        target = _domain(domain)
        streams = ProviderStream.objects.filter(sending_domain=target).order_by("provider")
        health = stream_health(domain=target, since=(timezone.now() - timedelta(hours=1)).replace(second=0, microsecond=0))
        return Response(StreamSerializer(streams, many=True, context={"health": health}).data)


class StreamResumeApi(OnCallApi):
    @extend_schema(
        tags=[TAG], operation_id="streams_resume",
        description=(
            "Resume one paused stream (the domain's mail to one provider group): it ramps back from a quarter of its "
            "rate at most, and the detector forgets its past. Audited."
        ),
        request=ResumeInputSerializer,
        responses={200: StreamSerializer, **_errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, domain: str, provider: str) -> Response:
        target = _domain(domain)
        data = _input(ResumeInputSerializer, request)
        stream = stream_resume(domain=target, provider="" if provider == OTHER else provider, actor=request.user, **data)
        publish_send_batches([target.pk])  # its held mail is due: wake the domain now
        return Response(StreamSerializer(stream).data)


class CampaignPauseApi(OnCallApi):
    @extend_schema(
        tags=[TAG], operation_id="campaigns_pause",
        description="Pause a campaign: its queued messages wait, and none is handed to SMTP after this returns. Idempotent.",
        request=PauseInputSerializer, examples=[_PAUSE_EXAMPLE],
        responses={200: ControlOutputSerializer, **_errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = get_or_404(Campaign.objects.all(), f"campaign {campaign_id}", pk=campaign_id)
        return _answer(campaign_pause(campaign=campaign, actor=request.user, **_input(PauseInputSerializer, request)))


class CampaignResumeApi(OnCallApi):
    @extend_schema(
        tags=[TAG], operation_id="campaigns_resume", description="Resume a paused campaign. Idempotent.",
        request=ResumeInputSerializer, responses={200: ControlOutputSerializer, **_errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = get_or_404(Campaign.objects.all(), f"campaign {campaign_id}", pk=campaign_id)
        return _answer(campaign_resume(campaign=campaign, actor=request.user, **_input(ResumeInputSerializer, request)))


class SendingStateSerializer(serializers.Serializer):
    paused = serializers.BooleanField(help_text="True: the global kill switch is on and no domain sends.")
    paused_reason = serializers.CharField(allow_blank=True)
    paused_by = serializers.CharField(allow_blank=True)
    paused_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        ref_name = "SendingState"


class SendingStateApi(OnCallApi):
    @extend_schema(
        tags=[TAG], operation_id="sending_state", description="The global kill switch.",
        responses={200: SendingStateSerializer, **_errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        return Response(SendingStateSerializer(sending_switch()).data)


class PauseAllApi(OnCallApi):
    @extend_schema(
        tags=[TAG], operation_id="sending_pause_all",
        description="The global kill switch: no domain sends after this returns. Idempotent.",
        request=PauseInputSerializer, examples=[_PAUSE_EXAMPLE],
        responses={200: ControlOutputSerializer, **_errors(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        return _answer(pause_all_now(actor=request.user, **_input(PauseInputSerializer, request)))


class ResumeAllApi(OnCallApi):
    @extend_schema(
        tags=[TAG], operation_id="sending_resume_all",
        description="Lift the global kill switch; domains and campaigns paused on their own stay paused. Idempotent.",
        request=ResumeInputSerializer, responses={200: ControlOutputSerializer, **_errors(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        return _answer(resume_all_now(actor=request.user, **_input(ResumeInputSerializer, request)))
