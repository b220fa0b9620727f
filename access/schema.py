"""The OpenAPI description of our token scheme (drf-spectacular cannot infer it from a custom class), and the
schema's views, which ask the permission table like every other API view."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from access.permissions import Capability, CapabilityPermission


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "access.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'An API token (manage.py create_token) with the prefix "Token" or "Bearer": `Token sp_…`.',
        }


class SchemaView(SpectacularAPIView):
    """The OpenAPI document: for anyone the permission table lets read (it maps every route an attacker would try)."""

    permission_classes = [CapabilityPermission]
    read_capability = Capability.READ


class SchemaUiView(SpectacularSwaggerView):
    """Swagger UI, its files served by drf-spectacular-sidecar from STATIC_URL (SWAGGER_UI_DIST: no CDN)."""

    http_method_names = ["get", "head"]  # DRF's OPTIONS answer has no template for this HTML-only view: a 500
    permission_classes = [CapabilityPermission]
    read_capability = Capability.READ
