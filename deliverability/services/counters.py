"""Per (sending domain, minute) counters: one upsert that adds, safe across workers."""

from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.utils import timezone

from deliverability.errors import DeliverabilityError
from deliverability.models import DomainMinute


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def counters_add(*, domain_id: int, at: datetime | None = None, **counts: int) -> None:
    """Add ``counts`` (column=n) to the domain's row for the minute of ``at`` (now by default).

    ``INSERT .. ON CONFLICT DO UPDATE SET c = c + excluded.c`` (PostgreSQL and
    SQLite alike): concurrent workers add without a lost update and without
    a read-modify-write round trip.
    """
    unknown = set(counts) - set(DomainMinute.COUNTS)
    if unknown:
        raise DeliverabilityError(f"unknown counter {sorted(unknown)[0]!r}")
    counts = {name: n for name, n in counts.items() if n}
    if not counts:
        return
    minute = minute_of(timezone.now() if at is None else at)
    columns = ["sending_domain_id", "minute", *counts]
    quote = connection.ops.quote_name
    table = quote(DomainMinute._meta.db_table)
    placeholders = ", ".join(["%s"] * len(columns))
    updates = ", ".join(f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in counts)
    defaults = [c for c in DomainMinute.COUNTS if c not in counts]  # NOT NULL columns the insert must fill
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns + defaults)}) "
        f"VALUES ({placeholders}{', 0' * len(defaults)}) "
        f"ON CONFLICT ({quote('sending_domain_id')}, {quote('minute')}) DO UPDATE SET {updates}"
    )
    params = [domain_id, connection.ops.adapt_datetimefield_value(minute), *counts.values()]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
