"""API routes of the template registry (mounted under /api/v1/)."""

from __future__ import annotations

from django.urls import path

from templates_registry import api

urlpatterns = [
    path("templates/", api.TemplateListCreateApi.as_view(), name="template-list"),
    path("templates/<slug:slug>/", api.TemplateDetailApi.as_view(), name="template-detail"),
    path("templates/<slug:slug>/variants/", api.VariantListCreateApi.as_view(), name="variant-list"),
    path(
        "templates/<slug:slug>/variants/<slug:variant_slug>/",
        api.VariantDetailApi.as_view(),
        name="variant-detail",
    ),
    path(
        "templates/<slug:slug>/variants/<slug:variant_slug>/rollback",
        api.VariantRollbackApi.as_view(),
        name="variant-rollback",
    ),
    path(
        "templates/<slug:slug>/variants/<slug:variant_slug>/versions/",
        api.VersionListCreateApi.as_view(),
        name="version-list",
    ),
    path("versions/<int:version_id>/", api.VersionDetailApi.as_view(), name="version-detail"),
    path("versions/<int:version_id>/preview", api.VersionPreviewApi.as_view(), name="version-preview"),
    path("versions/<int:version_id>/approve", api.VersionApproveApi.as_view(), name="version-approve"),
    path("versions/<int:version_id>/retire", api.VersionRetireApi.as_view(), name="version-retire"),
    path("versions/<int:version_id>/assessment", api.VersionAssessmentApi.as_view(), name="version-assessment"),
]
