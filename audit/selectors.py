"""Reading the audit trail."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet

from audit.models import AuditEntry


def audit_entries(
    *,
    action: str = "",
    target_type: str = "",
    target_id: str = "",
    actor: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEntry]:
    """Entries newest first. ``action`` ending in "." is a prefix ("domain." is every domain action);
    ``actor`` is a username or a system label ("detector"); ``since`` is inclusive, ``until`` exclusive."""
    rows = AuditEntry.objects.select_related("actor").order_by("-created_at", "-id")
    if action:
        rows = rows.filter(action__startswith=action) if action.endswith(".") else rows.filter(action=action)
    if target_type:
        rows = rows.filter(target_type=target_type.lower())
    if target_id:
        rows = rows.filter(target_id=target_id)
    if actor:
        rows = rows.filter(Q(actor__username=actor) | Q(actor_label=actor))
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    return rows
