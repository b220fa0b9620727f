"""Results per campaign and version: counted as messages reach each outcome, read without scanning messages.

Three places count, each where the outcome becomes known:

- ``trigger_accept`` adds the messages it queued (``accepted``);
- the worker's recording adds those the receiver took (``sent``) or refused
  for good (``failed``), from the batch it holds in memory;
- every feedback path (our SMTP session's replies, DSNs, ESP webhooks, the
  unsubscribe link) goes through ``dispatch.services.feedback.ingested``,
  which calls ``result_event``; ESP tracking webhooks call ``result_tracked``
  for opens and clicks.

A message counts once per outcome: ``Message.outcomes`` keeps one bit per
outcome counted, set by a conditional UPDATE (``outcomes & bit = 0``) in the
same transaction as the counter's upsert, so a DSN that repeats our SMTP
session's bounce, or a recipient's fifth open, adds nothing; concurrent
reports of one message race on that row and one of them wins.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from controlplane.deferred_adds import defer, register
from deliverability.bounces import vocabulary as v
from deliverability.models import EventType, FeedbackEvent
from dispatch.models import CampaignResult, Message

# The outcomes counted once per message, and their bit in Message.outcomes.
_ONCE = ("delivered", "deferred", "bounced_hard", "bounced_soft", "complained", "unsubscribed", "opened", "clicked")
_BITS = {name: 1 << index for index, name in enumerate(_ONCE)}  # append only: the bits are stored
TRACKED = ("opened", "clicked")  # from ESP tracking webhooks; not feedback events
_COLUMNS = (*CampaignResult.COUNTS, "cost_micros")
_TABLE = CampaignResult._meta.db_table


def results_add(rows: Mapping[tuple[int, int], Mapping[str, int]]) -> None:
    """Add counts to (campaign id, version id) rows in one statement (``INSERT .. ON CONFLICT DO UPDATE`` adds), or,
    inside ``controlplane.deferred_adds.deferred_adds()``, when the transaction's adds are written together in key order."""
    kept: dict[Hashable, Mapping[str, int]] = {key: counts for key, counts in rows.items() if any(counts.values())}
    if not kept:
        return
    unknown = {name for counts in kept.values() for name in counts} - set(_COLUMNS)
    if unknown:
        raise ValueError(f"unknown result column {sorted(unknown)[0]!r}")  # a programming error, never input
    if not defer(_TABLE, kept):
        _write(kept)


def _write(rows: Mapping[Hashable, Mapping[str, int]]) -> None:
    quote = connection.ops.quote_name
    table = quote(CampaignResult._meta.db_table)
    columns = ["campaign_id", "version_id", *_COLUMNS]
    changed = [c for c in _COLUMNS if any(counts.get(c) for counts in rows.values())]
    values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) VALUES {values} "
        f"ON CONFLICT ({quote('campaign_id')}, {quote('version_id')}) DO UPDATE SET "
        + ", ".join(f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in changed)
    )
    params: list[Any] = []
    for key in sorted(cast("list[tuple[int, int]]", list(rows))):  # one lock order across workers
        campaign_id, version_id = key
        params += [campaign_id, version_id, *(int(rows[key].get(c, 0)) for c in _COLUMNS)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def results_accepted(messages: Iterable[Message]) -> None:
    """A trigger queued these messages."""
    counts = Counter((m.campaign_id, m.version_id) for m in messages)
    results_add({key: {"accepted": n} for key, n in counts.items()})


def results_delivered(*, taken: Iterable[Message], failed: Iterable[Message]) -> None:
    """A batch's final answers: taken by the receiver (``sent``), refused for good or given up on (``failed``);
    each costed at the price of the day (the transport charges a message handed to it, whatever the answer)."""
    rows: dict[tuple[int, int], Counter[str]] = {}
    price = message_cost_micros()
    for column, messages in (("sent", taken), ("failed", failed)):
        for m in messages:
            row = rows.setdefault((m.campaign_id, m.version_id), Counter())
            row[column] += 1
            row["cost_micros"] += price
    results_add(rows)


def message_cost_micros() -> int:
    """One message's cost on the configured transport, in millionths of the currency."""
    return round(settings.SENDPLANE_COST_PER_1000 * 1000)


def projected_cost(recipients: int) -> Decimal:
    """What sending to this many recipients costs at today's price."""
    return micros_amount(recipients * message_cost_micros())


def micros_amount(micros: int) -> Decimal:
    return (Decimal(micros) / 1_000_000).quantize(Decimal("0.01"))


def result_event(event: FeedbackEvent, message: Message) -> None:
    """A verified feedback event about ``message``: counted in its outcome, once per message."""
    column = _event_column(event)
    if column is not None:
        _once(message, column)


def result_tracked(message: Message, what: str) -> None:
    """An ESP's open or click of ``message`` (its tracking webhook): counted once per message."""
    if what not in TRACKED:
        raise ValueError(f"not a tracking outcome: {what!r}")
    _once(message, what)


def _event_column(event: FeedbackEvent) -> str | None:
    if event.event_type == EventType.BOUNCED:
        return "bounced_hard" if event.kind == v.Kind.HARD else "bounced_soft"
    return _EVENT_COLUMNS.get(event.event_type)


_EVENT_COLUMNS: dict[str, str] = {
    EventType.DELIVERED: "delivered",
    EventType.DEFERRED: "deferred",
    EventType.COMPLAINED: "complained",
    EventType.UNSUBSCRIBED: "unsubscribed",
}


def _once(message: Message, column: str) -> None:
    bit = _BITS[column]
    with transaction.atomic():
        # The bit and the count commit together: a report retried after a crash counts exactly once.
        fresh = Message.objects.filter(pk=message.pk).alias(seen=F("outcomes").bitand(bit)).filter(seen=0)
        if fresh.update(outcomes=F("outcomes").bitor(bit)):
            results_add({(message.campaign_id, message.version_id): {column: 1}})


register(_TABLE, _write)
