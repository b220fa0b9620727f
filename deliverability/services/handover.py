"""The hand-over guard: the one owner of "nothing is handed to SMTP after a pause returns".

Both halves live here. A worker hands each chunk of messages to the transport
inside ``hand_over_guard``, which reads the pause flags of everything that can
stop the chunk (the sending domain, the global switch, the chunk's campaigns)
``FOR KEY SHARE`` in a transaction that lasts the chunk's exchanges. A pause
writes its flag under ``FOR NO KEY UPDATE`` (no conflict with the guard, so it
commits at once and every chunk that starts afterwards sees it) and then calls
``hand_overs_wait``, whose ``FOR UPDATE`` waits only for the chunks already in
progress. So once a pause call returns, nothing of its scope reaches SMTP.

These locks span network calls on purpose: the rows they hold are written only
by pauses, resumes and settings changes, never by frequent writes.

Suppressions are *not* held this way (they are written by every bounce,
complaint, unsubscribe and webhook, which must never wait on SMTP): a chunk
reads them once, at its start, inside the guard. A suppression that commits
after that read can still see that chunk's message to its address go out: at
most one chunk (``SENDPLANE_DISPATCH_RECHECK_EVERY`` messages) per worker after
the commit, and none after the worker's next chunk begins. ``checked_at``
records when each chunk read them, which is how the fault suite proves the bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import connection, models, transaction

from deliverability.models import SendingDomain, SendingSwitch

GLOBAL = "global"


@dataclass(frozen=True)
class Scope:
    """Rows, beside the domain and the global switch, whose pause stops a chunk: e.g. its campaigns.

    ``running`` is the filter a row passes while it may send (``{"status": "running"}``).
    """

    model: type[models.Model]
    ids: frozenset[int]
    running: dict[str, Any]


@contextmanager
def hand_over_guard(*, domain_id: int, scope: Scope) -> Iterator[set[int] | None]:
    """Yield the ids of ``scope`` still running, or None when the domain or all sending is paused.

    Hold it while the chunk is handed over; a pause of any of those rows waits
    for it to exit (PostgreSQL). On SQLite (the embedded demo: one host) the
    flags are re-read without a lock.
    """
    lock = connection.vendor == "postgresql"
    with transaction.atomic():
        stopped = _flag(SendingDomain, {"pk": domain_id}, lock=lock) or sending_paused(lock=lock)
        yield None if stopped else _running(scope, lock=lock)


def hand_overs_wait(model: type[models.Model], pk: int) -> None:
    """Return once no worker is handing over a chunk under this row's pause flag.

    Inside an outer transaction the flag is not visible to workers yet: the
    caller waits after its commit.
    """
    if transaction.get_connection().in_atomic_block:
        return
    with transaction.atomic():
        list(model._default_manager.select_for_update().filter(pk=pk).values_list("pk", flat=True))


def sending_paused(*, lock: bool) -> bool:
    """The global switch, read ``FOR KEY SHARE`` when ``lock`` (a claim or a chunk waits on "pause everything").

    The row must exist to be locked: a migration creates it, and it is created
    here if it went missing, so "pause everything" always has a row to wait on.
    """
    if not lock or connection.vendor != "postgresql":
        return SendingSwitch.objects.filter(paused=True).exists()
    found = _flag(SendingSwitch, {"name": GLOBAL}, lock=True)
    if found is None:
        SendingSwitch.objects.get_or_create(name=GLOBAL)
        found = _flag(SendingSwitch, {"name": GLOBAL}, lock=True)
    return bool(found)


def _flag(model: type[models.Model], where: dict[str, Any], *, lock: bool) -> bool | None:
    """The row's ``paused`` flag (None when there is no row), ``FOR KEY SHARE`` when ``lock``."""
    rows = model._default_manager.filter(**where).values_list("paused", flat=True)
    found = _key_share(rows) if lock else list(rows)
    return bool(found[0]) if found else None


def _running(scope: Scope, *, lock: bool) -> set[int]:
    rows = scope.model._default_manager.filter(pk__in=sorted(scope.ids), **scope.running).values_list("pk", flat=True)
    return set(_key_share(rows) if lock else rows)


def _key_share(rows: models.QuerySet[Any, Any]) -> list[Any]:
    """A one-column ``values_list`` read ``FOR KEY SHARE``: the ORM offers FOR UPDATE and FOR NO KEY UPDATE, not this."""
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} FOR KEY SHARE", params)
        return [row[0] for row in cursor.fetchall()]
