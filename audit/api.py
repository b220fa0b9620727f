"""REST API of the audit trail: every role reads it, filtered; nobody writes it (services do, in their transactions)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.permissions import Capability, CapabilityPermission
from audit.models import AuditEntry
from audit.selectors import audit_entries
from controlplane.api import Pagination, error_responses, paginated_response

TAG = "audit"
_DESCRIBED = {
    400: "A filter is malformed (since/until must be ISO 8601, e.g. 2026-11-22T18:00:00Z).",
    401: "No or invalid token.",
    403: "Your role does not allow this.",
}


class AuditEntryOutputSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(
        source="actor.username", default=None, allow_null=True, help_text="The user, while the account exists; null for system actors."
    )
    actor_label = serializers.CharField(help_text="Who acted: a username, or the system part (detector, feedback:<source>).")
    data = serializers.JSONField(  # type: ignore[assignment]  # drf-stubs: a declared field, not Serializer.data
        help_text="Ids, counts and before/after values of the change."
    )

    class Meta:
        model = AuditEntry
        ref_name = "AuditEntry"
        fields = ["id", "created_at", "actor", "actor_label", "action", "target_type", "target_id", "target_label", "reason", "data"]


class AuditEntryListApi(APIView):
    permission_classes = (CapabilityPermission,)
    read_capability = Capability.READ
    pagination_class = Pagination  # what paginated_response answers with; the schema describes it from here

    class QuerySerializer(serializers.Serializer):
        # Not strict: limit and offset share the query string.
        action = serializers.CharField(required=False, help_text='Exact ("domain.pause"), or a prefix ending in "." ("domain.").')
        target_type = serializers.CharField(required=False, help_text='app_label.model, e.g. "deliverability.sendingdomain".')
        target_id = serializers.CharField(required=False, help_text="The target's primary key.")
        actor = serializers.CharField(required=False, help_text='A username or a system label ("detector").')
        since = serializers.DateTimeField(required=False, help_text="ISO 8601; entries at or after it.")
        until = serializers.DateTimeField(required=False, help_text="ISO 8601; entries before it.")

        class Meta:
            ref_name = "AuditQuery"

    @extend_schema(
        tags=[TAG],
        operation_id="audit_list",
        description="The audit trail, newest first: who changed what that matters, when, why, with ids and counts.",
        parameters=[QuerySerializer],
        responses={200: AuditEntryOutputSerializer(many=True), **error_responses(_DESCRIBED, 400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = self.QuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        return paginated_response(self, request, audit_entries(**query.validated_data), AuditEntryOutputSerializer)
