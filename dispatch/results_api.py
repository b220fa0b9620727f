"""A campaign's results: per version and in total, counts and rates with their confidence (read from counters)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from access.permissions import Capability
from controlplane.api import StrictInputSerializer, get_or_404
from dispatch.api import TAG, DispatchApi, _campaign, _errors
from dispatch.models import CampaignResult, Quarantine
from dispatch.selectors import SUGGEST_AT, Result, campaign_results, results_leader
from dispatch.services.guardrails import Evidence, quarantine_restore
from dispatch.services.results import message_cost_micros, micros_amount


class RateSerializer(serializers.Serializer):
    events = serializers.IntegerField()
    trials = serializers.IntegerField(help_text="The rate's denominator: messages answered for good (bounces), else sent.")
    value = serializers.FloatField(allow_null=True)
    low = serializers.FloatField(allow_null=True, help_text="95% Wilson interval")
    high = serializers.FloatField(allow_null=True)

    class Meta:
        ref_name = "ResultRate"


class CostSerializer(serializers.Serializer):
    spent = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="Handed over so far, at each day's price")
    projected = serializers.DecimalField(
        max_digits=14, decimal_places=2, help_text="Spent, plus the messages still waiting at today's price"
    )
    currency = serializers.CharField()

    class Meta:
        ref_name = "ResultCost"


class ResultSerializer(serializers.Serializer):
    version_id = serializers.IntegerField(allow_null=True)
    variant = serializers.CharField()
    number = serializers.IntegerField(allow_null=True)
    counts = serializers.DictField(child=serializers.IntegerField(), help_text=f"Messages: {', '.join(CampaignResult.COUNTS)}.")
    rates = serializers.DictField(child=RateSerializer(), help_text="bounce, hard_bounce, complaint, unsubscribe, delivery, open, click.")
    cost = CostSerializer()

    class Meta:
        ref_name = "CampaignResult"


class QuarantineSerializer(serializers.ModelSerializer):
    variant = serializers.CharField(source="variant.slug")
    summary = serializers.SerializerMethodField()

    class Meta:
        model = Quarantine
        ref_name = "Quarantine"
        fields = [
            "id", "campaign", "variant", "metric", "summary", "evidence", "weight_before", "created_at", "restored_at", "restore_reason",
        ]

    def get_summary(self, quarantine: Quarantine) -> str:
        return Evidence(**quarantine.evidence).summary()


class LeaderSerializer(serializers.Serializer):
    metric = serializers.CharField()
    version_id = serializers.IntegerField(source="result.version_id")
    variant = serializers.CharField(source="result.variant")
    number = serializers.IntegerField(source="result.number")
    probability = serializers.FloatField(help_text="How likely it is the best of the versions by this metric")
    suggested = serializers.BooleanField(help_text=f"Suggested as the winner: probability at least {SUGGEST_AT:.0%}")

    class Meta:
        ref_name = "ResultLeader"


class CampaignResultsSerializer(serializers.Serializer):
    campaign = serializers.IntegerField()
    leader = LeaderSerializer(allow_null=True, help_text="The version most likely best by the asked metric (null: fewer than two).")
    total = ResultSerializer()
    versions = ResultSerializer(many=True)
    quarantines = QuarantineSerializer(many=True, help_text="Variants the guardrails set aside, with their evidence.")

    class Meta:
        ref_name = "CampaignResults"


def result_body(result: Result) -> dict[str, Any]:
    rates = {}
    for name, rate in result.rates().items():
        low, high = rate.interval or (None, None)
        rates[name] = {"events": rate.events, "trials": rate.trials, "value": rate.value, "low": low, "high": high}
    cost = {
        "spent": micros_amount(result.cost_micros),
        "projected": micros_amount(result.cost_micros + result.waiting * message_cost_micros()),
        "currency": settings.SENDPLANE_COST_CURRENCY,
    }
    return {
        "version_id": result.version_id, "variant": result.variant, "number": result.number, "counts": result.counts,
        "rates": rates, "cost": cost,
    }


class ResultsQuerySerializer(StrictInputSerializer):
    metric = serializers.ChoiceField(
        choices=["click", "open", "delivery", "bounce", "hard_bounce", "complaint", "unsubscribe"], default="click",
        help_text="What the leader is judged by (opens are inflated by Apple Mail Privacy Protection).",
    )

    class Meta:
        ref_name = "ResultsQuery"


class CampaignResultsApi(DispatchApi):
    @extend_schema(
        parameters=[ResultsQuerySerializer],
        tags=[TAG],
        operation_id="campaigns_results",
        description=(
            "What happened to the campaign's messages, per variant version and in total: queued, sent, failed, "
            "delivered (ESP), deferred, bounced hard and soft, complained, unsubscribed, opened and clicked (ESP "
            "tracking; opens are inflated by Apple Mail Privacy Protection), each counting messages once, with "
            "rates and their 95% intervals, and the version most likely best by ?metric= (suggested as the winner "
            "only at 95% or more). Read from counters kept as events arrive."
        ),
        responses={200: CampaignResultsSerializer, **_errors(400, 401, 403, 404)},
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        query = ResultsQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        campaign = _campaign(campaign_id)
        total, versions = campaign_results(campaign=campaign)
        body = {
            "campaign": campaign.pk, "leader": results_leader(versions, query.validated_data["metric"]),
            "total": result_body(total), "versions": [result_body(v) for v in versions],
            "quarantines": campaign.quarantines.select_related("variant"),
        }
        return Response(CampaignResultsSerializer(body).data)


class RestoreInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)

    class Meta:
        ref_name = "QuarantineRestoreInput"


class QuarantineRestoreApi(DispatchApi):
    write_capability = Capability.CAMPAIGNS_WRITE  # the marketer who reads the evidence decides

    @extend_schema(
        tags=[TAG],
        operation_id="quarantines_restore",
        description="Give a quarantined variant its weight back (audited). 409 when it was restored already.",
        request=RestoreInputSerializer,
        responses={200: QuarantineSerializer, **_errors(400, 401, 403, 404, 409)},
    )
    def post(self, request: Request, quarantine_id: int) -> Response:
        quarantine = get_or_404(Quarantine.objects.select_related("variant"), f"quarantine {quarantine_id}", pk=quarantine_id)
        data = RestoreInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        restored = quarantine_restore(quarantine=quarantine, actor=request.user, reason=data.validated_data["reason"])
        return Response(QuarantineSerializer(restored).data)
