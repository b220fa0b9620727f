"""Issue 18: unsubscribe that always works.

The visible link is Sendplane's signed one (the ``unsubscribe_url`` variable),
so a click in the body reaches the suppression list; a mail to the
List-Unsubscribe mailto address unsubscribes (it was ingested as "unknown");
the time from the POST to the suppression committed is a metric, as is each
worker chunk's window. Real PostgreSQL, the real loopback SMTP sink.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from deliverability.models import ConsentRecord, EventType, FeedbackEvent, Suppression
from deliverability.selectors import address_suppressed
from dispatch.models import Message, MessageStatus
from dispatch.services.inbound import mail_ingest
from dispatch.services.triggers import trigger_accept
from dispatch.services.unsubscribe import mailto_token, unsubscribe_token, unsubscribe_urls
from dispatch.services.worker import batch_send
from tests.conftest import recipients

pytestmark = pytest.mark.django_db


def drain(domain_id: int) -> None:
    for _ in range(100):
        if not batch_send(domain_id=domain_id).more:
            return


def sent(campaign: Any, smtp_sink: Any, n: int = 2) -> list[Message]:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(n))
    drain(campaign.sending_domain_id)
    return list(Message.objects.filter(campaign=campaign).order_by("id"))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- the visible link is the signed one --------------------------------------------------------------


def test_the_link_in_the_body_is_the_recipients_signed_link_and_a_click_on_it_suppresses(campaign: Any, smtp_sink: Any) -> None:
    first, second = sent(campaign, smtp_sink)
    received = next(r for r in smtp_sink.received if r.recipient == first.recipient).parsed()
    html = next(p for p in received.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    links = re.findall(r'href="([^"]*/u/[^"]*)"', html)
    own = unsubscribe_urls(first)[0]
    assert links == [own]  # the template's {{ unsubscribe_url }}, this recipient's own
    assert unsubscribe_token(second) not in html

    assert Client().post(own.removeprefix("http://localhost:8000")).status_code == 200
    assert address_suppressed(address=first.recipient, sending_domain=first.sending_domain)
    assert not address_suppressed(address=second.recipient, sending_domain=second.sending_domain)


def test_a_value_the_caller_passes_as_unsubscribe_url_never_reaches_the_body(campaign: Any, smtp_sink: Any) -> None:
    people = [{"address": "ana@example.org", "context": recipients(1)[0]["context"] | {"unsubscribe_url": "https://evil.example/x"}}]
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=people)
    drain(campaign.sending_domain_id)
    parts = [p.get_payload(decode=True).decode() for p in smtp_sink.received[0].parsed().walk() if not p.is_multipart()]
    assert parts and all("evil.example" not in part for part in parts)
    assert all(unsubscribe_urls(Message.objects.get())[0] in part for part in parts)  # text and HTML


# --- the mailto ----------------------------------------------------------------------------------------


def unsubscribe_mail(to: str, *, header: str = "To") -> bytes:
    """As a mail app sends it; Delivered-To and X-Original-To are the receiving MTA's, above the rest, as written."""
    mail = EmailMessage()
    mail["From"] = "Ana <ana@example.org>"
    mail["To"] = to if header == "To" else "list@mail.example.com"
    mail["Subject"] = "unsubscribe"
    mail.set_content("This message was sent by the mail app to unsubscribe.")
    trace = b"" if header == "To" else f"{header}: {to}\r\n".encode()
    return trace + mail.as_bytes()


@pytest.mark.parametrize("header", ["To", "Delivered-To", "X-Original-To"])
def test_a_mail_to_the_list_unsubscribe_address_unsubscribes(
    campaign: Any, smtp_sink: Any, header: str, django_capture_on_commit_callbacks: Any
) -> None:
    message = sent(campaign, smtp_sink, 1)[0]
    mailto = unsubscribe_urls(message)[1].removeprefix("mailto:")
    before = metric("sendplane_unsubscribe_suppression_seconds_count", via="mailto")

    with django_capture_on_commit_callbacks(execute=True):  # the metric is observed once the suppression commits
        results = mail_ingest(raw=unsubscribe_mail(mailto.upper() if header == "To" else mailto, header=header), source="mailbox")

    assert [r.event.event_type for r in results] == [EventType.UNSUBSCRIBED]  # was "unknown" before issue 18
    assert results[0].suppressed and results[0].event.message_uuid == message.uuid
    assert results[0].event.detail == {"via": "mailto"}
    assert Suppression.objects.filter(reason="unsubscribed", sending_domain=message.sending_domain).count() == 1
    assert metric("sendplane_unsubscribe_suppression_seconds_count", via="mailto") == before + 1
    # again (the mail app retried, or a click after the mail): one event, nothing new
    again = mail_ingest(raw=unsubscribe_mail(mailto), source="mailbox")
    assert [r.created for r in again] == [False]
    assert FeedbackEvent.objects.filter(event_type=EventType.UNSUBSCRIBED).count() == 1


def test_a_forged_or_foreign_mailto_token_unsubscribes_nobody(campaign: Any, smtp_sink: Any) -> None:
    message = sent(campaign, smtp_sink, 1)[0]
    good = unsubscribe_token(message)
    forged = good[:-1] + ("0" if good[-1] != "0" else "1")
    for to in (f"unsubscribe+{forged}@mail.example.com", f"someone+{good}@mail.example.com", "unsubscribe@mail.example.com"):
        mail_ingest(raw=unsubscribe_mail(to), source="mailbox")
    assert not Suppression.objects.exists()
    assert not FeedbackEvent.objects.filter(event_type=EventType.UNSUBSCRIBED).exists()


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00\xff" * 100, b"To: unsubscribe+" + b"a" * 10_000 + b"@x\r\n\r\n", b"To: =?utf-8?q?=FF?=\r\n\r\nbody", b"\r\n\r\nTo: x"],
)
def test_hostile_mail_is_no_mailto_unsubscribe(raw: bytes) -> None:
    assert mailto_token(raw) is None


def test_the_upload_api_takes_a_mail_to_the_mailto_as_an_unsubscribe(campaign: Any, smtp_sink: Any, api_as: Any, oncall: Any) -> None:
    message = sent(campaign, smtp_sink, 1)[0]
    raw = unsubscribe_mail(unsubscribe_urls(message)[1].removeprefix("mailto:"))
    response = api_as(oncall).post("/api/v1/bounces/", raw, content_type="message/rfc822")
    assert response.status_code in (200, 201), response.content
    assert address_suppressed(address=message.recipient, sending_domain=message.sending_domain)


# --- consent and timing -------------------------------------------------------------------------------


def test_a_one_click_unsubscribe_withdraws_consent_to_the_campaigns_purpose_and_is_timed(
    campaign: Any, smtp_sink: Any, django_capture_on_commit_callbacks: Any
) -> None:
    message = sent(campaign, smtp_sink, 1)[0]
    before = metric("sendplane_unsubscribe_suppression_seconds_count", via="one_click")
    with django_capture_on_commit_callbacks(execute=True):
        assert Client().post(f"/u/{unsubscribe_token(message)}").status_code == 200
    consent = ConsentRecord.objects.get()
    assert (consent.purpose, consent.withdrawn_source) == ("marketing", f"unsubscribe:one_click:{message.uuid.hex}")
    assert consent.withdrawn_at is not None
    assert metric("sendplane_unsubscribe_suppression_seconds_count", via="one_click") == before + 1


def test_each_chunk_of_the_worker_observes_its_suppression_window(campaign: Any, smtp_sink: Any) -> None:
    before = metric("sendplane_dispatch_suppression_window_seconds_count")
    sent(campaign, smtp_sink, 3)
    assert Message.objects.filter(status=MessageStatus.SENT).count() == 3
    assert metric("sendplane_dispatch_suppression_window_seconds_count") >= before + 1
