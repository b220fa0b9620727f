"""Consent: who agreed to which marketing purpose, on what basis, with what evidence, and withdrawals.

One row per (address, purpose), keyed like a suppression by the hash of the
address's matching form (``controlplane.addresses``): giving again after a
withdrawal re-opens the row, and every change is in the audit trail. A
withdrawal is an unsubscribe from that purpose: it holds whatever the domain's
policy, and it is written even for an address that never gave consent here
(one who withdraws must not be mailed for the purpose, whatever an import says
later, until they give it again).

Which trigger recipients this refuses is ``deliverability.selectors.consent_refusals``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from controlplane.addresses import address_checked, address_hash, hash_label
from controlplane.json_values import json_problem
from deliverability.errors import DeliverabilityError
from deliverability.models import DEFAULT_PURPOSE, TRANSACTIONAL, ConsentRecord, LawfulBasis, Purpose

EVIDENCE_MAX_BYTES = 4096  # a form's id, the wording shown, a double opt-in time: never a document


def purpose_known(slug: str) -> bool:
    """The built-in purposes, or a defined one."""
    return slug in (TRANSACTIONAL, DEFAULT_PURPOSE) or Purpose.objects.filter(slug=slug).exists()


def marketing_purpose_checked(slug: Any, *, field: str = "purpose") -> str:
    """``slug`` if it names a marketing purpose (built-in or defined), else DeliverabilityError naming the field."""
    if not isinstance(slug, str) or not slug:
        raise DeliverabilityError("must name a purpose", field=field)
    if slug == TRANSACTIONAL:
        raise DeliverabilityError("transactional mail needs no consent: name a marketing purpose", field=field)
    if not purpose_known(slug):
        raise DeliverabilityError(f"unknown purpose {slug[:64]!r}: define it first (admin: Purposes)", field=field)
    return slug


def consent_give(
    *,
    address: str,
    purpose: str,
    source: str,
    lawful_basis: str = LawfulBasis.CONSENT,
    evidence: dict[str, Any] | None = None,
    given_at: datetime | None = None,
    created_by: Any = None,
) -> tuple[ConsentRecord, bool]:
    """Record consent (or re-open a withdrawn one). Returns (row, changed); a repeat of the same consent changes nothing."""
    normalized = address_checked(address).lower()
    marketing_purpose_checked(purpose)
    if lawful_basis not in LawfulBasis.values:
        raise DeliverabilityError(f"must be one of {', '.join(LawfulBasis.values)}", field="lawful_basis")
    if not isinstance(source, str) or not source.strip():
        raise DeliverabilityError("must say where the consent was given (a form, an import, a person)", field="source")
    evidence = _evidence_checked(evidence or {})
    when = given_at or timezone.now()
    if when > timezone.now():
        raise DeliverabilityError("must not be in the future", field="given_at")
    digest = address_hash(normalized)
    with transaction.atomic():
        row = ConsentRecord.objects.select_for_update().filter(address_hash=digest, purpose=purpose).first()
        if row is not None and row.withdrawn_at is None:
            return row, False
        if row is not None and row.withdrawn_at is not None and row.withdrawn_at > when:
            raise DeliverabilityError("was withdrawn after that time: consent must be given again, later", field="given_at")
        row = row or ConsentRecord(address_hash=digest, purpose=purpose)
        row.address, row.lawful_basis, row.source = normalized, lawful_basis, source.strip()[:200]
        row.evidence, row.given_at = evidence, when
        row.withdrawn_at, row.withdrawn_source = None, ""
        row.created_by = created_by if getattr(created_by, "is_authenticated", False) else None
        row.save()
        _audit("consent.give", row, actor=created_by, data={"lawful_basis": lawful_basis, "source": row.source})
    return row, True


def consent_withdraw(*, address: str, purpose: str, source: str, withdrawn_by: Any = None) -> tuple[ConsentRecord, bool]:
    """Withdraw consent for ``purpose`` (an unsubscribe from it). Returns (row, changed); idempotent."""
    normalized = address_checked(address).lower()
    marketing_purpose_checked(purpose)
    now = timezone.now()
    digest = address_hash(normalized)
    with transaction.atomic():
        row, created = ConsentRecord.objects.select_for_update().get_or_create(
            address_hash=digest, purpose=purpose,
            defaults={"address": normalized, "source": "never given here", "given_at": now, "withdrawn_at": now},
        )
        if not created and row.withdrawn_at is not None:
            return row, False
        row.withdrawn_at, row.withdrawn_source = now, source[:200]
        row.save(update_fields=["withdrawn_at", "withdrawn_source", "updated_at"])
        _audit("consent.withdraw", row, actor=withdrawn_by, actor_label="" if withdrawn_by else source, data={"source": source[:200]})
    return row, True


def _evidence_checked(evidence: Any) -> dict[str, Any]:
    if not isinstance(evidence, dict):
        raise DeliverabilityError("must be an object", field="evidence")
    problem = json_problem(evidence)
    if problem:
        raise DeliverabilityError(problem, field="evidence")
    if len(json.dumps(evidence, ensure_ascii=False).encode()) > EVIDENCE_MAX_BYTES:
        raise DeliverabilityError(f"must be at most {EVIDENCE_MAX_BYTES} bytes as JSON", field="evidence")
    return evidence


def _audit(action: str, row: ConsentRecord, *, actor: Any, actor_label: str = "", data: dict[str, Any]) -> None:
    audit_record(
        action=action, target=row, actor=actor, actor_label=actor_label,
        data={"purpose": row.purpose, **data}, target_label=f"{hash_label(row.address_hash)} ({row.purpose})",
    )
