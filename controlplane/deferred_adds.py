"""Counter adds deferred to the end of a transaction, then made in one order: no two transactions wait on each other.

A worker's recording transaction adds to per-stream counters and to campaign
results several times (each refusal's event, then the batch's totals), and a
trigger or a feedback event adds to the same rows. Each add is an upsert that
holds its row until commit; taken in the order the adds happen, two such
transactions can hold one row each and wait for the other's (a deadlock,
which PostgreSQL ends by failing one of them). Inside ``deferred_adds()`` the
adds are summed in memory instead and made on exit, still in the
transaction: each table's rows in one statement in key order, the tables in
name order. The rows are then always taken in one global order.

Owners register how a table's adds are written (``register``); callers that
may run inside a deferral call ``defer`` first and write at once when it
says no deferral is open.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager

Writer = Callable[[Mapping[Hashable, Mapping[str, int]]], None]

_writers: dict[str, Writer] = {}
_open = threading.local()


def register(table: str, writer: Writer) -> None:
    """How ``table``'s summed adds are written: ``writer({key: {column: n}})``, one statement, keys sorted by it."""
    _writers[table] = writer


def defer(table: str, rows: Mapping[Hashable, Mapping[str, int]]) -> bool:
    """Sum these adds into the open deferral; False when none is open (the caller writes them now)."""
    pending: dict[str, dict[Hashable, Counter[str]]] | None = getattr(_open, "pending", None)
    if pending is None:
        return False
    table_rows = pending.setdefault(table, {})
    for key, counts in rows.items():
        table_rows.setdefault(key, Counter()).update({name: n for name, n in counts.items() if n})
    return True


@contextmanager
def deferred_adds() -> Iterator[None]:
    """Defer the adds made inside (nested: the outermost writes them); write them on a normal exit, drop them on an error
    (the transaction they belong to rolls back with it)."""
    if getattr(_open, "pending", None) is not None:
        yield
        return
    _open.pending = {}
    try:
        yield
        pending, _open.pending = _open.pending, None
        for table in sorted(pending):
            rows = {key: counts for key, counts in pending[table].items() if any(counts.values())}
            if rows:
                _writers[table](rows)
    finally:
        _open.pending = None
