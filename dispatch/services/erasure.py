"""GDPR erase of one address: every copy of it goes, and it stays suppressed (by hash only).

Erasure is also a request not to be mailed: a global suppression keyed by the
address's hash is kept (with the address blanked), so a later trigger naming
the address is dropped without us storing who it was.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from audit.services import audit_record
from deliverability.models import Suppression, SuppressionReason
from deliverability.services import address_erase, suppression_add
from deliverability.services.suppression import address_hash, address_normalize, hash_label
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
    """Blank the address in the outbox, trigger answers, suppressions, events and admin history; all or nothing.

    One audit entry, naming the address only by its hash; a repeated erase changes nothing and writes none.
    """
    normalized = address_normalize(address)
    with transaction.atomic():
        kept, _ = suppression_add(
            address=normalized, reason=SuppressionReason.MANUAL, source="GDPR erasure", created_by=requested_by
        )
        messages = Message.objects.filter(recipient__iexact=normalized)
        # Not yet sent: never will be.
        waiting = messages.filter(status__in=WAITING).update(
            status=MessageStatus.SUPPRESSED, recipient=ERASED, context={}, last_reply="erased on request"
        )
        # The rest: a receiving server's last reply often quotes the address ("550 <a@b>: unknown").
        message_count = waiting + messages.update(recipient=ERASED, context={}, last_reply=ERASED)
        trigger_count = _erase_in_trigger_answers(normalized)
        erased = address_erase(address=normalized)
        _erase_in_admin_log(normalized)
        result = ErasureResult(message_count, trigger_count, erased.suppressions, erased.events)
        if any(result.as_dict().values()):
            label = hash_label(address_hash(normalized))
            audit_record(action="address.erase", target=kept, actor=requested_by, target_label=label, data=result.as_dict())
    return result


def _erase_in_trigger_answers(address: str) -> int:
    """Trigger answers list suppressed and rejected recipients; replayed answers must not leak the address.

    A rejected recipient is echoed as the client sent it (" <Gone@example.org>"),
    so a value naming the address goes, not only an exact match.
    """
    names = _naming(address)
    changed = 0
    for trigger in Trigger.objects.filter(response__icontains=address).select_for_update():
        response = copy.deepcopy(trigger.response)
        response["suppressed_recipients"] = [a for a in response.get("suppressed_recipients", []) if not names(a)]
        for rejection in response.get("rejections", []):
            if names(rejection.get("address", "")):
                rejection["address"] = ERASED
        if response != trigger.response:
            Trigger.objects.filter(pk=trigger.pk).update(response=response)
            changed += 1
    return changed


def _naming(address: str) -> Callable[[Any], bool]:
    """Whether a value names ``address``, alone or in brackets; "ana@example.org" does not name "na@example.org"."""
    pattern = re.compile(rf"(?<![^\s<>\"',;:(\[]){re.escape(address)}(?![^\s<>\"',;:)\]])", re.IGNORECASE)
    return lambda value: pattern.search(str(value)) is not None


def _erase_in_admin_log(address: str) -> None:
    """The admin history names a suppression added or deleted by hand as "<address> (<reason>)"."""
    LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Suppression), object_repr__istartswith=f"{address} ("
    ).update(object_repr="erased")
