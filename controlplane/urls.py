"""Root URLs: the admin, the REST API under /api/v1/ and its OpenAPI schema, ESP webhooks under /webhooks/,
health probes and Prometheus metrics (controlplane/health.py)."""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

from access.schema import SchemaUiView, SchemaView
from controlplane import health

api_v1: list[URLPattern | URLResolver] = [
    path("", include("templates_registry.urls")),
    path("", include("dispatch.urls")),
    path("", include("deliverability.urls")),
    path("", include("audit.urls")),
    path("schema/", SchemaView.as_view(), name="api-schema"),
    path("schema/ui/", SchemaUiView.as_view(url_name="api-schema"), name="api-schema-ui"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("u/", include("dispatch.unsubscribe_urls")),
    path("api/v1/", include(api_v1)),
    path("webhooks/", include(("dispatch.webhook_urls", "anymail"))),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("readyz/spamd", health.readyz_spamd, name="readyz-spamd"),
    path("metrics", health.metrics_view, name="metrics"),
]

# A URL no route matches is the API's JSON 404 under /api/ (Django's HTML page elsewhere).
handler404 = "controlplane.api_errors.not_found"
