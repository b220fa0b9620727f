"""Regressions for what the fault suite (ops/faults) found. Each test fails without its fix.

- A trigger accepted while the broker was down answered 500 (the hint published
  after commit raised), although its rows were committed: the client was told
  it failed when it had not. Fixed in ``dispatch/services/hints.py``.
- A suppression that committed while a worker was handing a chunk over did not
  stop that chunk: the chunk had read the suppressions at its start, so its
  later messages went to the address after the suppression committed. Fixed in
  ``dispatch/services/worker.py`` (the chunk holds the suppression table SHARE).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection, connections

from controlplane.celery import app as celery_app
from deliverability.models import SendingDomain
from deliverability.services import suppression_add
from dispatch.models import Message, MessageStatus
from dispatch.services.delivery import SENT, Outcome, Prepared, Transport
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.celery_workers import app_broker
from tests.conftest import recipients
from tests.smtp_sink import _free_port


@pytest.mark.django_db
def test_a_trigger_is_accepted_while_the_broker_is_down(campaign: Any, django_capture_on_commit_callbacks: Any) -> None:
    dead_broker = f"amqp://guest:guest@127.0.0.1:{_free_port()}//"  # nothing listens there
    with app_broker(celery_app, dead_broker), django_capture_on_commit_callbacks(execute=True) as hooks:
        response, replayed = trigger_accept(campaign=campaign, idempotency_key="broker-down", recipients=recipients(3))
    assert hooks, "the hint is published after commit"
    assert (response["accepted"], replayed) == (3, False)
    assert Message.objects.filter(campaign=campaign, status=MessageStatus.QUEUED).count() == 3  # the sweeper sends them


class SuppressDuringChunk(Transport):
    """Records each hand-over; during the first one, another connection suppresses the last recipient.

    The first hand-over goes on once that suppression has committed or is seen
    waiting for a lock (pg_stat_activity), so the outcome never rests on timing.
    """

    def __init__(self, victim: str) -> None:
        self.victim, self.sent, self.committed_at = victim, [], None
        self.thread = threading.Thread(target=self._suppress)

    def _suppress(self) -> None:
        try:
            suppression_add(address=self.victim, reason="manual", source="test")
            self.committed_at = time.monotonic()
        finally:
            connections.close_all()

    def prepare(self, message: Message, domain: SendingDomain) -> Prepared | Outcome:
        return Prepared(message, b"")

    def send(self, prepared: Prepared) -> Outcome:
        if not self.sent:
            self.thread.start()
            deadline = time.monotonic() + 30
            while self.thread.is_alive() and not _someone_waits_for_a_lock():
                assert time.monotonic() < deadline, "the suppression neither committed nor waited"
                time.sleep(0.01)
        self.sent.append((prepared.message.recipient, time.monotonic()))
        return SENT


def _someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # the view is otherwise frozen for the transaction (the chunk's)
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_a_suppression_committed_during_a_chunk_stops_the_rest_of_that_chunk(campaign: Any, settings: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the hand-over guard's locks are PostgreSQL's")
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "RECHECK_EVERY": 10}
    people = recipients(4)
    trigger_accept(campaign=campaign, idempotency_key="chunk", recipients=people)
    victim = people[-1]["address"]
    transport = SuppressDuringChunk(victim)
    batch_send(domain_id=campaign.sending_domain_id, transport=transport)
    transport.thread.join(30)
    assert transport.committed_at is not None
    late = [(who, at) for who, at in transport.sent if who == victim and at > transport.committed_at]
    assert late == [], "a message went to the address after its suppression committed"


@pytest.mark.django_db(transaction=True)
def test_the_first_request_after_a_database_restart_gets_a_fresh_connection() -> None:
    """A restart kills every persistent connection; the next request must reconnect, not answer 500.

    The fault suite's API server answered 500 to the first trigger each of its
    threads served after a database restart (DATABASE_CONN_MAX_AGE keeps
    connections). Fixed by Django's CONN_HEALTH_CHECKS in controlplane/settings.py.
    """
    from django.db import close_old_connections

    if connection.vendor != "postgresql" or not connection.settings_dict["CONN_MAX_AGE"]:
        pytest.skip("only persistent PostgreSQL connections outlive a restart")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    killer = connections.create_connection("default")  # another session: what a restart does to this one
    try:
        with killer.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        killer.close()
    close_old_connections()  # what Django runs as every request (and Celery before every task) starts
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
