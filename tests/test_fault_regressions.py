"""Regressions for what the fault suite (ops/faults) found. Each test fails without its fix.

- A trigger accepted while the broker was down answered 500 (the hint published
  after commit raised), although its rows were committed: the client was told
  it failed when it had not. Fixed in ``dispatch/services/hints.py``.
- A suppression that committed while a worker was handing a chunk over did not
  stop that chunk. The first fix held the suppression table SHARE for the
  chunk, which made every suppression write wait on SMTP (issue 14); now the
  bound is explicit (deliverability/services/handover.py): a suppression never
  waits, the chunk in flight may still send to the address (its ``checked_at``
  is before the commit), the next chunk does not.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone

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
    """Records each hand-over; during the first one, another connection suppresses ``victim``.

    The first hand-over waits for that suppression's thread to end: if the
    suppression had to wait for the chunk in flight, the thread would still be
    alive after the join and the test fails, whatever the timing.
    """

    def __init__(self, victim: str) -> None:
        self.victim, self.sent = victim, []
        self.committed_at: datetime | None = None
        self.thread = threading.Thread(target=self._suppress)

    def _suppress(self) -> None:
        try:
            suppression_add(address=self.victim, reason="manual", source="test")
            self.committed_at = timezone.now()
        finally:
            connections.close_all()

    def prepare(self, message: Message, domain: SendingDomain) -> Prepared | Outcome:
        return Prepared(message, b"")

    def send(self, prepared: Prepared) -> Outcome:
        if not self.sent:
            self.thread.start()
            self.thread.join(30)
            assert not self.thread.is_alive(), "the suppression waited for the chunk being handed over"
        self.sent.append(prepared.message.recipient)
        return SENT


def _suppress_mid_chunk(campaign: Any, settings: Any, *, recheck_every: int) -> tuple[SuppressDuringChunk, Message]:
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "RECHECK_EVERY": recheck_every}
    people = recipients(4)
    trigger_accept(campaign=campaign, idempotency_key="chunk", recipients=people)
    transport = SuppressDuringChunk(people[-1]["address"])
    batch_send(domain_id=campaign.sending_domain_id, transport=transport)
    transport.thread.join(30)
    assert transport.committed_at is not None
    return transport, Message.objects.get(campaign=campaign, recipient=transport.victim)


@pytest.mark.django_db(transaction=True)
def test_a_suppression_never_waits_for_a_chunk_in_flight_and_the_chunk_that_read_before_it_is_the_bound(
    campaign: Any, settings: Any
) -> None:
    """The victim shares the chunk that was in flight: it may still go out, and its checked_at shows why."""
    transport, victim = _suppress_mid_chunk(campaign, settings, recheck_every=10)
    assert victim.status == MessageStatus.SENT and transport.victim in transport.sent
    assert victim.checked_at is not None and victim.checked_at < transport.committed_at


@pytest.mark.django_db(transaction=True)
def test_the_next_chunk_after_a_suppression_commits_does_not_send_to_it(campaign: Any, settings: Any) -> None:
    transport, victim = _suppress_mid_chunk(campaign, settings, recheck_every=2)
    assert victim.status == MessageStatus.SUPPRESSED and transport.victim not in transport.sent
    assert len(transport.sent) == 3


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


class StoppedMidHandOver(Transport):
    """Sends the first message; the worker is stopped (SystemExit, as SIGTERM does) while the second is on the wire."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def prepare(self, message: Message, domain: SendingDomain) -> Prepared | Outcome:
        return Prepared(message, b"")

    def send(self, prepared: Prepared) -> Outcome:
        if self.sent:
            raise SystemExit(143)
        self.sent.append(prepared.message.recipient)
        return SENT


@pytest.mark.django_db(transaction=True)
def test_a_worker_stopped_mid_hand_over_marks_what_was_in_flight_unknown_never_queued(campaign: Any, settings: Any) -> None:
    """Found by ops/bench/dispatch's cut-off: rows released after a stop were sent again when the campaign resumed."""
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "RECHECK_EVERY": 3, "BATCH_SIZE": 6}
    trigger_accept(campaign=campaign, idempotency_key="stop", recipients=recipients(6))
    with pytest.raises(SystemExit):
        batch_send(domain_id=campaign.sending_domain_id, transport=StoppedMidHandOver())
    statuses = Counter(Message.objects.filter(campaign=campaign).values_list("status", flat=True))
    # The first chunk: one sent, two handed to the transport when the stop came (unknown); the second chunk never started.
    assert statuses == Counter({MessageStatus.SENT: 1, MessageStatus.UNKNOWN: 2, MessageStatus.QUEUED: 3})
