"""Per (sending domain, provider group, minute) counters: one upsert that adds, safe across workers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from deliverability.errors import DeliverabilityError
from deliverability.models import DomainMinute


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def counters_add(*, domain_id: int, at: datetime | None = None, provider: str = "", **counts: int) -> None:
    """Add ``counts`` (column=n) to the row of the domain's stream to ``provider`` for the minute of ``at`` (now by default)."""
    counters_add_streams(domain_id=domain_id, at=at, by_provider={provider: counts})


def counters_add_streams(*, domain_id: int, at: datetime | None, by_provider: Mapping[str, Mapping[str, int]]) -> None:
    """Add to several of the domain's streams in one statement (a batch's recipients span provider groups).

    ``INSERT .. ON CONFLICT DO UPDATE SET c = c + excluded.c`` (PostgreSQL and
    SQLite alike): concurrent workers add without a lost update and without
    a read-modify-write round trip. Every row names every column, so one
    statement serves streams that add to different counters.
    """
    unknown = {name for counts in by_provider.values() for name in counts} - set(DomainMinute.COUNTS)
    if unknown:
        raise DeliverabilityError(f"unknown counter {sorted(unknown)[0]!r}")
    rows = {provider: counts for provider, counts in by_provider.items() if any(counts.values())}
    if not rows:
        return
    minute = connection.ops.adapt_datetimefield_value(minute_of(timezone.now() if at is None else at))
    changed = [c for c in DomainMinute.COUNTS if any(counts.get(c) for counts in rows.values())]
    columns = ["sending_domain_id", "provider", "minute", *DomainMinute.COUNTS]
    quote = connection.ops.quote_name
    table = quote(DomainMinute._meta.db_table)
    values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
    updates = ", ".join(f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in changed)
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) VALUES {values} "
        f"ON CONFLICT ({quote('sending_domain_id')}, {quote('provider')}, {quote('minute')}) DO UPDATE SET {updates}"
    )
    params: list[Any] = []
    for provider, counts in sorted(rows.items()):  # one order across workers: two statements never wait on each other in a cycle
        params += [domain_id, provider, minute, *(int(counts.get(c, 0)) for c in DomainMinute.COUNTS)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
