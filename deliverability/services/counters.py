"""Per (sending domain, provider group, minute) counters: one upsert that adds, safe across workers."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from datetime import datetime
from typing import Any, cast

from django.db import connection
from django.utils import timezone

from controlplane.deferred_adds import defer, register
from deliverability.errors import DeliverabilityError
from deliverability.models import DomainMinute

_TABLE = DomainMinute._meta.db_table


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def counters_add(*, domain_id: int, at: datetime | None = None, provider: str = "", **counts: int) -> None:
    """Add ``counts`` (column=n) to the row of the domain's stream to ``provider`` for the minute of ``at`` (now by default)."""
    counters_add_streams(domain_id=domain_id, at=at, by_provider={provider: counts})


def counters_add_streams(*, domain_id: int, at: datetime | None, by_provider: Mapping[str, Mapping[str, int]]) -> None:
    """Add to several of the domain's streams (a batch's recipients span provider groups) in one statement, or, inside
    ``controlplane.deferred_adds.deferred_adds()``, when the transaction's adds are written together in key order."""
    unknown = {name for counts in by_provider.values() for name in counts} - set(DomainMinute.COUNTS)
    if unknown:
        raise DeliverabilityError(f"unknown counter {sorted(unknown)[0]!r}")
    minute = minute_of(timezone.now() if at is None else at)
    rows: dict[Hashable, Mapping[str, int]] = {
        (domain_id, provider, minute): counts for provider, counts in by_provider.items() if any(counts.values())
    }
    if rows and not defer(_TABLE, rows):
        _write(rows)


def _write(rows: Mapping[Hashable, Mapping[str, int]]) -> None:
    """``INSERT .. ON CONFLICT DO UPDATE SET c = c + excluded.c`` (PostgreSQL and SQLite alike): concurrent workers add
    without a lost update and without a read-modify-write round trip. Every row names every column, so one statement
    serves rows that add to different counters; rows in key order, so two statements never wait on each other in a cycle."""
    changed = [c for c in DomainMinute.COUNTS if any(counts.get(c) for counts in rows.values())]
    columns = ["sending_domain_id", "provider", "minute", *DomainMinute.COUNTS]
    quote = connection.ops.quote_name
    table = quote(_TABLE)
    values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
    updates = ", ".join(f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in changed)
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) VALUES {values} "
        f"ON CONFLICT ({quote('sending_domain_id')}, {quote('provider')}, {quote('minute')}) DO UPDATE SET {updates}"
    )
    params: list[Any] = []
    for key in sorted(cast("list[_Key]", list(rows))):
        domain_id, provider, minute = key
        adds = [int(rows[key].get(c, 0)) for c in DomainMinute.COUNTS]
        params += [domain_id, provider, connection.ops.adapt_datetimefield_value(minute), *adds]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


_Key = tuple[int, str, datetime]  # (sending domain id, provider group, minute): the rows counters_add_streams makes


register(_TABLE, _write)
