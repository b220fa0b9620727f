"""One error shape for the whole API: ``{"error": "<one line>", "fields": {...}}``.

Clients and on-call engineers get a single line that names the problem; the
per-field detail stays available for forms. No traceback ever leaves the server.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from controlplane.errors import ServiceError


def _first_message(detail: Any, path: str = "") -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            prefix = path if key == "non_field_errors" else f"{path}.{key}" if path else str(key)
            return _first_message(value, prefix)
        return path or "invalid input"
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                return _first_message(value, f"{path}[{index}]")
            return _first_message(value, path)
        return path or "invalid input"
    text = " ".join(str(detail).split())
    return f"{path}: {text}" if path else text


def service_error_response(exc: ServiceError) -> Response:
    """A service's refusal: its one line, also under the field it names, with the status it carries."""
    line = " ".join(str(exc).split())
    body: dict[str, Any] = {"error": line}
    if exc.field:
        prefix = f"{exc.field}: "
        body["fields"] = {exc.field: [line[len(prefix) :] if line.startswith(prefix) else line]}
    return Response(body, status=exc.status)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):  # every service's bad input, mapped here once (controlplane/errors.py)
        return service_error_response(exc)
    if isinstance(exc, RequestDataTooBig):  # Django raises it below DRF, which would answer with HTML
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response({"error": f"request body is larger than {limit} bytes"}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    only_detail = isinstance(detail, dict) and set(detail) == {"detail"}
    body: dict[str, Any] = {"error": _first_message(detail["detail"] if only_detail else detail)}
    if isinstance(detail, dict) and not only_detail:
        body["fields"] = detail
    response.data = body
    return response


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler404``: a URL no route matches (``/api/v1/campaigns/abc/``) is the API's JSON 404 under /api/."""
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return defaults.page_not_found(request, exception)
