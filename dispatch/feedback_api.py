"""REST API for what comes back: raw bounce/complaint upload, and the GDPR erase of an address."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.permissions import Capability, CapabilityPermission
from controlplane.addresses import validate_address
from controlplane.api import StrictInputSerializer, error_responses
from deliverability.models import EventType, Kind, MatchedBy, Reason
from dispatch.services.erasure import address_erase_everywhere
from dispatch.services.inbound import mail_ingest

TAG = "feedback"
_DESCRIBED = {
    400: "Bad input (empty or unreadable body, wrong content type, not an address); nothing was recorded.",
    401: "No or invalid token.",
    403: "Your role does not allow this.",
    413: "The message is larger than SENDPLANE_BOUNCE_MAX_BYTES; nothing was recorded.",
    415: "Send the message as message/rfc822 (or application/octet-stream).",
}


class RawMessageParser(BaseParser):
    """The request body as bytes, read up to the bounce size limit plus one byte (so too big is detectable)."""

    media_type = "message/rfc822"

    def parse(  # type: ignore[override]  # drf-stubs: request.data is whatever parse returns, not only a mapping
        self, stream: Any, media_type: str | None = None, parser_context: Any = None
    ) -> bytes:
        if stream is None:
            return b""
        return stream.read(settings.SENDPLANE_BOUNCE_MAX_BYTES + 1)


class OctetStreamParser(RawMessageParser):
    media_type = "application/octet-stream"


class IngestedOutputSerializer(serializers.Serializer):
    recipient = serializers.CharField()
    event_type = serializers.ChoiceField(choices=EventType.choices)
    kind = serializers.ChoiceField(choices=Kind.choices)
    reason = serializers.ChoiceField(choices=Reason.choices)
    status = serializers.CharField(help_text="Enhanced status code, or empty.")
    feedback_type = serializers.CharField(help_text="ARF feedback type, for complaints.")
    message = serializers.CharField(allow_null=True, help_text="The outbox message (uuid hex) it was tied to.")
    matched_by = serializers.ChoiceField(choices=MatchedBy.choices, allow_blank=True, help_text="Empty: tied to no message of ours.")
    verified = serializers.BooleanField(
        help_text=(
            "Tied to our message (signed VERP address or our Message-ID in the echoed original) and naming its "
            "recipient: only then does it suppress and count. Otherwise it is kept as evidence and changes nothing."
        )
    )
    duplicate = serializers.BooleanField(help_text="Already recorded: nothing changed.")
    suppressed = serializers.BooleanField(help_text="The recipient is now suppressed (for its domain or everywhere).")

    class Meta:
        ref_name = "IngestedRecipient"


class BounceUploadApi(APIView):
    permission_classes = (CapabilityPermission,)
    read_capability = Capability.READ  # OPTIONS: the description of the endpoint
    write_capability = Capability.FEEDBACK_UPLOAD
    parser_classes = (RawMessageParser, OctetStreamParser)

    @extend_schema(
        tags=[TAG],
        operation_id="bounces_upload",
        description=(
            "Upload one raw message from the bounce mailbox (DSN, ARF complaint, provider bounce, auto-reply). "
            "Each recipient it reports on is classified and recorded. It suppresses where policy says and is "
            "counted only when verified: tied to one of our messages (signed VERP address, or our Message-ID in "
            "the echoed original) and naming that message's recipient, once per message and kind. Anything else "
            "is kept as unverified evidence (verified: false) that suppresses and counts nothing. Uploading the "
            "same bytes again records nothing (duplicate: true)."
        ),
        request={"message/rfc822": OpenApiTypes.BINARY, "application/octet-stream": OpenApiTypes.BINARY},
        responses={
            201: OpenApiResponse(IngestedOutputSerializer(many=True), description="At least one new event recorded."),
            200: OpenApiResponse(IngestedOutputSerializer(many=True), description="Every event was already recorded."),
            **error_responses(_DESCRIBED, 400, 401, 403, 413, 415),
        },
    )
    def post(self, request: Request) -> Response:
        raw = request.data
        if not isinstance(raw, bytes):
            raise ParseError("send the raw message as the request body")
        results = mail_ingest(raw=raw, source="upload")  # a FeedbackError is the exception handler's 400 or 413
        created = any(item.created for item in results)
        body = IngestedOutputSerializer([item.as_dict() for item in results], many=True).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class ErasureOutputSerializer(serializers.Serializer):
    messages = serializers.IntegerField(help_text="Outbox rows whose recipient and context were blanked.")
    triggers = serializers.IntegerField(help_text="Trigger answers the address was removed from.")
    suppressions = serializers.IntegerField(help_text="Suppressions whose address was blanked (they still apply, by hash).")
    events = serializers.IntegerField(help_text="Feedback events whose recipient and reply were blanked.")
    mentions = serializers.IntegerField(
        help_text="Other rows whose free text named the address (contexts, replies, notes, Idempotency-Keys, admin history)."
    )

    class Meta:
        ref_name = "ErasureResult"


class ErasureApi(APIView):
    permission_classes = (CapabilityPermission,)
    read_capability = Capability.READ  # OPTIONS: the description of the endpoint
    write_capability = Capability.ADDRESSES_ERASE

    class InputSerializer(StrictInputSerializer):
        address = serializers.CharField(max_length=320, validators=[validate_address])

        class Meta:
            ref_name = "ErasureRequest"

    @extend_schema(
        tags=[TAG],
        operation_id="erasures_create",
        description=(
            "GDPR erase (admins only): blank the address in the outbox, trigger answers, suppressions and events. "
            "Messages not yet sent to it are suppressed, and it stays suppressed everywhere by a hash of the address."
        ),
        request=InputSerializer,
        examples=[OpenApiExample("erase", value={"address": "someone@example.org"}, request_only=True)],
        responses={200: ErasureOutputSerializer, **error_responses(_DESCRIBED, 400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = address_erase_everywhere(address=serializer.validated_data["address"], requested_by=request.user)
        return Response(ErasureOutputSerializer(result.as_dict()).data)
