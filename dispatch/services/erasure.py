"""GDPR erase of one address: every copy of it goes, and it stays suppressed (by hash only).

Erasure is also a request not to be mailed: a global suppression keyed by the
address's hash is kept (with the address blanked), so a later trigger naming
the address is dropped without us storing who it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from deliverability.models import SuppressionReason
from deliverability.services import address_erase, suppression_add
from deliverability.services.suppression import address_normalize
from dispatch.models import WAITING, Message, MessageStatus, Trigger

ERASED = ""  # what an erased recipient reads as


@dataclass(frozen=True)
class ErasureResult:
    messages: int
    triggers: int
    suppressions: int
    events: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def address_erase_everywhere(*, address: str, requested_by: Any = None) -> ErasureResult:
    """Blank the address in the outbox, trigger answers, suppressions and events; all or nothing."""
    normalized = address_normalize(address)
    with transaction.atomic():
        suppression_add(
            address=normalized, reason=SuppressionReason.MANUAL, source="GDPR erasure", created_by=requested_by
        )
        messages = Message.objects.filter(recipient__iexact=normalized)
        # Not yet sent: never will be.
        messages.filter(status__in=WAITING).update(status=MessageStatus.SUPPRESSED, last_reply="erased on request")
        message_count = messages.update(recipient=ERASED, context={})
        trigger_count = _erase_in_trigger_answers(normalized)
        erased = address_erase(address=normalized)
    return ErasureResult(message_count, trigger_count, erased.suppressions, erased.events)


def _erase_in_trigger_answers(address: str) -> int:
    """Trigger answers list suppressed and rejected recipients; replayed answers must not leak the address."""
    changed = 0
    for trigger in Trigger.objects.filter(response__icontains=address).select_for_update():
        response = trigger.response
        response["suppressed_recipients"] = [a for a in response.get("suppressed_recipients", []) if a.lower() != address]
        for rejection in response.get("rejections", []):
            if str(rejection.get("address", "")).strip().lower() == address:
                rejection["address"] = ERASED
        trigger.response = response
        trigger.save(update_fields=["response"])
        changed += 1
    return changed
