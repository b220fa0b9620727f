"""API routes of the audit trail (mounted under /api/v1/)."""

from __future__ import annotations

from django.urls import path

from audit import api

urlpatterns = [
    path("audit/", api.AuditEntryListApi.as_view(), name="audit-list"),
]
