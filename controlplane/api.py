"""Small API building blocks shared by the apps: strict input and role checks."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.json_values import json_problem

ROLE_MARKETER = "marketer"
ROLE_ONCALL = "oncall"
ROLE_ADMIN = "admin"
ALL_ROLES = (ROLE_MARKETER, ROLE_ONCALL, ROLE_ADMIN)


class StrictInputSerializer(serializers.Serializer):
    # Refuses fields it does not declare: a typo must not be silently dropped.
    # (A comment, not a docstring: drf-spectacular would give every subclass it as a description.)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


def user_roles(user: Any) -> set[str]:
    """The user's roles, read once per user object (the admin asks for every model on every page)."""
    if not user or not user.is_authenticated:
        return set()
    if user.is_superuser:
        return set(ALL_ROLES)
    cached = getattr(user, "_sendplane_roles", None)
    if cached is None:
        cached = frozenset(user.groups.filter(name__in=ALL_ROLES).values_list("name", flat=True))
        user._sendplane_roles = cached
    return set(cached)


class RolePermission(permissions.BasePermission):
    """Reads need any role; writes need one of ``write_roles`` (set on the view)."""

    message = "Your role does not allow this."

    def has_permission(self, request: Any, view: Any) -> bool:
        roles = user_roles(request.user)
        if request.method in permissions.SAFE_METHODS:
            allowed = set(getattr(view, "read_roles", ALL_ROLES))
        else:
            allowed = set(getattr(view, "write_roles", (ROLE_ADMIN,)))
        return bool(roles & allowed)


class JsonObjectField(serializers.DictField):
    """A JSON object from outside (variables, generation parameters, a render context)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        problem = json_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser lets the decoder's RecursionError through (a 500); make it a 400."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None


class Pagination(LimitOffsetPagination):
    """limit/offset with a ceiling: DRF passes any ``limit`` on to SQL, and one past bigint was a 500."""

    max_limit = 1000


def paginated_response(
    view: Any, request: Request, queryset: QuerySet[Any], output: type[serializers.Serializer]
) -> Response:
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(output(page, many=True).data)


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API (controlplane/api_errors.py)."""

    error = serializers.CharField(help_text="One line naming the problem (and the field, where known).")
    fields = serializers.DictField(required=False, help_text="Messages per input field, for forms.")

    class Meta:
        ref_name = "Error"


def error_responses(described: dict[int, str], *codes: int) -> dict[int, OpenApiResponse]:
    """OpenAPI responses for ``codes``, each described in the app's own words."""
    return {code: OpenApiResponse(ErrorSerializer, description=described[code]) for code in codes}


def bad_input_response(exc: Any) -> Response:
    """400 with a service error's one line; its message also under the field it names."""
    line = " ".join(str(exc).split())
    body: dict[str, Any] = {"error": line}
    field = getattr(exc, "field", None)
    if field:
        prefix = f"{field}: "
        body["fields"] = {field: [line[len(prefix) :] if line.startswith(prefix) else line]}
    return Response(body, status=status.HTTP_400_BAD_REQUEST)


def get_or_404(queryset: QuerySet[Any], what: str, **lookup: Any) -> Any:
    try:
        return queryset.get(**lookup)
    except queryset.model.DoesNotExist:
        raise NotFound(f"{what} not found") from None
