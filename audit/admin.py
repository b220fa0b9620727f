"""The audit trail in the admin: every role reads it; nobody adds, changes or deletes an entry."""

from __future__ import annotations

from django.contrib import admin

from audit.models import AuditEntry
from controlplane.admin_roles import ReadOnlyAdmin


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_label", "action", "target_label", "reason"]
    list_filter = ["action", "target_type", "actor_label"]
    search_fields = ["target_label", "reason", "actor_label"]
    date_hierarchy = "created_at"
