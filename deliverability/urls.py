"""API routes of deliverability (mounted under /api/v1/)."""

from __future__ import annotations

from django.urls import path

import controlplane.path_converters  # noqa: F401  # registers <domain:...>
from deliverability import api

urlpatterns = [
    path("suppressions/", api.SuppressionListCreateApi.as_view(), name="suppression-list"),
    path("suppressions/<int:suppression_id>/", api.SuppressionDetailApi.as_view(), name="suppression-detail"),
    path("events/", api.EventListApi.as_view(), name="event-list"),
    path("domains/<domain:domain>/reputation", api.DomainReputationApi.as_view(), name="domain-reputation"),
]
