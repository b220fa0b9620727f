"""Writing the audit trail: one function, called inside the transaction of the change it records."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import models

from audit.models import AuditEntry
from controlplane.addresses import addresses_redacted

DETECTOR = "detector"  # the actor label of automatic decisions


def audit_record(
    *,
    action: str,
    target: models.Model,
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
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        target_label=redacted(str(target) if target_label is None else target_label)[:300],
        reason=redacted(reason),
        data=redacted(data or {}),
    )
