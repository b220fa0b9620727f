"""GDPR erase of one address: every copy of it goes, and it stays suppressed (by hash only).

Erasure is also a request not to be mailed: a global suppression keyed by the
address's hash is kept (with the address blanked), so a later trigger naming
the address is dropped without us storing who it was.

What it covers (ops/privacy.md keeps the list for a data protection officer):

- the person's own rows: outbox messages to them (address, context, last
  reply, every attempt's reply), suppressions and feedback events keyed by their address's hash;
- mentions of the address anywhere else: trigger answers, Idempotency-Keys a
  client built from it (rewritten to their hash, so a retry still replays),
  other recipients' contexts, last replies and attempts' replies, suppression notes, feedback
  events' replies and details (a report's ``reported_recipient``), pause
  reasons, the admin's history;
- not the audit trail, which never holds an address in clear
  (``audit_record`` writes any as its hash label), nor the logs, which name
  messages by uuid.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.db.models import Q, QuerySet

from audit.services import audit_record
from controlplane.addresses import address_hash, address_spellings, hash_label
from deliverability.models import (
    ConsentRecord,
    FeedbackEvent,
    PauseEvidence,
    ProviderStream,
    SendingDomain,
    SendingSwitch,
    Suppression,
    SuppressionReason,
)
from deliverability.services import address_erase, suppression_add
from dispatch.models import WAITING, JobItem, JobKind, Message, MessageAttempt, MessageStatus, Trigger
from dispatch.services.triggers import erased_key

ERASED = ""  # what an erased recipient reads as

# Rows that are not the person's own but whose free text may name them: (model, text fields, JSON fields).
_MENTIONS: tuple[tuple[type[models.Model], tuple[str, ...], tuple[str, ...]], ...] = (
    (Message, ("last_reply",), ("context",)),
    (MessageAttempt, ("reply",), ()),  # another recipient's refusal may quote this one (a shared alias, a forward)
    (Suppression, ("source",), ()),
    (FeedbackEvent, ("smtp_reply",), ("detail",)),
    (SendingDomain, ("paused_reason",), ()),
    (SendingSwitch, ("paused_reason",), ()),
    (ProviderStream, ("paused_reason",), ("replies",)),  # a provider's refusal may quote the recipient
    (PauseEvidence, (), ("replies",)),
    (LogEntry, ("object_repr", "change_message"), ()),
    (ConsentRecord, ("source", "withdrawn_source"), ()),  # where it was given or withdrawn, as a caller wrote it
)


@dataclass(frozen=True)
class ErasureResult:
    messages: int
    triggers: int
    suppressions: int
    events: int
    mentions: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def address_erase_everywhere(*, address: str, requested_by: Any = None) -> ErasureResult:
    """Blank the address wherever it is stored (module docstring); all or nothing.

    Every spelling of the address is found (case, Unicode or punycode domain:
    ``address_spellings``). One audit entry, naming the address only by its
    hash; a repeated erase changes nothing and writes none.
    """
    spellings = address_spellings(address)
    with transaction.atomic():
        kept, _ = suppression_add(
            address=address, reason=SuppressionReason.MANUAL, source="GDPR erasure", created_by=requested_by
        )
        # iexact: the database's case folding, which is Unicode-aware under a UTF-8 ctype (ops/configuration.md)
        messages = Message.objects.filter(_any_of("recipient__iexact", spellings))
        # Not yet sent: never will be.
        waiting = messages_blank(messages.filter(status__in=WAITING), status=MessageStatus.SUPPRESSED, last_reply="erased on request")
        message_count = waiting + messages_blank(messages)
        trigger_count = _erase_in_trigger_answers(spellings)
        erased = address_erase(address=address)
        _erase_in_admin_log(spellings)
        mentions = _erase_in_idempotency_keys(spellings) + _erase_mentions(spellings) + _erase_in_job_input(spellings)
        result = ErasureResult(message_count, trigger_count, erased.suppressions, erased.events, mentions)
        if any(result.as_dict().values()):
            label = hash_label(address_hash(address))
            audit_record(action="address.erase", target=kept, actor=requested_by, target_label=label, data=result.as_dict())
    return result


def messages_blank(messages: QuerySet[Message], **also: Any) -> int:
    """What an erased (or expired: dispatch.services.retention) outbox row keeps: no address, context or last reply,
    and no reply in its attempts; its status, codes and times stay. ``also``: more columns to set. Returns the rows.

    A receiving server's reply often quotes the address ("550 <a@b>: unknown"). The attempts go first: ``messages``
    may find its rows by the address this blanks.
    """
    MessageAttempt.objects.filter(message__in=messages).exclude(reply=ERASED).update(reply=ERASED)
    return messages.update(**{"recipient": ERASED, "context": {}, "last_reply": ERASED, **also})


def _any_of(lookup: str, values: list[str]) -> Q:
    condition = Q()
    for value in values:
        condition |= Q(**{lookup: value})
    return condition


def _erase_in_trigger_answers(spellings: list[str]) -> int:
    """Trigger answers list suppressed and rejected recipients; replayed answers must not leak the address.

    A rejected recipient is echoed as the client sent it (" <Gone@example.org>"),
    so a value naming the address goes, not only an exact match.
    """
    names = _naming(spellings)
    changed = 0
    for trigger in Trigger.objects.filter(_any_of("response__icontains", spellings)).select_for_update():
        response = copy.deepcopy(trigger.response)
        response["suppressed_recipients"] = [a for a in response.get("suppressed_recipients", []) if not names(a)]
        for rejection in [*response.get("rejections", []), *response.get("without_consent_recipients", [])]:
            if names(rejection.get("address", "")):
                rejection["address"] = ERASED
        if response != trigger.response:
            Trigger.objects.filter(pk=trigger.pk).update(response=response)
            changed += 1
    return changed


def _naming(spellings: list[str]) -> Callable[[Any], bool]:
    """Whether a value names the address, alone or in brackets; "ana@example.org" does not name "na@example.org"."""
    pattern = _mention_pattern(spellings)
    return lambda value: pattern.search(str(value)) is not None


def _mention_pattern(spellings: list[str]) -> re.Pattern[str]:
    either = "|".join(re.escape(s) for s in spellings)
    return re.compile(rf"(?<![^\s<>\"',;:(\[])(?:{either})(?![^\s<>\"',;:)\]])", re.IGNORECASE)


def _erase_in_admin_log(spellings: list[str]) -> None:
    """The admin history names a suppression added or deleted by hand as "<address> (<reason>)"."""
    LogEntry.objects.filter(
        _any_of("object_repr__istartswith", [f"{s} (" for s in spellings]),
        content_type=ContentType.objects.get_for_model(Suppression),
    ).update(object_repr="erased")


def _erase_in_idempotency_keys(spellings: list[str]) -> int:
    """A key naming the address becomes its hash (``triggers.erased_key``): a client's retry still replays."""
    changed = 0
    for trigger in Trigger.objects.filter(_any_of("idempotency_key__icontains", spellings)).select_for_update():
        Trigger.objects.filter(pk=trigger.pk).update(idempotency_key=erased_key(trigger.idempotency_key))
        changed += 1
    return changed


def _erase_in_job_input(spellings: list[str]) -> int:
    """A running suppression import naming the person: its item goes (the kept global suppression does what it would
    do); the job ends without it, one short of its total. An erasure list's item is itself this request: the job
    erases it when it comes to it (again, which changes nothing), counting it as every other."""
    waiting = JobItem.objects.filter(_any_of("data__address__iexact", spellings)).exclude(job__kind=JobKind.ERASURE)
    deleted, _ = waiting.delete()
    return deleted


def _erase_mentions(spellings: list[str]) -> int:
    """Blank the address where free text elsewhere names it; returns the rows changed.

    Found by the database (a case-insensitive substring), changed here where
    it names the address alone or in brackets ("hana@x.org" does not name
    "ana@x.org"), so text around it stays.
    """
    pattern = _mention_pattern(spellings)
    changed = 0
    for model, texts, jsons in _MENTIONS:
        fields = texts + jsons
        found = Q()
        for name in fields:
            found |= _any_of(f"{name}__icontains", spellings)
        for row in model._default_manager.filter(found).only("pk", *fields).select_for_update():
            values = {name: _scrubbed(getattr(row, name), pattern) for name in fields}
            values = {name: value for name, value in values.items() if value != getattr(row, name)}
            if values:
                model._default_manager.filter(pk=row.pk).update(**values)
                changed += 1
    return changed


def _scrubbed(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(ERASED, value)
    if isinstance(value, dict):
        return {key: _scrubbed(item, pattern) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item, pattern) for item in value]
    return value
