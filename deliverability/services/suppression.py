"""Suppression: who must not get mail, why, and the GDPR erase that keeps them suppressed.

Rows are keyed by a SHA-256 of the address's matching form
(``controlplane.addresses``), so erasing a person
blanks every stored copy of their address while the hash still stops a send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from audit.services import audit_record
from controlplane.addresses import address_checked, address_hash, address_key, hash_label
from deliverability.errors import DeliverabilityError
from deliverability.models import ConsentRecord, FeedbackEvent, SendingDomain, Suppression, SuppressionReason


def suppression_scope(reason: str) -> str:
    """``global`` or ``domain``: where a suppression for this reason applies (SENDPLANE_SUPPRESS_* settings)."""
    return settings.SENDPLANE_SUPPRESSION["SCOPES"].get(reason, "global")


def suppression_add(
    *,
    address: str,
    reason: str,
    sending_domain: SendingDomain | None = None,
    source: str = "",
    created_by: Any = None,
    event: FeedbackEvent | None = None,
) -> tuple[Suppression, bool]:
    """Suppress ``address`` (for one domain, or everywhere); idempotent. Returns (row, created).

    A new row is audited: by ``created_by`` (the acting user, stored on the row), else by the feedback source of ``event``.
    """
    if reason not in SuppressionReason.values:
        raise DeliverabilityError(f"must be one of {', '.join(SuppressionReason.values)}", field="reason")
    normalized = address_checked(address).lower()  # shown as given, in lower case; matched by its hash
    digest = address_hash(normalized)
    try:
        with transaction.atomic():
            row = Suppression.objects.create(
                address=normalized, address_hash=digest, sending_domain=sending_domain, reason=reason,
                source=source[:200], created_by=created_by, event=event,
            )
            by = f"feedback:{event.source}" if event is not None else ""
            _audit("suppression.add", row, actor=created_by, actor_label=by, reason=row.source, event=event.pk if event else None)
            return row, True
    except IntegrityError:
        return Suppression.objects.get(address_hash=digest, sending_domain=sending_domain), False


def _audit(action: str, row: Suppression, *, actor: object, actor_label: str = "", reason: str = "", **data: object) -> None:
    domain = row.sending_domain.domain if row.sending_domain else None
    audit_record(
        action=action, target=row, actor=actor, actor_label=actor_label, reason=reason,
        data={"reason": row.reason, "domain": domain, **data},
        target_label=f"{hash_label(row.address_hash)} ({row.reason}, {domain or 'all domains'})",
    )


def suppression_remove(*, suppression: Suppression, removed_by: object = None, reason: str = "") -> bool:
    """Lift a suppression (a person decided it was wrong); the events that caused it stay. False: it was gone."""
    with transaction.atomic():
        deleted, _ = Suppression.objects.filter(pk=suppression.pk).delete()
        if deleted:
            _audit("suppression.remove", suppression, actor=removed_by, reason=reason, created_at=suppression.created_at.isoformat())
    return bool(deleted)


@dataclass(frozen=True)
class Erasure:
    suppressions: int
    events: int


def address_erase(*, address: str) -> Erasure:
    """GDPR erase in deliverability: blank the address everywhere we keep it; suppressions stay (by hash).

    The caller (dispatch) erases the outbox rows in the same transaction and
    writes the one ``address.erase`` audit entry with every count. Rows already
    erased are not counted again: a repeated erase changes nothing.
    """
    if "@" not in address_key(address):
        raise DeliverabilityError("must be an email address", field="address")
    digest = address_hash(address)
    with transaction.atomic():
        suppressions = Suppression.objects.filter(address_hash=digest).exclude(address="").update(address="")
        events = events_blank(FeedbackEvent.objects.filter(recipient_hash=digest).exclude(recipient=""))
        consents_blank(ConsentRecord.objects.filter(address_hash=digest).exclude(address="", evidence={}))  # withdrawals hold
    return Erasure(suppressions=suppressions, events=events)


def events_blank(events: QuerySet[FeedbackEvent]) -> int:
    """What an erased (or expired: dispatch.services.retention) feedback event keeps: its type, kind, reason, times,
    message and the recipient's hash, so counts, suppression and the soft-bounce window still work; not who or what was said."""
    return events.update(recipient="", smtp_reply="", detail={})


def consents_blank(consents: QuerySet[ConsentRecord]) -> int:
    """What an erased (or expired) consent record keeps: purpose, basis, source and times, and its hash, so a
    withdrawal still stops a send; not the address nor the evidence (the form, the wording, the IP address)."""
    return consents.update(address="", evidence={})
