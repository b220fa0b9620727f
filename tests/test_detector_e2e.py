"""End to end: a campaign is running, bounces flood in through ingestion, the beat task pauses the
domain, and no message of that domain reaches the SMTP server after the pause commits."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections
from django.db.models import Count
from django.utils import timezone

from deliverability.models import PauseEvidence, SendingDomain
from deliverability.tasks import detect
from dispatch.models import Message, MessageStatus
from dispatch.services.feedback import bounce_ingest
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import recipients, relay_at
from tests.feedback_helpers import verp_of
from tests.smtp_sink import SmtpSink

WAIT_SECONDS = 60  # generous bounds for a loaded CI machine; nothing is timed


def user_unknown(message: Message) -> bytes:
    """The DSN a receiving MTA sends to our VERP address when the mailbox does not exist."""
    return (
        f"From: MAILER-DAEMON@mx.example.org\r\nTo: {verp_of(message)}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {message.recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 The email account that you tried to reach does not exist\r\n--B--\r\n"
    ).encode()


class Worker(threading.Thread):
    """A dispatch worker on its own database connection, sending batches until told to stop."""

    def __init__(self, domain_id: int) -> None:
        super().__init__(daemon=True)
        self.domain_id, self.stop, self.error = domain_id, threading.Event(), None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if not batch_send(domain_id=self.domain_id).more:
                    self.stop.wait(0.02)  # bucket empty or nothing claimable: ask again shortly
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc
        finally:
            connections.close_all()


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def slow_sink(settings: Any) -> Any:
    """A loaded MTA (20 ms a message): the worker spends most of its time mid-hand-over, where a pause lands."""
    with SmtpSink(delay_seconds=0.02) as sink, relay_at(settings, sink):
        yield sink


@pytest.mark.django_db(transaction=True)
def test_a_bounce_flood_pauses_the_domain_and_nothing_is_sent_after_the_pause_commits(campaign: Any, slow_sink: Any) -> None:
    SendingDomain.objects.filter(pk=campaign.sending_domain_id).update(rate_per_second=40, burst=20)
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(3000))
    worker = Worker(campaign.sending_domain_id)
    worker.start()
    try:
        sent = Message.objects.filter(campaign=campaign, status=MessageStatus.SENT)
        wait_for(lambda: sent.count() >= 200, "200 messages sent")
        # A bad list: every other delivered message comes back as an unknown user.
        for message in list(sent.select_related("sending_domain").order_by("sent_at")[:200:2]):
            bounce_ingest(raw=user_unknown(message), source="mailbox")
        # The beat fires in the next minute, so the current one counts as complete.
        paused = detect(now=(timezone.now() + timedelta(minutes=1)).isoformat())
        committed_at = time.time()
        assert paused == 1
        time.sleep(0.5)  # let the worker try to go on; it must find nothing to claim
    finally:
        worker.stop.set()
        worker.join(WAIT_SECONDS)
    assert worker.error is None, worker.error
    domain = SendingDomain.objects.get(pk=campaign.sending_domain_id)
    assert domain.paused and domain.paused_by == "detector"
    evidence = PauseEvidence.objects.get()
    assert evidence.signal == "bounce" and evidence.events >= 5
    arrivals = [r.at for r in slow_sink.received]
    assert arrivals and max(arrivals) <= committed_at, f"{sum(a > committed_at for a in arrivals)} message(s) after the pause"
    # The campaign was stopped well short of its 3,000: the rest wait, none was lost.
    statuses = dict(Message.objects.filter(campaign=campaign).values_list("status").annotate(n=Count("id")))
    assert statuses.get(MessageStatus.QUEUED, 0) > 1000
    assert statuses.get(MessageStatus.SENT, 0) == len(arrivals)
    assert MessageStatus.SENDING not in statuses
