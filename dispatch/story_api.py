"""One message's story (``GET /api/v1/messages/{uuid}``): every attempt, event, suppression and version, with a verdict."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api import error_responses, get_or_404
from deliverability.models import FeedbackEvent, Suppression
from dispatch.api import DispatchApi
from dispatch.models import Message, MessageAttempt, MessageStatus
from dispatch.story import Story, message_story

TAG = "messages"
_DESCRIBED = {401: "No or invalid token.", 403: "Your role does not allow this.", 404: "No such message."}


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = MessageAttempt
        ref_name = "MessageAttempt"
        fields = ["number", "at", "outcome", "code", "reply", "transport"]


class StoryEventSerializer(serializers.ModelSerializer):
    reply = serializers.CharField(source="smtp_reply")
    unverified = serializers.SerializerMethodField(help_text="Why a report was not taken as about this message (empty: verified)")

    class Meta:
        model = FeedbackEvent
        ref_name = "MessageStoryEvent"
        fields = ["id", "occurred_at", "event_type", "kind", "reason", "status", "source", "matched_by", "verified", "unverified", "reply"]

    def get_unverified(self, event: FeedbackEvent) -> str:
        return "" if event.verified else str(event.detail.get("unverified", ""))


class StorySuppressionSerializer(serializers.ModelSerializer):
    scope = serializers.SerializerMethodField(help_text="global (every sending domain) or domain (this message's)")

    class Meta:
        model = Suppression
        ref_name = "MessageStorySuppression"
        fields = ["id", "reason", "scope", "source", "event", "created_at"]

    def get_scope(self, suppression: Suppression) -> str:
        return "global" if suppression.sending_domain_id is None else "domain"


class ChangeSerializer(serializers.Serializer):
    at = serializers.DateTimeField(source="created_at")
    action = serializers.CharField()
    actor = serializers.CharField(source="actor_label")
    reason = serializers.CharField()
    detail = serializers.DictField(source="data", help_text="The audit entry's data (before, after, counts)")

    class Meta:
        ref_name = "MessageStoryChange"


class ParentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    number = serializers.IntegerField()

    class Meta:
        ref_name = "MessageStoryParent"


class ProvenanceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    number = serializers.IntegerField()
    template = serializers.CharField()
    variant = serializers.CharField()
    status = serializers.CharField(help_text="The version's status now (draft, scored, approved, rejected, retired)")
    origin = serializers.CharField(help_text="human or ai")
    generator = serializers.CharField()
    model = serializers.CharField()
    prompt_hash = serializers.CharField()
    parent = ParentSerializer(allow_null=True)
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    approved_by = serializers.CharField()
    approved_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        ref_name = "MessageStoryVersion"


class EntrySerializer(serializers.Serializer):
    at = serializers.DateTimeField(allow_null=True)
    kind = serializers.CharField(help_text="created, attempt, event, suppression, campaign or domain")
    summary = serializers.CharField()

    class Meta:
        ref_name = "MessageStoryEntry"


class StorySerializer(serializers.Serializer):
    uuid = serializers.UUIDField(source="message.uuid")
    message_id = serializers.CharField(source="message.message_id")
    verdict = serializers.CharField(help_text="Why this person did or did not get it, in one line")
    status = serializers.CharField(source="message.status", help_text=", ".join(MessageStatus.values))
    recipient = serializers.CharField(source="message.recipient", help_text="Empty once erased")
    campaign = serializers.IntegerField(source="message.campaign_id")
    trigger = serializers.IntegerField(source="message.trigger_id")
    correlation_id = serializers.CharField(source="message.trigger.correlation_id")
    sending_domain = serializers.CharField(source="message.sending_domain.domain")
    provider = serializers.CharField(source="message.provider")
    created_at = serializers.DateTimeField(source="message.created_at")
    sent_at = serializers.DateTimeField(source="message.sent_at", allow_null=True)
    not_before = serializers.DateTimeField(source="message.not_before")
    attempts = AttemptSerializer(many=True)
    events = StoryEventSerializer(many=True)
    suppression = StorySuppressionSerializer(allow_null=True)
    changes = ChangeSerializer(many=True, help_text="The campaign's and the domain's status changes while it waited")
    version = ProvenanceSerializer()
    timeline = EntrySerializer(many=True)

    class Meta:
        ref_name = "MessageStory"



class MessageStoryApi(DispatchApi):
    @extend_schema(
        tags=[TAG],
        operation_id="messages_story",
        description=(
            "One message's story, the answer to 'why did this person not get it?': a verdict line, then in time "
            "order its creation (trigger, campaign, correlation id), every delivery attempt (time, outcome, code, "
            "reply), every feedback event tied to it (bounces, complaints, unsubscribes, ESP events, verified or "
            "not), the suppression of its address for its domain and what caused it, the campaign's and the "
            "domain's pauses and cancellation while it waited, and the version it was rendered from with its "
            "provenance (human or AI generator, model, prompt hash, parent)."
        ),
        responses={200: StorySerializer, **error_responses(_DESCRIBED, 401, 403, 404)},
    )
    def get(self, request: Request, message_uuid: uuid.UUID) -> Response:
        message = get_or_404(Message.objects.all(), f"message {message_uuid}", uuid=message_uuid)
        return Response(story_body(message_story(message)))



def story_body(story: Story) -> dict[str, Any]:
    return dict(StorySerializer(story).data)
