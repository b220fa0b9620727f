"""Admin for sending domains and suppressions: read-only here; changes go through services
(on-call pause and resume actions come with issue 7)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from controlplane.api import user_roles
from deliverability.models import SendingDomain, Suppression


class _ReadOnly(admin.ModelAdmin):
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(user_roles(request.user))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(user_roles(request.user))


@admin.register(SendingDomain)
class SendingDomainAdmin(_ReadOnly):
    list_display = ["domain", "default_sender", "rate_per_second", "burst", "paused", "paused_reason"]
    list_filter = ["paused"]
    search_fields = ["domain"]


@admin.register(Suppression)
class SuppressionAdmin(_ReadOnly):
    list_display = ["address", "sending_domain", "reason", "source", "created_at"]
    list_filter = ["reason", "sending_domain"]
    search_fields = ["address"]
