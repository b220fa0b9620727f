"""Issue 16: each mailbox provider's stream is paced and paused on what that provider says; the others send on.

Real PostgreSQL and a real SMTP server on loopback that answers every RCPT to
one recipient domain with one reply (``SmtpSink.replies_by_domain``), as a
provider refusing or rate limiting the sender does. Batches run in-process.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEntry
from deliverability.bounces.replies import Action, reply_action
from deliverability.models import ProviderStream, SendingDomain
from dispatch.models import Message, MessageStatus
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import SIMPLE_VARIABLES, assert_error
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.django_db

GMAIL_DMARC = "550 5.7.26 Unauthenticated email from mail.example.com is not accepted due to its DMARC policy"
GMAIL_RATE = "421 4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address"
MICROSOFT_RATE = "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation"
YAHOO_RATE = "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints"
SPAMHAUS = "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"


@pytest.fixture
def small_batches(settings: Any) -> None:
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "BATCH_SIZE": 12, "RETRY_BASE_SECONDS": 0.0}


def mixed(n: int, key: str) -> list[dict[str, Any]]:
    domains = ("gmail.com", "outlook.com", "example.org")
    return [{"address": f"{key}{i}@{domains[i % 3]}", "context": SIMPLE_VARIABLES} for i in range(n)]


def drain(campaign: Any, people: list[dict[str, Any]], key: str) -> None:
    trigger_accept(campaign=campaign, idempotency_key=key, recipients=people)
    for _ in range(200):
        if not batch_send(domain_id=campaign.sending_domain_id).more:
            return


def statuses(domain: str) -> dict[str, int]:
    rows = Message.objects.filter(recipient__endswith=f"@{domain}")
    return {status: rows.filter(status=status).count() for status in rows.values_list("status", flat=True).distinct()}


@pytest.mark.parametrize(
    ("provider", "reply", "action", "label"),
    [
        ("gmail", GMAIL_RATE, Action.SLOW_DOWN, "rate limited"),
        ("microsoft", MICROSOFT_RATE, Action.SLOW_DOWN, "rate limited"),
        ("yahoo", YAHOO_RATE, Action.SLOW_DOWN, "rate limited"),
        ("gmail", GMAIL_DMARC, Action.PAUSE_AUTH, "authentication failing"),
        ("microsoft", "550 5.7.515 Access denied, sending domain example.com does not meet the required authentication level",
         Action.PAUSE_AUTH, "authentication failing"),
        ("", SPAMHAUS, Action.PAUSE_BLOCKLIST, "listed on Spamhaus"),
        ("", "554 5.7.1 Rejected: blocked using b.barracudacentral.org", Action.PAUSE_BLOCKLIST, "listed on Barracuda"),
    ],
)
def test_the_table_reads_what_a_reply_calls_for(provider: str, reply: str, action: Action, label: str) -> None:
    found = reply_action(provider, int(reply[:3]), reply[4:])
    assert found is not None and (found.action, found.label) == (action, label)


@pytest.mark.parametrize(
    "reply", ["550 5.1.1 No such user", "550 5.1.1 user not listed in the directory", "452 4.2.2 Mailbox full", "250 2.0.0 OK"]
)
def test_replies_about_one_recipient_call_for_nothing_on_the_stream(reply: str) -> None:
    assert reply_action("gmail", int(reply[:3]), reply[4:]) is None


def test_a_gmail_only_authentication_wave_pauses_only_the_gmail_stream(
    campaign: Any, smtp_sink: SmtpSink, small_batches: None, oncall: Any, api_as: Any
) -> None:
    smtp_sink.handler.replies_by_domain["gmail.com"] = GMAIL_DMARC
    drain(campaign, mixed(90, "a"), "k1")
    stream = ProviderStream.objects.get(provider="gmail")
    assert stream.paused and stream.paused_reason.startswith("authentication failing at gmail: 550 5.7.26")
    assert stream.replies == [GMAIL_DMARC]
    assert not SendingDomain.objects.get(pk=campaign.sending_domain_id).paused  # the domain itself sends on
    assert statuses("outlook.com") == {MessageStatus.SENT: 30} and statuses("example.org") == {MessageStatus.SENT: 30}
    gmail = statuses("gmail.com")
    assert gmail.get(MessageStatus.QUEUED, 0) >= 25 and gmail.get(MessageStatus.FAILED, 0) <= 5  # held, not burnt
    assert AuditEntry.objects.filter(action="stream.pause").count() == 1
    # On-call fixes DMARC and resumes the stream through the API.
    smtp_sink.handler.replies_by_domain.clear()
    url = f"/api/v1/domains/{stream.sending_domain.domain}/streams/gmail/resume"
    assert_error(api_as(oncall).post("/api/v1/domains/mail.example.com/streams/yahoo/resume", {"reason": "x"}, format="json"), 400)
    response = api_as(oncall).post(url, {"reason": "DMARC record fixed"}, format="json")
    assert response.status_code == 200, response.content
    stream.refresh_from_db()
    assert not stream.paused and AuditEntry.objects.filter(action="stream.resume", actor=oncall).count() == 1
    listed = api_as(oncall).get(f"/api/v1/domains/{stream.sending_domain.domain}/streams").json()
    assert [(s["provider"], s["paused"]) for s in listed] == [("gmail", False)]


def test_a_rate_limiting_storm_slows_that_stream_and_it_recovers_without_a_pause(
    campaign: Any, smtp_sink: SmtpSink, settings: Any
) -> None:
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "BATCH_SIZE": 12}  # deferred mail waits its retry time
    smtp_sink.handler.replies_by_domain["gmail.com"] = GMAIL_RATE
    drain(campaign, mixed(60, "b"), "k1")
    stream = ProviderStream.objects.get(provider="gmail")
    slowed = stream.rate_factor
    assert slowed <= 0.5 and not stream.paused
    assert statuses("outlook.com") == {MessageStatus.SENT: 20}  # the others were not slowed
    smtp_sink.handler.replies_by_domain.clear()  # the storm ends
    for round_ in range(4):
        Message.objects.filter(status=MessageStatus.DEFERRED).update(not_before=timezone.now())  # their retry time, now
        drain(campaign, mixed(60, f"c{round_}"), f"k2-{round_}")
    stream.refresh_from_db()
    assert stream.rate_factor > slowed and not stream.paused  # additive increase, batch by batch
    assert not SendingDomain.objects.get(pk=campaign.sending_domain_id).paused
    assert statuses("gmail.com").get(MessageStatus.SENT, 0) >= 60


def test_oncall_resumes_a_stream_from_the_admin(campaign: Any, staff_client: Any, oncall: Any) -> None:
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

    stream = ProviderStream.objects.create(
        sending_domain_id=campaign.sending_domain_id, provider="microsoft", paused=True, paused_by="detector",
        paused_reason="listed on Spamhaus at microsoft: 554 5.7.1 ... zen.spamhaus.org",
    )
    client = staff_client(oncall)
    url = "/admin/deliverability/providerstream/"
    assert b"listed on Spamhaus at microsoft" in client.get(url).content
    form = {"action": "resume", ACTION_CHECKBOX_NAME: [stream.pk], "apply": "1", "reason": "delisted"}
    done = client.post(url, form, follow=True)
    assert b"resumed at 100% of its rate" in done.content
    stream.refresh_from_db()
    assert not stream.paused and AuditEntry.objects.filter(action="stream.resume", actor=oncall, reason="delisted").exists()


def test_a_batch_all_to_a_blocking_provider_pauses_its_stream_not_the_domain(
    campaign: Any, smtp_sink: SmtpSink, small_batches: None
) -> None:
    """Gmail first (every one refused for authentication), then the rest: the workers' own check judges address
    bounces, so a provider's block stays that provider's stream's."""
    smtp_sink.handler.replies_by_domain["gmail.com"] = GMAIL_DMARC
    gmail = [{"address": f"g{i}@gmail.com", "context": SIMPLE_VARIABLES} for i in range(24)]
    others = [{"address": f"o{i}@outlook.com", "context": SIMPLE_VARIABLES} for i in range(24)]
    drain(campaign, gmail + others, "k1")
    assert ProviderStream.objects.get(provider="gmail").paused
    assert not SendingDomain.objects.get(pk=campaign.sending_domain_id).paused
    assert statuses("outlook.com") == {MessageStatus.SENT: 24}
