"""Small API building blocks shared by the apps: strict input, pagination, error shapes (permissions: access/permissions.py)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.json_values import json_problem


class StrictInputSerializer(serializers.Serializer):
    # Refuses fields it does not declare: a typo must not be silently dropped.
    # (A comment, not a docstring: drf-spectacular would give every subclass it as a description.)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


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
    # DRF's metaclass pops declared fields off the class, so this never shadows Serializer.fields; the stubs cannot know.
    fields = serializers.DictField(required=False, help_text="Messages per input field, for forms.")  # type: ignore[assignment]

    class Meta:
        ref_name = "Error"


def error_responses(described: dict[int, str], *codes: int) -> dict[int, OpenApiResponse]:
    """OpenAPI responses for ``codes``, each described in the app's own words."""
    return {code: OpenApiResponse(ErrorSerializer, description=described[code]) for code in codes}


def get_or_404(queryset: QuerySet[Any], what: str, **lookup: Any) -> Any:
    try:
        return queryset.get(**lookup)
    except queryset.model.DoesNotExist:
        raise NotFound(f"{what} not found") from None
