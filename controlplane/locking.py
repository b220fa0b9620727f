"""Row-lock options of ``QuerySet.select_for_update`` that only some databases have.

PostgreSQL has ``FOR NO KEY UPDATE`` and ``SKIP LOCKED``; SQLite (the embedded
demo) has neither. Spread the result into the call:
``Model.objects.select_for_update(**lock_no_key())``. The TypedDict lets mypy
check the spread against ``select_for_update``'s keywords.
"""

from __future__ import annotations

from typing import TypedDict

from django.db import connection
from django.db.models import Model


class LockOptions(TypedDict, total=False):
    no_key: bool
    skip_locked: bool


def lock_no_key() -> LockOptions:
    """``FOR NO KEY UPDATE`` where available: a flag write that does not wait for ``FOR KEY SHARE`` readers."""
    return {"no_key": True} if connection.features.has_select_for_no_key_update else {}


def lock_skip_locked() -> LockOptions:
    """``SKIP LOCKED`` where available: concurrent claims take different rows instead of queueing."""
    return {"skip_locked": True} if connection.features.has_select_for_update_skip_locked else {}


def row_share_lock(model: type[Model], pk: int, *, exclusive: bool = False) -> None:
    """Lock one row ``FOR SHARE`` (or ``FOR NO KEY UPDATE`` when ``exclusive``) until the transaction ends: writers
    of it (``FOR NO KEY UPDATE``, ``FOR UPDATE``) wait for the holders, and the holders for a writer that came first.
    SQLite (one writer at a time) needs none."""
    if connection.vendor != "postgresql":
        return
    table, column = model._meta.db_table, model._meta.pk.column
    mode = "NO KEY UPDATE" if exclusive else "SHARE"
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT 1 FROM "{table}" WHERE "{column}" = %s FOR {mode}', [pk])
