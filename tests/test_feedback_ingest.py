"""Raw bounces and complaints in: tied to the outbox, recorded once, suppressing by policy, counted.

Real corpus messages (../shared/corpora/bounces) are the input; where a test
needs the bounce to name one of our messages, the original Message-ID the
bounce quotes is swapped for ours, the way a real bounce of our mail reads.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from deliverability.models import DomainMinute, FeedbackEvent, Suppression
from deliverability.selectors import address_suppressed, suppressed_among
from deliverability.services import domain_create
from dispatch.models import Message, MessageStatus
from dispatch.services.feedback import FeedbackError, bounce_ingest
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import recipients
from tests.feedback_helpers import (
    GMAIL_USER_UNKNOWN,
    SES_MAILBOX_FULL,
    bounce_of,
    complaint_of,
    corpus,
    counters,
    sent_message,
    verp_of,
)

pytestmark = pytest.mark.django_db
# --- tying reports to messages ----------------------------------------------------------


def test_a_hard_bounce_quoting_our_message_id_suppresses_and_counts(campaign: Any) -> None:
    message = sent_message(campaign, "userunknown@example.jp")
    [result] = bounce_ingest(raw=bounce_of(message), source="upload")
    event = result.event
    assert (event.event_type, event.kind, event.reason, event.status) == ("bounced", "hard", "user_unknown", "5.1.1")
    assert (event.message_uuid, event.matched_by, event.sending_domain_id) == (message.uuid, "message_id", campaign.sending_domain_id)
    assert result.created and result.suppressed
    row = Suppression.objects.get()
    assert (row.address, row.reason, row.sending_domain, row.event) == ("userunknown@example.jp", "hard_bounce", None, event)
    assert counters(campaign.sending_domain_id)["bounced_hard"] == 1


def _dsn_to_verp(message: Message, reported: str, *, verp: str = "") -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.example.net\r\nTo: {verp or verp_of(message)}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {reported}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n--B--\r\n"
    ).encode()


def test_a_bounce_to_our_signed_verp_address_for_its_recipient_suppresses_the_address_we_sent_to(campaign: Any) -> None:
    message = sent_message(campaign, "alias@example.org")
    [result] = bounce_ingest(raw=_dsn_to_verp(message, "Alias@EXAMPLE.org"), source="mailbox")
    event = result.event
    assert (event.matched_by, event.message_uuid, event.recipient, event.verified) == ("verp", message.uuid, "alias@example.org", True)
    assert address_suppressed(address="alias@example.org")
    assert counters(campaign.sending_domain_id)["bounced_hard"] == 1


def test_a_bounce_to_our_verp_address_naming_another_recipient_is_evidence_only(campaign: Any) -> None:
    message = sent_message(campaign, "alias@example.org")
    [result] = bounce_ingest(raw=_dsn_to_verp(message, "forwarded-target@example.net"), source="mailbox")
    event = result.event
    assert (event.matched_by, event.message_uuid, event.recipient, event.verified) == (
        "verp", message.uuid, "forwarded-target@example.net", False
    )
    assert event.detail == {"unverified": "the report names another recipient than the message's"}
    assert not Suppression.objects.exists()
    assert counters(campaign.sending_domain_id)["bounced_hard"] == 0


def test_a_bounce_naming_only_the_recipient_is_kept_as_evidence_about_their_last_message(campaign: Any) -> None:
    message = sent_message(campaign, "kijitora@example.jp")
    [result] = bounce_ingest(raw=corpus(SES_MAILBOX_FULL), source="upload")
    assert (result.event.matched_by, result.event.message_uuid, result.event.verified) == ("recipient", message.uuid, False)
    assert (result.event.kind, result.event.reason) == ("soft", "mailbox_full")
    assert counters(campaign.sending_domain_id)["bounced_soft"] == 0


def test_a_report_about_nobody_we_mailed_is_recorded_without_a_domain_and_changes_nothing(campaign: Any) -> None:
    [result] = bounce_ingest(raw=corpus(GMAIL_USER_UNKNOWN), source="upload")
    event = result.event
    assert (event.sending_domain, event.message_uuid, event.matched_by, event.verified) == (None, None, "", False)
    assert event.detail["unverified"] == "no message of ours"
    assert not DomainMinute.objects.exists()
    assert not Suppression.objects.exists()


# --- idempotency and bad input ------------------------------------------------------------


def test_the_same_bounce_twice_changes_nothing_the_second_time(campaign: Any) -> None:
    message = sent_message(campaign, "userunknown@example.jp")
    raw = bounce_of(message)
    first = bounce_ingest(raw=raw, source="upload")
    before = (FeedbackEvent.objects.count(), Suppression.objects.count(), counters(campaign.sending_domain_id))
    second = bounce_ingest(raw=raw, source="mailbox")
    assert [r.created for r in first] == [True] and [r.created for r in second] == [False]
    assert second[0].event.pk == first[0].event.pk
    assert (FeedbackEvent.objects.count(), Suppression.objects.count(), counters(campaign.sending_domain_id)) == before


def test_an_empty_or_oversized_message_is_refused_and_records_nothing(settings: Any) -> None:
    settings.SENDPLANE_BOUNCE_MAX_BYTES = 2048
    with pytest.raises(FeedbackError, match="empty"):
        bounce_ingest(raw=b"", source="upload")
    with pytest.raises(FeedbackError, match="limit is 2048"):
        bounce_ingest(raw=b"x" * 2049, source="upload")
    assert not FeedbackEvent.objects.exists()


def test_a_message_that_is_no_bounce_is_recorded_as_unknown_and_suppresses_nobody(db: Any) -> None:
    [result] = bounce_ingest(raw=b"From: friend@example.org\r\nSubject: lunch?\r\n\r\nAre you free?\r\n", source="mailbox")
    assert (result.event.event_type, result.event.kind) == ("unknown", "unknown")
    assert not Suppression.objects.exists()


# --- suppression policy ---------------------------------------------------------------------


def test_a_complaint_suppresses_and_is_counted(campaign: Any) -> None:
    message = sent_message(campaign, "redacted@example.net")
    [result] = bounce_ingest(raw=complaint_of(message), source="mailbox")
    assert (result.event.event_type, result.event.feedback_type, result.suppressed) == ("complained", "abuse", True)
    assert (result.event.matched_by, result.event.verified) == ("message_id", True)
    assert Suppression.objects.get().reason == "complaint"
    assert counters(campaign.sending_domain_id)["complained"] == 1


def test_domain_scoped_policy_suppresses_for_that_domain_only(campaign: Any, settings: Any) -> None:
    settings.SENDPLANE_SUPPRESSION = {**settings.SENDPLANE_SUPPRESSION, "SCOPES": {"hard_bounce": "domain"}}
    other = domain_create(domain="other.example.com", default_sender="hi@other.example.com")
    message = sent_message(campaign, "userunknown@example.jp")
    bounce_ingest(raw=bounce_of(message), source="upload")
    assert suppressed_among(addresses=["userunknown@example.jp"], sending_domain=campaign.sending_domain) == {"userunknown@example.jp"}
    assert suppressed_among(addresses=["userunknown@example.jp"], sending_domain=other) == set()


def _mailbox_full(message: Message, n: int) -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.example.net\r\nTo: {verp_of(message)}\r\n"
        f"Subject: Undelivered Mail Returned to Sender (attempt {n})\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {message.recipient}\r\nAction: failed\r\nStatus: 5.2.2\r\n"
        "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n--B--\r\n"
    ).encode()


def test_soft_bounces_about_the_mailbox_suppress_after_the_limit_within_the_window(campaign: Any, settings: Any) -> None:
    settings.SENDPLANE_SUPPRESSION = {**settings.SENDPLANE_SUPPRESSION, "SOFT_BOUNCE_LIMIT": 3, "SOFT_BOUNCE_WINDOW_HOURS": 24}
    # Each soft bounce is about another message: one message's reports count once however often they come.
    messages = [sent_message(campaign, "full@example.org", key=f"k{n}") for n in range(3)]
    suppressed = [bounce_ingest(raw=_mailbox_full(message, n), source="mailbox")[0].suppressed for n, message in enumerate(messages)]
    assert suppressed == [False, False, True]
    row = Suppression.objects.get()
    assert (row.reason, row.sending_domain_id) == ("soft_bounce", campaign.sending_domain_id)  # soft: per domain by default
    assert counters(campaign.sending_domain_id)["bounced_soft"] == 3


def test_soft_bounces_outside_the_window_do_not_add_up(campaign: Any, settings: Any) -> None:
    settings.SENDPLANE_SUPPRESSION = {**settings.SENDPLANE_SUPPRESSION, "SOFT_BOUNCE_LIMIT": 2, "SOFT_BOUNCE_WINDOW_HOURS": 24}
    first, second = (sent_message(campaign, "full@example.org", key=key) for key in ("k0", "k1"))
    bounce_ingest(raw=_mailbox_full(first, 0), source="mailbox")
    FeedbackEvent.objects.update(occurred_at=timezone.now() - timedelta(hours=25))
    assert not bounce_ingest(raw=_mailbox_full(second, 1), source="mailbox")[0].suppressed


def test_reputation_blocks_never_suppress_the_recipient_and_count_apart(campaign: Any, settings: Any) -> None:
    settings.SENDPLANE_SUPPRESSION = {**settings.SENDPLANE_SUPPRESSION, "SOFT_BOUNCE_LIMIT": 1}
    message = sent_message(campaign, "someone@example.org")
    raw = _mailbox_full(message, 0).replace(b"Status: 5.2.2", b"Status: 5.7.1").replace(
        b"552 5.2.2 Mailbox full", b"550 5.7.1 Service unavailable; client host [192.0.2.1] blocked using zen.spamhaus.org"
    )
    [result] = bounce_ingest(raw=raw, source="mailbox")
    assert (result.event.kind, result.event.reason, result.suppressed) == ("soft", "blocked", False)
    assert counters(campaign.sending_domain_id)["bounced_reputation"] == 1


# --- the worker learns from its own SMTP sessions ----------------------------------------------


def test_a_5xx_at_rcpt_is_a_hard_bounce_event_and_every_final_attempt_is_counted(campaign: Any, smtp_sink: Any) -> None:
    people = recipients(3) + [{"address": "reject@example.org", "context": recipients(1)[0]["context"]}]
    trigger_accept(campaign=campaign, idempotency_key="k1", recipients=people)
    while batch_send(domain_id=campaign.sending_domain_id).more:
        pass
    event = FeedbackEvent.objects.get()
    assert (event.source, event.event_type, event.recipient, event.smtp_reply[:3]) == ("smtp", "bounced", "reject@example.org", "550")
    assert event.message_uuid == Message.objects.get(recipient="reject@example.org").uuid
    # Three accepted and one refused for good: four final attempts, the detector's denominator.
    assert counters(campaign.sending_domain_id)["sent"] == 4
    assert counters(campaign.sending_domain_id)["bounced_hard"] == 1


def test_a_4xx_at_rcpt_is_a_deferral_that_suppresses_nobody(campaign: Any, smtp_sink: Any) -> None:
    tempfail = {"address": "tempfail@example.org", "context": recipients(1)[0]["context"]}
    trigger_accept(campaign=campaign, idempotency_key="k1", recipients=[tempfail])
    batch_send(domain_id=campaign.sending_domain_id)
    event = FeedbackEvent.objects.get()
    assert (event.event_type, event.kind) == ("deferred", "soft")
    assert not Suppression.objects.exists()
    assert counters(campaign.sending_domain_id)["deferred"] == 1


def test_a_suppression_committed_before_handover_stops_the_send(campaign: Any, smtp_sink: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k1", recipients=recipients(2))
    message = Message.objects.get(recipient="user0@example.org")
    raw = bounce_of(message).replace(b"userunknown@example.jp", b"user0@example.org")
    bounce_ingest(raw=raw, source="upload")  # the bounce of an earlier mail, say, arrives now
    while batch_send(domain_id=campaign.sending_domain_id).more:
        pass
    assert [r for _, r in smtp_sink.pairs()] == ["user1@example.org"]
    assert Message.objects.get(pk=message.pk).status == MessageStatus.SUPPRESSED
