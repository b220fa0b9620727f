"""ESP tracking webhooks: real provider payloads through anymail's real views into the feedback pipeline.

Messages are sent first through the real worker and anymail's test backend, so
the metadata the events echo is the metadata ``BackendTransport`` attached.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from deliverability.bounces import vocabulary as v
from deliverability.models import DomainMinute, FeedbackEvent, Suppression
from deliverability.selectors import address_suppressed
from dispatch.models import Message, MessageStatus
from dispatch.services.delivery import ESP_METADATA_KEY
from dispatch.services.triggers import trigger_accept
from dispatch.services.webhooks import event_verdict
from dispatch.services.worker import batch_send
from tests.conftest import recipients

pytestmark = pytest.mark.django_db

SECRET = "sendplane:Zq8w-hook-secret"
MAILGUN_KEY = "9f3c1e0b7a5d4c2e8f6a1b3d5c7e9f0a"
WHEN = 1718035200  # 2024-06-10T16:00:00Z
ISO_WHEN = "2024-06-10T16:00:00.000Z"
SES, SENDGRID, MAILGUN, POSTMARK, SPARKPOST = (
    f"/webhooks/{esp}/tracking/" for esp in ("amazon_ses", "sendgrid", "mailgun", "postmark", "sparkpost")
)


@dataclass(frozen=True)
class Sent:
    address: str
    metadata: dict[str, str]
    message_id: str


@pytest.fixture(autouse=True)
def _webhooks_on(settings: Any) -> None:
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET, "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}


@pytest.fixture
def sent(campaign: Any, settings: Any) -> Sent:
    """One message sent through an ESP backend: what an ESP would echo back about it."""
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    trigger_accept(campaign=campaign, idempotency_key="hooks", recipients=recipients(1))
    batch_send(domain_id=campaign.sending_domain_id)
    message = Message.objects.get(status=MessageStatus.SENT)
    (email,) = mail.outbox
    assert email.metadata == {ESP_METADATA_KEY: message.uuid.hex}
    return Sent(address=message.recipient, metadata=email.metadata, message_id=message.message_id())


def post(url: str, body: Any, *, auth: str | None = SECRET, content_type: str = "application/json", **headers: str) -> Any:
    # CSRF enforced as in production: anymail's views must stay exempt behind our 404 gate.
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    if auth is not None:
        headers["HTTP_AUTHORIZATION"] = "Basic " + b64encode(auth.encode()).decode()
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(url, data, content_type=content_type, **headers)


def state() -> tuple[Any, ...]:
    minutes = tuple(DomainMinute.objects.order_by("pk").values_list(*DomainMinute.COUNTS))
    return FeedbackEvent.objects.count(), Suppression.objects.count(), minutes


def minute(column: str) -> int:
    return sum(DomainMinute.objects.values_list(column, flat=True))


# --- payloads (shapes as each ESP documents them) ------------------------------------


def ses_post(sent: Sent, ses_message: dict[str, Any], *, auth: str | None = SECRET, sns_id: str = "") -> Any:
    sns_id = sns_id or str(uuid.uuid4())
    sns = {
        "Type": "Notification",
        "MessageId": sns_id,
        "TopicArn": "arn:aws:sns:us-east-1:111122223333:sendplane-ses-events",
        "Message": json.dumps(ses_message),
        "Timestamp": ISO_WHEN,
        "SignatureVersion": "1",
        "Signature": (
            "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N858fiTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43o"
            "bcgFxeL3khZl8IKvO61GWB6jI9b5+gLPoBc1Q="
        ),
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:111122223333:sendplane-ses-events:0f3d3f8e-0d2e-4c16-9f3a-2b1d2c0e9a11",
    }
    headers = {
        "HTTP_X_AMZ_SNS_MESSAGE_TYPE": "Notification",
        "HTTP_X_AMZ_SNS_MESSAGE_ID": sns_id,
        "HTTP_X_AMZ_SNS_TOPIC_ARN": sns["TopicArn"],
    }
    return post(SES, sns, auth=auth, content_type="text/plain; charset=UTF-8", **headers)


def ses_mail(sent: Sent) -> dict[str, Any]:
    return {
        "timestamp": "2024-06-10T15:59:58.000Z",
        "source": "news@mail.example.com",
        "sourceArn": "arn:aws:ses:us-east-1:111122223333:identity/mail.example.com",
        "sourceIp": "198.51.100.7",
        "sendingAccountId": "111122223333",
        "messageId": "0100018ffe5e6a1b-5c3a6f55-2b1d-4d83-8f3e-7a9e0c2d1b44-000000",
        "destination": [sent.address],
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": "Atelier <news@mail.example.com>"},
            {"name": "To", "value": sent.address},
            {"name": "Subject", "value": "Hi R0"},
            {"name": "Message-ID", "value": sent.message_id},
            {"name": "X-Metadata", "value": json.dumps(sent.metadata)},
        ],
        "commonHeaders": {
            "from": ["Atelier <news@mail.example.com>"], "to": [sent.address], "messageId": sent.message_id, "subject": "Hi R0"
        },
    }


def ses_bounce(sent: Sent, bounce_type: str, sub_type: str, status: str, diagnostic: str) -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": sub_type,
            "bouncedRecipients": [{"emailAddress": sent.address, "action": "failed", "status": status, "diagnosticCode": diagnostic}],
            "timestamp": ISO_WHEN,
            "feedbackId": "0100018ffe5e7c2a-1d9b1c3e-7f2a-4b5c-9d8e-6f7a8b9c0d1e-000000",
            "remoteMtaIp": "203.0.113.25",
            "reportingMTA": "dsn; a8-30.smtp-out.amazonses.com",
        },
        "mail": ses_mail(sent),
    }


def ses_complaint(sent: Sent) -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": sent.address}],
            "timestamp": ISO_WHEN,
            "feedbackId": "0100018ffe5e9d3b-2e8c2d4f-8a3b-4c6d-0e9f-7a8b9c0d1e2f-000000",
            "userAgent": "Yahoo!-Mail-Feedback/2.0",
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2024-06-10T15:59:59.000Z",
        },
        "mail": ses_mail(sent),
    }


def sendgrid_event(sent: Sent, event: str, **fields: Any) -> dict[str, Any]:
    # SendGrid merges custom_args (anymail metadata) into each event.
    return {
        "email": sent.address,
        "timestamp": WHEN,
        "smtp-id": sent.message_id,
        "event": event,
        "category": ["welcome"],
        "sg_event_id": f"sg-{event}-{uuid.uuid4().hex[:22]}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        **sent.metadata,
        **fields,
    }


SENDGRID_CASES = {
    # event fields, (event_type, kind, suppressed, counter)
    "bounce": (
        {
            "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
            "status": "5.1.1", "type": "bounce", "tls": 1, "ip": "167.89.106.1",
        },
        ("bounced", "hard", True, "bounced_hard"),
    ),
    "dropped": ({"reason": "Bounced Address", "status": "5.0.0"}, ("bounced", "hard", True, "bounced_hard")),
    "deferred": (
        {"response": "452 4.2.2 The email account that you tried to reach is over quota.", "attempt": "3", "tls": 1, "ip": "167.89.106.1"},
        ("deferred", "soft", False, "deferred"),
    ),
    "delivered": (
        {"response": "250 2.0.0 OK 1718035200 d2e1a72fcca58-6f0c8c0e5a8si1234567qkg.210 - gsmtp", "tls": 1, "ip": "167.89.106.1"},
        ("delivered", "delivered", False, "delivered"),
    ),
    "spamreport": ({}, ("complained", "complaint", True, "complained")),
    "unsubscribe": ({}, ("unsubscribed", "", True, "unsubscribed")),
}


def mailgun_body(sent: Sent, event_data: dict[str, Any], *, key: str = MAILGUN_KEY) -> dict[str, Any]:
    token = hashlib.sha256(json.dumps(event_data, sort_keys=True).encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), f"{WHEN}{token}".encode(), hashlib.sha256).hexdigest()
    common = {
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": WHEN + 0.529,
        "recipient": sent.address,
        "recipient-domain": sent.address.split("@")[1],
        "envelope": {"sender": "bounces@mail.example.com", "transport": "smtp", "targets": sent.address},
        "message": {
            "headers": {"to": sent.address, "message-id": sent.message_id.strip("<>"), "from": "news@mail.example.com", "subject": "Hi R0"},
            "attachments": [],
            "size": 11096,
        },
        "tags": ["welcome"],
        "campaigns": [],
        "user-variables": sent.metadata,
    }
    return {"signature": {"timestamp": str(WHEN), "token": token, "signature": signature}, "event-data": common | event_data}


def mailgun_failed(severity: str, code: int, status: str, message: str) -> dict[str, Any]:
    return {
        "event": "failed",
        "log-level": "error" if severity == "permanent" else "warn",
        "severity": severity,
        "reason": "bounce" if severity == "permanent" else "generic",
        "delivery-status": {
            "attempt-no": 1, "code": code, "enhanced-code": status, "message": message, "description": "", "mx-host": "mx.example.org",
            "session-seconds": 0.43,
        },
        "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False, "is-test-mode": False},
    }


def postmark_bounce(sent: Sent, kind: str, type_code: int, description: str, details: str) -> dict[str, Any]:
    return {
        "RecordType": "Bounce" if kind != "SpamComplaint" else "SpamComplaint",
        "ID": int(uuid.uuid4().int % 10**15),
        "Type": kind,
        "TypeCode": type_code,
        "Name": kind,
        "Tag": "welcome",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": sent.metadata,
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": description,
        "Details": details,
        "Email": sent.address,
        "From": "news@mail.example.com",
        "BouncedAt": "2024-06-10T16:00:00Z",
        "DumpAvailable": True,
        "Inactive": kind in ("HardBounce", "SpamComplaint"),
        "CanActivate": kind != "SpamComplaint",
        "Subject": "Hi R0",
        "Content": None,
    }


def postmark_delivery(sent: Sent) -> dict[str, Any]:
    # Delivery events carry no ID: their dedupe is a digest of what identifies them.
    return {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": sent.address,
        "Tag": "welcome",
        "DeliveredAt": "2024-06-10T16:00:00Z",
        "Details": "smtp;250 2.0.0 OK 1718035200 x3si123456qka.33 - gsmtp",
        "Metadata": sent.metadata,
    }


def sparkpost_event(sent: Sent, event_type: str, **fields: Any) -> list[dict[str, Any]]:
    event = {
        "type": event_type,
        "campaign_id": "welcome",
        "customer_id": "1",
        "event_id": str(92356927693813856 + uuid.uuid4().int % 10**6),
        "friendly_from": "news@mail.example.com",
        "ip_address": "203.0.113.25",
        "message_id": "000443ee14578172be22",
        "msg_from": "bounces@mail.example.com",
        "rcpt_meta": sent.metadata,
        "rcpt_tags": [],
        "rcpt_to": sent.address,
        "raw_rcpt_to": sent.address,
        "recipient_domain": sent.address.split("@")[1],
        "subject": "Hi R0",
        "timestamp": str(WHEN),
        "transmission_id": "65832150921904138",
        **fields,
    }
    return [{"msys": {"message_event": event}}]


# --- Amazon SES ----------------------------------------------------------------------


def test_ses_permanent_bounce_is_hard_and_suppresses_at_once(sent: Sent) -> None:
    bounce = ses_bounce(sent, "Permanent", "General", "5.1.1", "smtp; 550 5.1.1 user unknown")
    assert ses_post(sent, bounce).status_code == 200
    event = FeedbackEvent.objects.get()
    assert (event.event_type, event.kind, event.reason, event.status) == ("bounced", "hard", "user_unknown", "5.1.1")
    assert (event.source, event.matched_by, event.message_uuid.hex) == ("webhook:amazon_ses", "metadata", sent.metadata[ESP_METADATA_KEY])
    assert address_suppressed(address=sent.address)
    assert minute("bounced_hard") == 1


def test_ses_transient_bounce_is_soft_and_suppresses_nothing_the_first_time(sent: Sent) -> None:
    over_quota = "smtp; 452 4.2.2 The email account that you tried to reach is over quota."
    bounce = ses_bounce(sent, "Transient", "MailboxFull", "4.2.2", over_quota)
    assert ses_post(sent, bounce).status_code == 200
    event = FeedbackEvent.objects.get()
    assert (event.event_type, event.kind, event.reason) == ("bounced", "soft", "mailbox_full")
    assert not Suppression.objects.exists()
    assert minute("bounced_soft") == 1


def test_ses_permanent_block_is_not_an_address_failure(sent: Sent) -> None:
    # SES calls it Permanent, but a blocklist refusal says nothing lasting about the address.
    blocked = "smtp; 550 5.7.1 Service unavailable; client [198.51.100.7] blocked using zen.spamhaus.org"
    bounce = ses_bounce(sent, "Permanent", "General", "5.7.1", blocked)
    assert ses_post(sent, bounce).status_code == 200
    event = FeedbackEvent.objects.get()
    assert (event.kind, event.reason) == ("soft", "blocked")
    assert not Suppression.objects.exists() and minute("bounced_reputation") == 1


def test_ses_complaint_suppresses(sent: Sent) -> None:
    assert ses_post(sent, ses_complaint(sent)).status_code == 200
    event = FeedbackEvent.objects.get()
    assert (event.event_type, event.kind, event.feedback_type) == ("complained", "complaint", "abuse")
    assert address_suppressed(address=sent.address) and minute("complained") == 1


def test_ses_without_credentials_is_asked_for_them_and_wrong_ones_are_400(sent: Sent) -> None:
    before = state()
    bounce = ses_bounce(sent, "Permanent", "General", "5.1.1", "smtp; 550 5.1.1 user unknown")
    assert ses_post(sent, bounce, auth=None).status_code == 401  # SNS sends basic auth only once challenged
    assert ses_post(sent, bounce, auth="sendplane:guessed").status_code == 400
    assert state() == before


# --- SendGrid ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SENDGRID_CASES)
def test_sendgrid_events(sent: Sent, name: str) -> None:
    fields, (event_type, kind, suppressed, counter) = SENDGRID_CASES[name]
    assert post(SENDGRID, [sendgrid_event(sent, name, **fields)]).status_code == 200
    event = FeedbackEvent.objects.get()
    assert (event.event_type, event.kind, event.source) == (event_type, kind, "webhook:sendgrid")
    assert address_suppressed(address=sent.address, sending_domain=event.sending_domain) is suppressed
    assert minute(counter) == 1


def test_sendgrid_batch_records_each_event_and_skips_engagement(sent: Sent) -> None:
    batch = [
        sendgrid_event(sent, "processed"),
        sendgrid_event(sent, "delivered", response="250 2.0.0 OK"),
        sendgrid_event(sent, "open", useragent="Mozilla/5.0", ip="192.0.2.10"),
        sendgrid_event(sent, "click", url="https://example.com/offer", useragent="Mozilla/5.0", ip="192.0.2.10"),
    ]
    assert post(SENDGRID, batch).status_code == 200
    assert list(FeedbackEvent.objects.values_list("event_type", flat=True)) == ["delivered"]


# --- Mailgun -------------------------------------------------------------------------


def test_mailgun_permanent_failure_is_hard(sent: Sent) -> None:
    failed = mailgun_failed("permanent", 550, "5.1.1", "5.1.1 The email account that you tried to reach does not exist.")
    assert post(MAILGUN, mailgun_body(sent, failed)).status_code == 200
    event = FeedbackEvent.objects.get()
    assert (event.event_type, event.kind, event.reason) == ("bounced", "hard", "user_unknown")
    assert address_suppressed(address=sent.address)


def test_mailgun_temporary_failure_is_a_deferral(sent: Sent) -> None:
    failed = mailgun_failed("temporary", 452, "4.2.2", "4.2.2 The email account that you tried to reach is over quota.")
    assert post(MAILGUN, mailgun_body(sent, failed)).status_code == 200
    event = FeedbackEvent.objects.get()
    assert (event.event_type, event.kind) == ("deferred", "soft")
    assert not Suppression.objects.exists() and minute("deferred") == 1


def test_mailgun_complaint_suppresses(sent: Sent) -> None:
    assert post(MAILGUN, mailgun_body(sent, {"event": "complained", "log-level": "warn"})).status_code == 200
    assert FeedbackEvent.objects.get().event_type == "complained"
    assert address_suppressed(address=sent.address)


def test_mailgun_wrong_signature_is_400_and_records_nothing(sent: Sent) -> None:
    before = state()
    failed = mailgun_failed("permanent", 550, "5.1.1", "5.1.1 user unknown")
    assert post(MAILGUN, mailgun_body(sent, failed, key="not-the-signing-key")).status_code == 400
    assert state() == before


# --- Postmark ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            (
                "HardBounce",
                1,
                "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
                "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            ),
            ("bounced", "hard", True, "bounced_hard"),
        ),
        (
            ("SoftBounce", 4096, "Unable to temporarily deliver this message", "smtp;452 4.2.2 Mailbox full"),
            ("bounced", "soft", False, "bounced_soft"),
        ),
        (
            ("SpamComplaint", 512, "The subscriber explicitly marked this message as spam.", ""),
            ("complained", "complaint", True, "complained"),
        ),
    ],
    ids=["hard", "soft", "complaint"],
)
def test_postmark_bounces_and_complaints(sent: Sent, payload: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    event_type, kind, suppressed, counter = expected
    assert post(POSTMARK, postmark_bounce(sent, *payload)).status_code == 200
    event = FeedbackEvent.objects.get()
    assert (event.event_type, event.kind, event.source) == (event_type, kind, "webhook:postmark")
    assert address_suppressed(address=sent.address) is suppressed
    assert minute(counter) == 1


def test_postmark_delivery_is_counted(sent: Sent) -> None:
    assert post(POSTMARK, postmark_delivery(sent)).status_code == 200
    assert FeedbackEvent.objects.get().kind == "delivered"
    row = DomainMinute.objects.get()
    assert (row.delivered, row.bounced_hard, row.complained) == (1, 0, 0)


# --- SparkPost -----------------------------------------------------------------------


def test_sparkpost_bounce_class_decides_hard(sent: Sent) -> None:
    unknown = "550 5.1.1 <user0@example.org>: Recipient address rejected: User unknown in virtual mailbox table"
    bounce = sparkpost_event(sent, "bounce", bounce_class="10", error_code="550", raw_reason=unknown)
    assert post(SPARKPOST, bounce).status_code == 200
    event = FeedbackEvent.objects.get()
    assert (event.event_type, event.kind, event.reason) == ("bounced", "hard", "user_unknown")
    assert address_suppressed(address=sent.address)


def test_sparkpost_spam_block_is_about_us_not_the_address(sent: Sent) -> None:
    content = "554 5.7.1 Message rejected because of unacceptable content. For more information see https://postmaster.example.org"
    bounce = sparkpost_event(sent, "bounce", bounce_class="51", error_code="554", raw_reason=content)
    assert post(SPARKPOST, bounce).status_code == 200
    assert FeedbackEvent.objects.get().kind == "soft" and not Suppression.objects.exists()
    assert minute("bounced_reputation") == 1


def test_sparkpost_spam_complaint_suppresses(sent: Sent) -> None:
    complaint = sparkpost_event(
        sent, "spam_complaint", fbtype="abuse", report_by="server.email.example.org", report_to="abuse.example.com", user_agent="AOL SComp"
    )
    assert post(SPARKPOST, complaint).status_code == 200
    assert FeedbackEvent.objects.get().event_type == "complained"
    assert address_suppressed(address=sent.address)


# --- idempotency and order -----------------------------------------------------------


def _deliveries(sent: Sent) -> dict[str, Callable[[], Any]]:
    """One webhook per ESP, built once: calling it twice posts the very same payload twice."""
    return {
        "ses": partial(
            ses_post, sent, ses_bounce(sent, "Permanent", "General", "5.1.1", "smtp; 550 5.1.1 user unknown"), sns_id=str(uuid.uuid4())
        ),
        "sendgrid": partial(
            post,
            SENDGRID,
            [sendgrid_event(sent, "bounce", reason="550 5.1.1 no such user", type="bounce"), sendgrid_event(sent, "delivered")],
        ),
        "mailgun": partial(post, MAILGUN, mailgun_body(sent, mailgun_failed("permanent", 550, "5.1.1", "5.1.1 user unknown"))),
        "postmark_delivery": partial(post, POSTMARK, postmark_delivery(sent)),
        "sparkpost": partial(post, SPARKPOST, sparkpost_event(sent, "bounce", bounce_class="10", raw_reason="550 5.1.1 User unknown")),
    }


@pytest.mark.parametrize("esp", ["ses", "sendgrid", "mailgun", "postmark_delivery", "sparkpost"])
def test_the_same_webhook_twice_changes_nothing(sent: Sent, esp: str) -> None:
    deliver = _deliveries(sent)[esp]
    assert deliver().status_code == 200
    first = state()
    assert first[0] >= 1
    assert deliver().status_code == 200
    assert state() == first


def test_delivered_after_bounced_undoes_nothing(sent: Sent) -> None:
    bounce = sendgrid_event(sent, "bounce", reason="550 5.1.1 no such user", status="5.1.1", type="bounce", timestamp=WHEN + 60)
    delivered = sendgrid_event(sent, "delivered", response="250 2.0.0 OK", timestamp=WHEN)
    assert post(SENDGRID, [bounce]).status_code == 200
    assert post(SENDGRID, [delivered]).status_code == 200
    assert address_suppressed(address=sent.address)
    assert (minute("bounced_hard"), minute("delivered")) == (1, 1)


# --- HTTP semantics ------------------------------------------------------------------


@pytest.mark.parametrize("url", [SES, SENDGRID, MAILGUN, POSTMARK, SPARKPOST, "/webhooks/mandrill/tracking/"])
def test_no_secret_configured_means_no_endpoint(sent: Sent, settings: Any, url: str) -> None:
    before = state()
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
    assert post(url, [sendgrid_event(sent, "bounce", type="bounce")]).status_code == 404
    assert post(url, [sendgrid_event(sent, "bounce", type="bounce")], auth=None).status_code == 404
    assert state() == before


def test_inbound_endpoints_are_not_mounted(sent: Sent) -> None:
    assert post("/webhooks/sendgrid/inbound/", {}).status_code == 404


def test_wrong_basic_auth_is_400_and_records_nothing(sent: Sent) -> None:
    before = state()
    assert post(POSTMARK, postmark_delivery(sent), auth="sendplane:wrong").status_code == 400
    assert post(SENDGRID, [sendgrid_event(sent, "spamreport")], auth=None).status_code == 400
    assert state() == before


def test_unknown_reference_is_200_and_records_nothing(sent: Sent) -> None:
    before = state()
    stranger = Sent(address="nobody@example.net", metadata={}, message_id="<20240610160000.1234@mta.example.net>")
    foreign = Sent(address=sent.address, metadata={ESP_METADATA_KEY: uuid.uuid4().hex}, message_id="<x@staging.example.com>")
    assert post(SENDGRID, [sendgrid_event(stranger, "bounce", type="bounce", reason="550 5.1.1 no such user")]).status_code == 200
    # Our metadata key naming another installation's message: never matched by recipient.
    assert post(POSTMARK, postmark_bounce(foreign, "HardBounce", 1, "unknown user", "smtp;550 5.1.1 no such user")).status_code == 200
    assert state() == before


def test_our_message_id_matches_when_the_esp_drops_metadata(sent: Sent) -> None:
    bare = Sent(address=sent.address.upper(), metadata={}, message_id=sent.message_id)
    assert post(SENDGRID, [sendgrid_event(bare, "bounce", type="bounce", reason="550 5.1.1 no such user")]).status_code == 200
    event = FeedbackEvent.objects.get()
    assert (event.matched_by, event.recipient, event.verified) == ("message_id", sent.address, True)
    assert address_suppressed(address=sent.address) and minute("bounced_hard") == 1


def test_our_message_id_for_another_recipient_is_evidence_that_suppresses_nobody(sent: Sent) -> None:
    bare = Sent(address="forwarded@example.net", metadata={}, message_id=sent.message_id)
    assert post(SENDGRID, [sendgrid_event(bare, "bounce", type="bounce", reason="550 5.1.1 no such user")]).status_code == 200
    event = FeedbackEvent.objects.get()
    assert (event.matched_by, event.recipient, event.verified) == ("message_id", "forwarded@example.net", False)
    assert not Suppression.objects.exists() and minute("bounced_hard") == 0


def test_a_database_fault_is_500_and_the_retry_succeeds(sent: Sent) -> None:
    before = state()
    # The database itself refuses the insert (a trigger raising, as a full disk or a
    # read-only failover would): a real error from PostgreSQL through the real stack,
    # not a patched function. It lives in the test's transaction and is rolled back with it.
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;"
            "CREATE TRIGGER refuse BEFORE INSERT ON deliverability_feedbackevent FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse();"
        )
    body = postmark_bounce(sent, "HardBounce", 1, "unknown user", "smtp;550 5.1.1 no such user")
    assert post(POSTMARK, body).status_code == 500
    assert state() == before
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER refuse ON deliverability_feedbackevent")
    assert post(POSTMARK, body).status_code == 200  # the ESP's retry
    assert address_suppressed(address=sent.address)


# --- the mapping, for any input ------------------------------------------------------


class _Event:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    esp=st.sampled_from(["Amazon SES", "Postmark", "SendGrid", "Mailgun", "SparkPost", "Brevo"]),
    event_type=st.sampled_from(["bounced", "deferred", "rejected", "delivered", "complained", "opened", "unknown"]),
    reject_reason=st.sampled_from([None, "invalid", "bounced", "timed_out", "blocked", "spam", "unsubscribed", "other"]),
    text=st.one_of(
        st.none(),
        st.text(max_size=80),
        st.sampled_from(["550 5.1.1 user unknown", "452 4.2.2 mailbox full", "421 4.4.0 DNS lookup failed: no such domain"]),
    ),
    esp_event=st.one_of(
        st.none(),
        st.text(max_size=5),
        st.dictionaries(
            st.sampled_from(["Type", "type", "bounce", "event-data", "msys"]),
            st.one_of(st.text(max_size=12), st.dictionaries(st.text(max_size=12), st.text(max_size=12)), st.none()),
        ),
    ),
)
def test_any_event_maps_into_the_vocabulary(esp: str, event_type: str, reject_reason: str | None, text: str | None, esp_event: Any) -> None:
    event = _Event(event_type=event_type, reject_reason=reject_reason, mta_response=text, description=text, esp_event=esp_event)
    verdict = event_verdict(esp, event)  # type: ignore[arg-type]
    if verdict is None:
        assert event_type in ("opened", "unknown")
        return
    assert verdict.kind in (*v.Kind.values, "")
    if verdict.kind == v.Kind.HARD:
        assert event_type in ("bounced", "rejected") and verdict.reason in (*v.HARD_REASONS, v.Reason.NOT_ACCEPT)
    if event_type == "deferred":
        assert verdict.kind == v.Kind.SOFT
