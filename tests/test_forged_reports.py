"""Issue 15: forged bounces and complaints never suppress an address nor pause a domain.

Anyone can mail the bounce address (it is every message's Return-Path). Each
attack the issue reports is replayed here against the real pipeline
(classifier, event_record, counters, the detector's beat task); a report counts
only for a message we sent, to the recipient we sent it to, once per message
and kind. The genuine cases still suppress.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import override_settings

from deliverability.models import DomainMinute, FeedbackEvent, PauseEvidence, SendingDomain, Suppression
from deliverability.selectors import address_suppressed
from deliverability.services.feedback import same_recipient
from deliverability.tasks import detect
from dispatch.models import Message
from dispatch.services.feedback import MAX_EVIDENCE, bounce_ingest
from dispatch.services.verp import verp_address, verp_message_uuid, verp_token
from tests.feedback_helpers import BOUNCES, complaint_of, corpus, counters, sent_message, verp_of
from tests.test_webhooks import SENDGRID, Sent, minute, post, sendgrid_event

pytestmark = pytest.mark.django_db


def arf_to(bounce_address: str, recipient: str, n: int = 0) -> bytes:
    """An ARF abuse report (RFC 5965) addressed to ``bounce_address``, its original quoting no Message-ID."""
    return (
        f"From: fbl@isp.example\r\nTo: {bounce_address}\r\nSubject: Abuse report {n}\r\nMIME-Version: 1.0\r\n"
        f"Message-ID: <forged-{n}@isp.example>\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: forged/1.0\r\nVersion: 1\r\n"
        f"Original-Rcpt-To: {recipient}\r\n"
        "--F\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: news@mail.example.com\r\nTo: {recipient}\r\nSubject: hello\r\n\r\nhi\r\n--F--\r\n"
    ).encode()


def dsn_to(bounce_address: str, recipients: list[str], *, original_id: str = "") -> bytes:
    """A DSN (RFC 3464), 5.1.1 for every recipient, optionally returning the original's headers."""
    blocks = "".join(f"\r\nFinal-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: 5.1.1\r\n" for r in recipients)
    original = f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {original_id}\r\nSubject: hi\r\n" if original_id else ""
    return (
        f"From: MAILER-DAEMON@mx.example.net\r\nTo: {bounce_address}\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"
        f"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n{blocks}"
        f"{original}--B--\r\n"
    ).encode()


def nothing_counted(domain_id: int) -> bool:
    return all(value == 0 for value in counters(domain_id).values())


# --- the VERP token -----------------------------------------------------------------------------------


def test_the_envelope_sender_is_signed_and_only_our_signature_verifies(campaign: Any) -> None:
    message = sent_message(campaign, "ana@example.org")
    token = verp_token(message.uuid)
    assert verp_of(message) == f"bounces+{token}@mail.example.com" == verp_address(message.uuid, "mail.example.com")
    assert len(verp_of(message).partition("@")[0]) <= 64  # SMTP's local-part limit
    assert verp_message_uuid(token) == verp_message_uuid(token.upper()) == message.uuid
    ident, _, signature = token.partition(".")
    assert verp_message_uuid(ident) is None  # the old unsigned form
    assert verp_message_uuid(f"{ident}.{'a' * len(signature)}") is None
    with override_settings(SECRET_KEY="another-installation-secret-0123456789abcdef"):
        assert verp_message_uuid(token) is None
    with override_settings(SECRET_KEY="rotated-secret-0123456789abcdef-0123456789", SECRET_KEY_FALLBACKS=[campaign_secret()]):
        assert verp_message_uuid(token) == message.uuid  # mail sent before a key rotation keeps its tie


def campaign_secret() -> str:
    from django.conf import settings

    return settings.SECRET_KEY


def test_addresses_compare_across_case_and_idn() -> None:
    assert same_recipient("Ana@Example.ORG", "ana@example.org")
    assert same_recipient("ana@bücher.example", "ana@xn--bcher-kva.example")
    assert not same_recipient("", "ana@example.org") and not same_recipient("ana@example.org", "bo@example.org")


# --- attack 1: twelve forged complaints to one message's VERP address pause the domain -------------------


@pytest.mark.parametrize("signed", ["unsigned", "wrong signature"])
def test_twelve_forged_complaints_to_a_verp_address_count_nothing_and_pause_nothing(campaign: Any, signed: str) -> None:
    message = sent_message(campaign, "ana@example.org")
    token = message.uuid.hex if signed == "unsigned" else f"{message.uuid.hex}.{'b' * 16}"
    for n in range(12):
        bounce_ingest(raw=arf_to(f"bounces+{token}@mail.example.com", message.recipient, n), source="mailbox")
    events = FeedbackEvent.objects.all()
    assert events.count() == 12 and not events.filter(verified=True).exists()
    assert {(e.matched_by, e.detail["unverified"]) for e in events} == {("verp", "VERP token not signed by us")}
    assert not Suppression.objects.exists()
    assert nothing_counted(campaign.sending_domain_id)
    detect()
    assert not SendingDomain.objects.get(pk=campaign.sending_domain_id).paused
    assert not PauseEvidence.objects.exists()


def test_twelve_complaints_to_the_signed_address_count_once(campaign: Any) -> None:
    """Even a recipient who holds the genuine signed address complains about their message once, not twelve times."""
    message = sent_message(campaign, "ana@example.org")
    results = [bounce_ingest(raw=arf_to(verp_of(message), message.recipient, n), source="mailbox")[0] for n in range(12)]
    assert [r.created for r in results] == [True] + [False] * 11
    assert FeedbackEvent.objects.filter(verified=True).count() == 1
    assert counters(campaign.sending_domain_id)["complained"] == 1
    assert address_suppressed(address="ana@example.org")


# --- attack 2: a forged DSN naming an address never mailed -----------------------------------------------


def test_a_forged_dsn_naming_an_address_never_mailed_suppresses_nothing(campaign: Any) -> None:
    message = sent_message(campaign, "ana@example.org")
    for bounce_address in ("bounces@mail.example.com", verp_of(message)):
        bounce_ingest(raw=dsn_to(bounce_address, ["ceo@bigcustomer.example"]), source="mailbox")
    assert not address_suppressed(address="ceo@bigcustomer.example")
    assert not Suppression.objects.exists()
    assert not FeedbackEvent.objects.filter(verified=True).exists()
    assert nothing_counted(campaign.sending_domain_id)


def test_a_dsn_quoting_our_message_id_in_its_prose_only_is_evidence(campaign: Any) -> None:
    message = sent_message(campaign, "ana@example.org")
    raw = dsn_to("bounces@mail.example.com", [message.recipient]).replace(
        b"Not delivered.", f"Not delivered.\r\nMessage-ID: {message.message_id()}".encode()
    )
    [result] = bounce_ingest(raw=raw, source="mailbox")
    assert (result.event.matched_by, result.event.verified) == ("message_id", False)
    assert not Suppression.objects.exists()


# --- attack 3: one DSN with 3,000 Final-Recipient blocks ---------------------------------------------------


@pytest.mark.parametrize("position", [0, 1500])
def test_a_dsn_with_3000_blocks_affects_at_most_the_messages_own_recipient(campaign: Any, position: int) -> None:
    message = sent_message(campaign, "ana@example.org")
    strangers = [f"victim{n}@example.net" for n in range(2999)]
    raw = dsn_to(verp_of(message), [*strangers[:position], message.recipient, *strangers[position:]])
    assert len(raw) > 200_000
    started = time.monotonic()
    results = bounce_ingest(raw=raw, source="mailbox")
    elapsed = time.monotonic() - started
    assert set(Suppression.objects.values_list("address", flat=True)) <= {"ana@example.org"}
    assert FeedbackEvent.objects.filter(verified=True).count() == Suppression.objects.count() <= 1
    assert FeedbackEvent.objects.count() == len(results) <= MAX_EVIDENCE + 1  # bounded rows whatever the report holds
    assert counters(campaign.sending_domain_id)["bounced_hard"] == Suppression.objects.count()
    if position == 0:  # the block that names our recipient, first as in any report about one message of ours
        assert address_suppressed(address="ana@example.org")
    assert elapsed < 30, elapsed  # a generous bound: not a timing test, a guard against per-block work


def test_a_dsn_with_3000_blocks_to_an_unsigned_address_affects_nobody(campaign: Any) -> None:
    message = sent_message(campaign, "ana@example.org")
    raw = dsn_to(f"bounces+{message.uuid.hex}@mail.example.com", [message.recipient, *(f"v{n}@example.net" for n in range(2999))])
    bounce_ingest(raw=raw, source="mailbox")
    assert not Suppression.objects.exists() and nothing_counted(campaign.sending_domain_id)
    assert FeedbackEvent.objects.count() <= MAX_EVIDENCE


# --- attack 4: an ESP webhook quoting our Message-ID in free text for another address ------------------------


def test_a_webhook_quoting_our_message_id_in_free_text_suppresses_nobody(campaign: Any, settings: Any) -> None:
    settings.ANYMAIL = {"WEBHOOK_SECRET": "sendplane:Zq8w-hook-secret"}
    message = sent_message(campaign, "ana@example.org")
    stranger = Sent(address="bo@example.net", metadata={}, message_id="<20240610160000.1234@mta.example.net>")
    reason = f"550 5.1.1 no such user; original message {message.message_id()} to {message.recipient}"
    assert post(SENDGRID, [sendgrid_event(stranger, "bounce", type="bounce", reason=reason)]).status_code == 200
    assert not Suppression.objects.exists()
    assert not address_suppressed(address="ana@example.org") and not address_suppressed(address="bo@example.net")
    assert minute("bounced_hard") == 0


def test_a_webhook_whose_metadata_names_our_message_for_another_recipient_is_evidence(campaign: Any, settings: Any) -> None:
    from dispatch.services.delivery import ESP_METADATA_KEY

    settings.ANYMAIL = {"WEBHOOK_SECRET": "sendplane:Zq8w-hook-secret"}
    message = sent_message(campaign, "ana@example.org")
    other = Sent(address="bo@example.net", metadata={ESP_METADATA_KEY: message.uuid.hex}, message_id=message.message_id())
    assert post(SENDGRID, [sendgrid_event(other, "spamreport")]).status_code == 200
    event = FeedbackEvent.objects.get()
    assert (event.matched_by, event.recipient, event.verified) == ("metadata", "bo@example.net", False)
    assert not Suppression.objects.exists() and minute("complained") == 0


# --- the genuine cases ------------------------------------------------------------------------------------


def test_a_genuine_dsn_to_the_signed_address_suppresses_and_counts(campaign: Any) -> None:
    message = sent_message(campaign, "ana@example.org")
    [result] = bounce_ingest(raw=dsn_to(verp_of(message), ["ANA@example.org"]), source="mailbox")
    assert (result.event.matched_by, result.event.verified, result.suppressed) == ("verp", True, True)
    assert counters(campaign.sending_domain_id)["bounced_hard"] == 1


def test_a_dsn_returning_our_message_headers_verifies_without_verp(campaign: Any) -> None:
    message = sent_message(campaign, "ana@example.org")
    raw = dsn_to("bounces@mail.example.com", [message.recipient], original_id=message.message_id())
    [result] = bounce_ingest(raw=raw, source="mailbox")
    assert (result.event.matched_by, result.event.verified, result.suppressed) == ("message_id", True, True)


def test_a_corpus_complaint_about_our_message_suppresses(campaign: Any) -> None:
    message = sent_message(campaign, "redacted@example.net")
    [result] = bounce_ingest(raw=complaint_of(message), source="mailbox")
    assert (result.event.kind, result.event.verified, result.suppressed) == ("complaint", True, True)


# Real DSNs from several MTAs, each made to bounce our message: the classifier's verdict is unchanged and it suppresses.
CORPUS_HARD = ["lhost-postfix-01.eml", "lhost-exim-01.eml", "lhost-sendmail-01.eml", "rfc3464-01.eml", "lhost-gmail-01.eml"]


@pytest.mark.parametrize("name", CORPUS_HARD)
def test_real_bounces_to_our_signed_address_keep_their_verdict_and_suppress_when_hard(campaign: Any, name: str) -> None:
    raw = corpus(name)
    unattached = bounce_ingest(raw=raw, source="mailbox")
    FeedbackEvent.objects.all().delete()
    reported = next((r.event.recipient for r in unattached if "@" in r.event.recipient), "")
    if not reported:
        pytest.skip(f"{name} names no recipient")
    message = sent_message(campaign, reported)
    tied = raw.replace(b"\nTo: ", f"\nTo: {verp_of(message)}\nX-Old-To: ".encode(), 1)
    results = bounce_ingest(raw=tied, source="mailbox")
    mine = [r for r in results if r.event.verified]
    assert len(mine) == 1 and mine[0].event.message_uuid == message.uuid
    before = {r.event.recipient: (r.event.kind, r.event.reason) for r in unattached}
    assert (mine[0].event.kind, mine[0].event.reason) == before[reported]
    assert mine[0].suppressed == (mine[0].event.kind == "hard")


def test_the_corpus_is_still_classified_and_suppresses_nothing_on_its_own(db: Any) -> None:
    names = sorted(path.name for path in BOUNCES.glob("*.eml"))[:60]
    for name in names:
        bounce_ingest(raw=corpus(name), source="mailbox")
    assert FeedbackEvent.objects.exists() and not FeedbackEvent.objects.filter(verified=True).exists()
    assert not Suppression.objects.exists() and not DomainMinute.objects.exists()
    assert not Message.objects.exists()


@pytest.mark.parametrize("hidden", ["", "redacted@example.net", "[redacted]@example.net", "xxxxxxxx@example.net"])
def test_a_complaint_with_the_recipient_withheld_counts_for_the_signed_message_s_recipient(campaign: Any, hidden: str) -> None:
    """Feedback loops redact the recipient: tied by our signature, the complaint is about that message's recipient."""
    message = sent_message(campaign, "ana@example.org")
    results = [bounce_ingest(raw=arf_to(verp_of(message), hidden, n), source="mailbox") for n in range(3)]
    assert [r[0].event.verified for r in results] == [True, True, True] and [r[0].created for r in results] == [True, False, False]
    assert results[0][0].event.recipient == "ana@example.org" and address_suppressed(address="ana@example.org")
    assert counters(campaign.sending_domain_id)["complained"] == 1


def test_a_withheld_recipient_without_our_signature_is_still_only_evidence(campaign: Any) -> None:
    message = sent_message(campaign, "ana@example.org")
    [result] = bounce_ingest(raw=arf_to(f"bounces+{message.uuid.hex}@mail.example.com", "redacted@example.net"), source="mailbox")
    assert not result.event.verified and not Suppression.objects.exists() and nothing_counted(campaign.sending_domain_id)
