"""The audit trail in the admin: every role reads it; nobody adds, changes or deletes an entry."""

from __future__ import annotations

import json
from typing import Any

from django.apps import apps
from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from audit.models import AuditEntry
from controlplane.admin_roles import ReadOnlyAdmin


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_label", "action", "target", "reason"]
    list_filter = ["action", "target_type", "actor_label"]
    search_fields = ["target_label", "reason", "actor_label"]
    date_hierarchy = "created_at"
    fields = ["created_at", "actor", "actor_label", "action", "target_type", "target_id", "target", "reason", "pretty_data"]
    readonly_fields = ["target", "pretty_data"]

    @admin.display(description="target", ordering="target_label")
    def target(self, entry: AuditEntry) -> Any:
        """A link to the target's admin page where it has one (a deleted target's page says it is gone)."""
        url = _admin_url(entry.target_type, entry.target_id)
        return format_html('<a href="{}">{}</a>', url, entry.target_label) if url else entry.target_label

    @admin.display(description="data")
    def pretty_data(self, entry: AuditEntry) -> Any:
        return format_html("<pre>{}</pre>", json.dumps(entry.data, indent=2, sort_keys=True, ensure_ascii=False))


def _admin_url(target_type: str, target_id: str) -> str | None:
    app_label, _, model_name = target_type.partition(".")
    try:
        model = apps.get_model(app_label, model_name)
    except (LookupError, ValueError):
        return None
    if not target_id or not admin.site.is_registered(model):
        return None
    try:
        return reverse(f"admin:{app_label}_{model_name}_change", args=[target_id])
    except NoReverseMatch:
        return None
