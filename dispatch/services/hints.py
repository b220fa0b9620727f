"""Hints to workers. PostgreSQL holds the work; a lost hint only delays it (the sweeper re-publishes)."""

from __future__ import annotations

from collections.abc import Iterable

from celery import current_app
from django.db import transaction

SEND_BATCH = "dispatch.tasks.send_batch"


def publish_send_batches(domain_ids: Iterable[int]) -> None:
    """Ask workers to drain each sending domain once the transaction commits."""
    wanted = sorted(set(domain_ids))

    def publish() -> None:
        for domain_id in wanted:
            current_app.send_task(SEND_BATCH, args=[domain_id])

    transaction.on_commit(publish)
