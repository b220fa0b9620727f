"""Issue 17: one message's story, the answer to "why did this person not get it?".

Real PostgreSQL and a real SMTP server on loopback (``SmtpSink``) that
defers or refuses one recipient domain at will; batches run in-process. Each
test walks one message through a real path (delivered, deferred then sent,
refused then a DSN, suppressed at the worker's last check, cancelled with its
campaign, a lease that ran out) and reads its story from ``message_story``,
the API and the admin.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.html import escape

from deliverability.assessments import version_assess
from deliverability.models import SuppressionReason
from dispatch.models import AttemptOutcome, Message, MessageAttempt, MessageStatus
from dispatch.services.campaigns import campaign_cancel
from dispatch.services.controls import campaign_pause
from dispatch.services.delivery import SENT
from dispatch.services.erasure import address_erase_everywhere
from dispatch.services.feedback import bounce_ingest
from dispatch.services.sweeper import leases_expire
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import BatchResult, batch_send, message_claim, messages_record
from dispatch.story import message_story
from dispatch.story_api import story_body
from templates_registry import services
from tests.conftest import SIMPLE_VARIABLES, assert_error
from tests.feedback_helpers import dsn, send_all
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.django_db

UNKNOWN_USER = "550 5.1.1 <gone@gone.example.org>: Recipient address rejected: user unknown"


@pytest.fixture
def quick_retries(settings: Any) -> None:
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "RETRY_BASE_SECONDS": 0.0}


def trigger(campaign: Any, key: str, *addresses: str) -> list[Message]:
    trigger_accept(campaign=campaign, idempotency_key=key, recipients=[{"address": a, "context": SIMPLE_VARIABLES} for a in addresses])
    return list(Message.objects.filter(trigger__idempotency_key=key).order_by("id"))


def kinds(story: Any) -> list[str]:
    return [entry.kind for entry in story.timeline]


# --- what became of it ---------------------------------------------------------------------------------


def test_a_delivered_message_tells_its_250_and_its_version(campaign: Any, smtp_sink: SmtpSink, approved_version: Any) -> None:
    [message] = trigger(campaign, "k1", "ana@ok.example.org")
    send_all(campaign)
    story = message_story(message)
    message.refresh_from_db()
    assert [(a.number, a.outcome, a.code, a.transport) for a in story.attempts] == [(1, AttemptOutcome.SENT, 250, "smtp")]
    assert story.verdict == f"delivered to the receiving server at {message.sent_at:%Y-%m-%d %H:%M:%S} UTC (250)"
    assert kinds(story) == ["created", "attempt"]
    assert story.events == [] and story.suppression is None
    version = story.version
    assert (version["template"], version["variant"], version["number"], version["status"]) == ("welcome", "a", 1, "approved")
    assert (version["origin"], version["approved_by"], version["parent"]) == ("human", "mara-marketer", None)


def test_an_ai_made_version_shows_its_generator_model_prompt_hash_and_parent(
    campaign: Any, smtp_sink: SmtpSink, approved_version: Any, marketer: Any, oncall: Any
) -> None:
    derived = services.version_derive(
        source=approved_version, created_by=oncall, subject="Hi {{ first_name }}, two picks", origin="ai",
        generator="copy-bot/2", model_name="some-llm-2026", prompt="Write a warmer subject line",
    )
    assessment = version_assess(version_id=derived.pk)
    assert assessment is not None and assessment.state == "scored"
    services.version_approve(version=derived, approved_by=marketer)
    [message] = trigger(campaign, "k1", "ana@ok.example.org")
    version = message_story(message).version
    assert (version["number"], version["origin"], version["generator"], version["model"]) == (2, "ai", "copy-bot/2", "some-llm-2026")
    assert version["prompt_hash"] == derived.prompt_hash and len(version["prompt_hash"]) == 64
    assert version["parent"] == {"id": approved_version.pk, "number": 1}
    assert version["created_by"] == "omar-oncall" and version["approved_by"] == "mara-marketer"


def test_deferred_then_sent_shows_both_attempts_and_the_receivers_4xx(
    campaign: Any, smtp_sink: SmtpSink, quick_retries: None
) -> None:
    [message] = trigger(campaign, "k1", "bo@busy.example.org")
    smtp_sink.handler.replies_by_domain["busy.example.org"] = "451 4.7.1 Greylisted, try again later"
    batch_send(domain_id=campaign.sending_domain_id)
    waiting = message_story(message)
    assert waiting.message.status == MessageStatus.DEFERRED
    assert waiting.verdict.startswith("deferred (451 4.7.1 Greylisted, try again later), attempt 1; next attempt at ")
    del smtp_sink.handler.replies_by_domain["busy.example.org"]
    send_all(campaign)
    story = message_story(message)
    attempts = [(a.number, a.outcome, a.code, a.reply) for a in story.attempts]
    assert attempts == [(1, "deferred", 451, "4.7.1 Greylisted, try again later"), (2, "sent", 250, "")]
    assert [(e.event_type, e.source, e.verified) for e in story.events] == [("deferred", "smtp", True)]
    assert kinds(story) == ["created", "attempt", "event", "attempt"]
    assert story.verdict.startswith("delivered to the receiving server at ") and story.verdict.endswith("(250)")


def test_refused_for_good_then_a_dsn_shows_both_events_and_the_suppression_they_caused(campaign: Any, smtp_sink: SmtpSink) -> None:
    [message] = trigger(campaign, "k1", "gone@gone.example.org")
    smtp_sink.handler.replies_by_domain["gone.example.org"] = UNKNOWN_USER
    send_all(campaign)
    message.refresh_from_db()
    bounce_ingest(raw=dsn(message, "5.1.1", UNKNOWN_USER), source="upload")
    story = message_story(message)
    assert [(a.outcome, a.code) for a in story.attempts] == [(AttemptOutcome.FAILED, 550)]
    assert story.verdict == f"refused for good: {UNKNOWN_USER}"
    events = [(e.event_type, e.kind, e.reason, e.source, e.verified) for e in story.events]
    assert events == [("bounced", "hard", "user_unknown", "smtp", True), ("bounced", "hard", "user_unknown", "upload", True)]
    assert story.suppression is not None and story.suppression.reason == SuppressionReason.HARD_BOUNCE
    assert story.suppression.sending_domain_id is None and story.suppression.event_id == story.events[0].pk
    assert kinds(story) == ["created", "attempt", "event", "suppression", "event"]


def test_a_suppressed_recipient_gets_no_message_at_the_door(campaign: Any, smtp_sink: SmtpSink) -> None:
    smtp_sink.handler.replies_by_domain["gone.example.org"] = UNKNOWN_USER
    trigger(campaign, "k1", "gone@gone.example.org")
    send_all(campaign)
    response, _ = trigger_accept(campaign=campaign, idempotency_key="k2", recipients=[{"address": "gone@gone.example.org", "context": {}}])
    assert response["suppressed_recipients"] == ["gone@gone.example.org"]
    assert Message.objects.count() == 1  # so a suppression's story is that of a message queued before it


def test_a_message_stopped_at_the_workers_last_check_tells_the_suppression_and_the_bounce_behind_it(
    campaign: Any, smtp_sink: SmtpSink, settings: Any
) -> None:
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "BATCH_SIZE": 1}  # the first message's bounce commits first
    smtp_sink.handler.replies_by_domain["gone.example.org"] = UNKNOWN_USER
    [first] = trigger(campaign, "k1", "gone@gone.example.org")
    [second] = trigger(campaign, "k2", "gone@gone.example.org")  # queued before anyone knew
    send_all(campaign)
    story = message_story(second)
    assert story.message.status == MessageStatus.SUPPRESSED
    assert [(a.outcome, a.code, a.reply) for a in story.attempts] == [("suppressed", None, "suppressed before sending")]
    assert story.suppression is not None and story.suppression.reason == SuppressionReason.HARD_BOUNCE
    bounce = story.suppression.event
    assert bounce is not None and bounce.message_uuid == first.uuid
    assert story.verdict == f"suppressed: hard bounce on {story.suppression.created_at:%Y-%m-%d} ({UNKNOWN_USER})"
    assert len(smtp_sink.handler.received) == 0


def test_a_message_cancelled_with_its_campaign_says_when_and_why(campaign: Any, marketer: Any) -> None:
    [message] = trigger(campaign, "k1", "ana@ok.example.org")
    campaign_cancel(campaign=campaign, actor=marketer, reason="wrong list uploaded")
    story = message_story(message)
    assert story.attempts == []
    assert [(c.action, c.actor_label) for c in story.changes] == [("campaign.cancel", "mara-marketer")]
    assert story.verdict == f"cancelled with its campaign on {story.changes[0].created_at:%Y-%m-%d %H:%M:%S} UTC: wrong list uploaded"
    assert kinds(story) == ["created", "campaign"]


def test_a_queued_message_of_a_paused_campaign_says_what_holds_it(campaign: Any, oncall: Any) -> None:
    [message] = trigger(campaign, "k1", "ana@ok.example.org")
    campaign_pause(campaign=campaign, reason="checking the links", actor=oncall)
    story = message_story(message)
    assert story.verdict.startswith("still queued: next attempt at ") and story.verdict.endswith("; held: its campaign is paused")
    assert [c.action for c in story.changes] == ["campaign.pause"]


def test_a_lease_that_ran_out_is_an_unknown_attempt_from_the_sweeper(campaign: Any) -> None:
    [message] = trigger(campaign, "k1", "ana@ok.example.org")
    message_claim(domain=campaign.sending_domain, limit=10)
    assert leases_expire(now=timezone.now() + timedelta(hours=1)) == 1
    story = message_story(message)
    assert [(a.number, a.outcome, a.transport) for a in story.attempts] == [(1, "unknown", "sweeper")]
    assert story.verdict.startswith("unknown: the worker stopped mid-hand-over")


# --- the hot path: one INSERT a batch -------------------------------------------------------------------


def test_a_batch_writes_its_attempts_in_one_insert(campaign: Any, smtp_sink: SmtpSink) -> None:
    smtp_sink.handler.replies_by_domain["gone.example.org"] = UNKNOWN_USER
    trigger(campaign, "k1", *[f"p{i}@ok.example.org" for i in range(8)], "gone@gone.example.org", "tempfail@ok.example.org")
    with CaptureQueriesContext(connection) as queries:
        batch_send(domain_id=campaign.sending_domain_id)
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "dispatch_messageattempt"')]
    assert len(inserts) == 1
    assert sorted(MessageAttempt.objects.values_list("outcome", flat=True)) == ["deferred", "failed", *["sent"] * 8]


# --- the API and the admin ------------------------------------------------------------------------------


def test_the_api_tells_the_story_to_every_role_and_to_nobody_else(
    campaign: Any, smtp_sink: SmtpSink, api_as: Any, oncall: Any, outsider: Any
) -> None:
    [message] = trigger(campaign, "k1", "ana@ok.example.org")
    send_all(campaign)
    path = f"/api/v1/messages/{message.uuid}"
    assert api_as(None).get(path).status_code == 401
    assert api_as(outsider).get(path).status_code == 403
    response = api_as(oncall).get(path)
    assert response.status_code == 200
    body = response.json()
    assert body["uuid"] == str(message.uuid) and body["status"] == "sent" and body["recipient"] == "ana@ok.example.org"
    assert body["verdict"] == message_story(message).verdict
    assert [(a["outcome"], a["code"]) for a in body["attempts"]] == [("sent", 250)]
    assert body["version"]["number"] == 1 and body["version"]["origin"] == "human"
    assert [entry["kind"] for entry in body["timeline"]] == ["created", "attempt"]
    assert body["message_id"] == f"<{message.uuid}@mail.example.com>"


def test_an_unknown_message_is_a_404_in_one_line(db: Any, api_as: Any, oncall: Any) -> None:
    error = assert_error(api_as(oncall).get("/api/v1/messages/00000000-0000-4000-8000-000000000000"), 404)
    assert error["error"] == "message 00000000-0000-4000-8000-000000000000 not found"


def test_the_admin_page_shows_the_verdict_above_the_timeline(campaign: Any, smtp_sink: SmtpSink, oncall: Any, staff_client: Any) -> None:
    smtp_sink.handler.replies_by_domain["gone.example.org"] = UNKNOWN_USER
    [message] = trigger(campaign, "k1", "gone@gone.example.org")
    send_all(campaign)
    page = staff_client(oncall).get(f"/admin/dispatch/message/{message.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    verdict = escape(message_story(message).verdict)
    assert verdict in html and html.index(verdict) < html.index("<th>time (UTC)</th>")
    assert escape(f"attempt 1 via smtp: failed: {UNKNOWN_USER}") in html


# --- the erase ------------------------------------------------------------------------------------------


def test_after_an_erase_the_story_names_no_address_and_still_tells_what_happened(campaign: Any, smtp_sink: SmtpSink) -> None:
    smtp_sink.handler.replies_by_domain["gone.example.org"] = UNKNOWN_USER
    [message, other] = trigger(campaign, "k1", "gone@gone.example.org", "bo@ok.example.org")
    send_all(campaign)
    message.refresh_from_db()
    bounce_ingest(raw=dsn(message, "5.1.1", UNKNOWN_USER), source="upload")
    MessageAttempt.objects.filter(message=other).update(reply="250 ok, forwarded for <gone@gone.example.org>")  # a mention
    assert "gone@gone.example.org" in json.dumps(story_body(message_story(message)), default=str)
    address_erase_everywhere(address="GONE@gone.example.org")
    text = json.dumps(story_body(message_story(message)), default=str).lower()
    assert "gone@" not in text
    story = message_story(message)
    assert story.message.recipient == "" and [a.reply for a in story.attempts] == [""]
    assert story.verdict == "refused for good: 550"
    assert story.suppression is not None  # still suppressed, found through the events' hash
    assert MessageAttempt.objects.get(message=other).reply == "250 ok, forwarded for <>"


def test_a_slow_workers_250_after_the_sweeper_gave_up_is_in_the_story(campaign: Any) -> None:
    """The worker records every outcome it got, also for a row the sweeper already marked unknown (which stays unknown)."""
    [message] = trigger(campaign, "k1", "ana@ok.example.org")
    claimed = message_claim(domain=campaign.sending_domain, limit=10)
    leases_expire(now=timezone.now() + timedelta(hours=1))
    messages_record(messages=claimed, outcomes={message.pk: SENT}, result=BatchResult())
    story = message_story(message)
    assert story.message.status == MessageStatus.UNKNOWN
    # "locmem": the EMAIL_BACKEND of tests without a sink, which the transport label follows
    assert [(a.outcome, a.transport) for a in story.attempts] == [("unknown", "sweeper"), ("sent", "locmem")]
    assert story.verdict.startswith("unknown by its lease, but the receiving server answered 250 at ")
