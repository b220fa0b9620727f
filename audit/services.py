"""Writing the audit trail: one function, called inside the transaction of the change it records."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from django.db import connection, models

from audit.models import AuditEntry
from controlplane.addresses import addresses_redacted

DETECTOR = "detector"  # the actor label of automatic decisions


def audit_record(
    *,
    action: str,
    target: models.Model | None,
    actor: Any = None,
    actor_label: str = "",
    reason: str = "",
    data: dict | None = None,
    target_label: str | None = None,
) -> AuditEntry:
    """Append one entry; ``actor`` is a user, or None (or a label) with ``actor_label`` naming the system part that acted.

    A command with no user passes its label as ``actor`` ("command:resolve_unknown").
    ``target_label`` replaces ``str(target)`` where that names a person: entries
    are never changed, so a GDPR erase could not blank it later. For the same
    reason any address in the label, the reason or the data (a note, an
    Idempotency-Key a client built from an address) is written as its hash label.
    ``target`` None: the change is about no one row (a retention run); ``target_label`` names it.
    """
    user = actor if getattr(actor, "is_authenticated", False) else None
    own = getattr(target, "domain", "")
    redacted = partial(addresses_redacted, own_domain=own if isinstance(own, str) else "")  # a domain's sender stays
    if isinstance(actor, str):
        actor_label = actor
    return AuditEntry.objects.create(
        actor=user,
        actor_label=(user.get_username() if user else actor_label)[:150] or "system",
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_label=redacted(str(target) if target_label is None else target_label)[:300],
        reason=redacted(reason),
        data=redacted(data or {}),
    )


def audit_entries_expire(*, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` of the oldest entries written before ``before`` (retention); returns how many.

    The one way an entry leaves the trail. On PostgreSQL the app role may not
    DELETE entries: the database function ``audit_entries_expire``
    (audit/migrations/0003_retention_expiry.py) does it with the owner's
    rights and refuses a cutoff younger than its floor of 365 days.
    """
    if connection.vendor != "postgresql":
        oldest = AuditEntry.objects.filter(created_at__lt=before).order_by("created_at", "pk").values_list("pk", flat=True)
        deleted, _ = AuditEntry.objects.filter(pk__in=list(oldest[:limit])).delete()
        return deleted
    with connection.cursor() as cursor:
        cursor.execute("SELECT audit_entries_expire(%s, %s)", [before, limit])
        return int(cursor.fetchone()[0])
