"""Hints to workers. PostgreSQL holds the work; a lost hint only delays it (the sweeper re-publishes)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import current_app
from django.db import transaction
from kombu.exceptions import KombuError

from controlplane.correlation import task_headers

SEND_BATCH = "dispatch.tasks.send_batch"
logger = logging.getLogger("sendplane.dispatch")


def publish_send_batches(domain_ids: Iterable[int], *, correlation_id: str | None = None) -> None:
    """Ask workers to drain each sending domain once the transaction commits.

    The tasks carry ``correlation_id`` (default: the current request's or
    task's), taken now: the commit may run the hook outside this context.
    """
    wanted = sorted(set(domain_ids))
    headers = task_headers(correlation_id)

    def publish() -> None:
        for domain_id in wanted:
            try:
                current_app.send_task(SEND_BATCH, args=[domain_id], headers=headers)
            except (KombuError, OSError) as exc:
                # The rows are committed: raising here would answer an accepted trigger with a 500.
                logger.warning("broker unreachable, send hints left to the sweeper: %s", exc)
                return  # the rest would fail the same way, each after its own retries

    transaction.on_commit(publish)
