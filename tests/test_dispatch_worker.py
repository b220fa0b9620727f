"""The worker's batch against a real SMTP server on loopback (in-process, no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from deliverability.services import domain_pause, suppression_add
from dispatch.models import Message, MessageStatus
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import recipients

pytestmark = pytest.mark.django_db


def drain(domain_id: int) -> None:
    for _ in range(1000):
        if not batch_send(domain_id=domain_id).more:
            return


def test_triggered_messages_reach_the_smtp_server_once_each(campaign: Any, smtp_sink: Any) -> None:
    response, _ = trigger_accept(campaign=campaign, idempotency_key="k1", recipients=recipients(120))
    assert response["accepted"] == 120
    drain(campaign.sending_domain_id)
    pairs = smtp_sink.pairs()
    assert len(pairs) == 120 == len(set(pairs))
    assert Message.objects.filter(status=MessageStatus.SENT).count() == 120


def test_every_message_has_unsubscribe_headers_and_a_stable_message_id(campaign: Any, smtp_sink: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k1", recipients=recipients(2))
    drain(campaign.sending_domain_id)
    message = Message.objects.order_by("id").first()
    received = next(r for r in smtp_sink.received if r.recipient == message.recipient).parsed()
    assert received["Message-ID"] == f"<{message.uuid}@mail.example.com>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<http://localhost:8000/u/" in received["List-Unsubscribe"] and "<mailto:unsubscribe+" in received["List-Unsubscribe"]
    assert received["Subject"] == "Hi R0" or received["Subject"].startswith("Hi R")
    assert {part.get_content_type() for part in received.walk()} >= {"text/plain", "text/html"}


def test_paused_domain_yields_no_claims(campaign: Any, smtp_sink: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k1", recipients=recipients(5))
    domain_pause(domain=campaign.sending_domain, reason="test")
    result = batch_send(domain_id=campaign.sending_domain_id)
    assert result.claimed == 0 and smtp_sink.pairs() == []
    assert Message.objects.filter(status=MessageStatus.QUEUED).count() == 5


def test_suppression_committed_after_trigger_stops_the_send(campaign: Any, smtp_sink: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k1", recipients=recipients(3))
    suppression_add(address="USER1@example.org", reason="unsubscribed")
    drain(campaign.sending_domain_id)
    assert "user1@example.org" not in {r for _, r in smtp_sink.pairs()}
    assert Message.objects.get(recipient="user1@example.org").status == MessageStatus.SUPPRESSED


def test_4xx_is_deferred_with_backoff_and_5xx_fails_with_the_reply(campaign: Any, smtp_sink: Any) -> None:
    people = recipients(1) + [
        {"address": "tempfail@example.org", "context": recipients(1)[0]["context"]},
        {"address": "reject@example.org", "context": recipients(1)[0]["context"]},
        {"address": "datafail@example.org", "context": recipients(1)[0]["context"]},
    ]
    trigger_accept(campaign=campaign, idempotency_key="k1", recipients=people)
    drain(campaign.sending_domain_id)
    deferred = Message.objects.get(recipient="tempfail@example.org")
    assert (deferred.status, deferred.last_code, deferred.attempts) == (MessageStatus.DEFERRED, 451, 1)
    assert deferred.not_before > deferred.updated_at.replace(microsecond=0)
    rejected = Message.objects.get(recipient="reject@example.org")
    assert (rejected.status, rejected.last_code) == (MessageStatus.FAILED, 550) and "No such user" in rejected.last_reply
    assert Message.objects.get(recipient="datafail@example.org").last_code == 552
    assert Message.objects.get(recipient="user0@example.org").status == MessageStatus.SENT


def test_4xx_gives_up_after_the_attempt_limit(campaign: Any, smtp_sink: Any, settings: Any) -> None:
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "RETRY_BASE_SECONDS": 0.0, "MAX_ATTEMPTS": 3}
    tempfail = {"address": "tempfail@example.org", "context": recipients(1)[0]["context"]}
    trigger_accept(campaign=campaign, idempotency_key="k1", recipients=[tempfail])
    for _ in range(5):
        batch_send(domain_id=campaign.sending_domain_id)
    message = Message.objects.get()
    assert (message.status, message.attempts) == (MessageStatus.FAILED, 3)
    assert message.last_reply.startswith("gave up after 3 attempts")
