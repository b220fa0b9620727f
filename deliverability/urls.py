"""API routes of deliverability (mounted under /api/v1/)."""

from __future__ import annotations

from django.urls import path

import controlplane.path_converters  # noqa: F401  # registers <domain:...>
from deliverability import api, consent_api, domains_api

urlpatterns = [
    path("suppressions/", api.SuppressionListCreateApi.as_view(), name="suppression-list"),
    path("suppressions/<int:suppression_id>/", api.SuppressionDetailApi.as_view(), name="suppression-detail"),
    path("events/", api.EventListApi.as_view(), name="event-list"),
    path("purposes/", consent_api.PurposeListApi.as_view(), name="purpose-list"),
    path("consents/", consent_api.ConsentListCreateApi.as_view(), name="consent-list"),
    path("consents/withdraw", consent_api.ConsentWithdrawApi.as_view(), name="consent-withdraw"),
    path("domains/<domain:domain>/reputation", api.DomainReputationApi.as_view(), name="domain-reputation"),
    path("domains/<domain:domain>/check", domains_api.DomainCheckApi.as_view(), name="domain-check"),
]
