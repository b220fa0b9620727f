"""The header lint of every message as sent (``templates_registry/rendering/lint.py``) and its wiring in dispatch.

Unit tests on header blocks, good and broken one way each; a property test that
no bytes make it raise; then messages through the worker to the loopback SMTP
sink (and the ESP path's Django backend): what goes out passes, and a message
that fails is ``failed`` with its reason and never reaches the server.
"""

from __future__ import annotations

from email import message_from_bytes
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from deliverability.models import TRANSACTIONAL
from dispatch.models import Campaign, Message, MessageStatus
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from templates_registry.rendering.lint import Rule, email_header_problems, header_problems, message_lint
from templates_registry.rendering.mime import build_mime, encode_headers, standard_headers
from tests.conftest import SIMPLE_VARIABLES, recipients
from tests.smtp_sink import SmtpSink

TOKEN = "0123456789abcdef0123456789abcdef.0123456789abcdef"
GOOD = (
    b"From: Atelier <news@mail.example.com>\r\n"
    b"To: user@example.org\r\n"
    b"Subject: Hi\r\n"
    b"Message-ID: <3f1c0a52-7a5e-4f5e-9d6e-0d1f0b9c2a11@mail.example.com>\r\n"
    b"List-Unsubscribe: <https://sp.example.com/u/tok>,\r\n <mailto:unsubscribe+tok@mail.example.com>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"Date: Sun, 06 Dec 2026 08:05:36 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"From: a body line is not a header\r\n" + b"x" * 2000 + b"\r\n"
)


def lint(raw: bytes, *, marketing: bool = True, https_only: bool = True) -> list[str]:
    return message_lint(raw, marketing=marketing, https_only=https_only)


def replaced(old: bytes, new: bytes, raw: bytes = GOOD) -> bytes:
    assert raw.count(old) == 1
    return raw.replace(old, new)


def built(**overrides: Any) -> bytes:
    headers = {
        "sender_name": "Atelier Ümlaut",
        "sender_address": "news@mail.example.com",
        "recipient": "user@example.org",
        "subject": "Hi R0, your weekly news from the atelier, with a subject long enough to be folded " * 3,
        "message_id": "<3f1c0a52-7a5e-4f5e-9d6e-0d1f0b9c2a11@mail.example.com>",
        "unsubscribe": (f"https://sp.example.com/u/{TOKEN}", f"mailto:unsubscribe+{TOKEN}@mail.example.com"),
    } | overrides
    return build_mime(headers=encode_headers(standard_headers(**headers)), text="Hello\n" * 50, html="<p>Hello</p>" * 500)


# --- good messages -------------------------------------------------------------------------------


def test_a_good_header_block_passes_and_the_body_is_never_read() -> None:
    assert lint(GOOD) == []


def test_what_build_mime_writes_passes_with_a_folded_subject_and_an_encoded_sender_name() -> None:
    assert lint(built()) == []
    assert lint(built(sender_name='Café "Le Zinc", Paris', subject="Ünïcode ✓ " * 40)) == []


def test_a_utf8_recipient_is_allowed_in_to_only() -> None:
    # RFC 6532: a local part with no ASCII form goes as UTF-8 (and only over SMTPUTF8: envelope_recipient)
    assert lint(built(recipient="юзер@example.org")) == []
    assert lint(replaced(b"Subject: Hi", "Subject: Привет".encode())) == ["Subject: 8-bit octets (only To may carry UTF-8)"]
    assert lint(replaced(b"To: user@example.org", b"To: \xff\xfe@example.org")) == ["To: 8-bit octets that are not UTF-8"]


def test_a_line_of_exactly_998_octets_passes_and_one_more_does_not() -> None:
    subject = b"Subject: " + b"x" * (998 - len("Subject: "))
    assert lint(replaced(b"Subject: Hi", subject)) == []
    assert lint(replaced(b"Subject: Hi", subject + b"y")) == ["Subject: a line of 999 octets (at most 998)"]


# --- one From, To, Date and Message-ID --------------------------------------------------------------


def test_a_duplicate_from_is_named() -> None:
    twice = replaced(b"To: ", b"From: Other <other@example.net>\r\nTo: ")
    assert lint(twice) == ["From: 2 fields (at most one)"]
    assert [p.rule for p in header_problems(twice, marketing=True)] == [Rule.DUPLICATE]


def test_two_mailboxes_in_one_from_are_refused() -> None:
    assert lint(replaced(b"From: Atelier <news@mail.example.com>", b"From: a@example.com, b@example.com")) == [
        "From: not exactly one mailbox"
    ]


@pytest.mark.parametrize("name", [b"From", b"To", b"Date", b"Message-ID"])
def test_a_missing_required_header_is_named(name: bytes) -> None:
    block = b"\r\n" + GOOD  # every field after a CRLF, the first one too
    start = block.index(b"\r\n" + name + b": ") + 2
    end = block.index(b"\r\n", start) + 2
    assert lint((block[:start] + block[end:])[2:]) == [f"{name.decode()}: missing"]


def test_a_date_that_does_not_parse_is_refused() -> None:
    assert lint(replaced(b"Sun, 06 Dec 2026 08:05:36 +0000", b"yesterday")) == ["Date: does not parse (RFC 5322 3.3)"]


@pytest.mark.parametrize(
    "message_id", [b"3f1c@mail.example.com", b"<3f1c>", b"<3f1c@>", b"<a b@example.com>", b"<a@b@c>", b"<x@example.com> trailing"]
)
def test_a_message_id_that_is_not_left_at_right_in_brackets_is_refused(message_id: bytes) -> None:
    raw = replaced(b"<3f1c0a52-7a5e-4f5e-9d6e-0d1f0b9c2a11@mail.example.com>", message_id)
    assert lint(raw) == ["Message-ID: not <left@right> (RFC 5322 3.6.4)"]


def test_a_domain_literal_message_id_is_fine() -> None:
    assert lint(replaced(b"<3f1c0a52-7a5e-4f5e-9d6e-0d1f0b9c2a11@mail.example.com>", b"<abc.def@[192.0.2.1]>")) == []


# --- List-Unsubscribe and One-Click on marketing mail ---------------------------------------------


def test_missing_one_click_fails_marketing_mail_and_is_fine_on_transactional() -> None:
    raw = replaced(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b"")
    assert lint(raw) == ["List-Unsubscribe-Post: missing (marketing mail, RFC 8058)"]
    assert lint(raw, marketing=False) == []


def test_a_post_header_with_another_value_is_not_one_click() -> None:
    raw = replaced(b"List-Unsubscribe=One-Click", b"List-Unsubscribe=one-click")
    assert lint(raw) == ["List-Unsubscribe-Post: not 'List-Unsubscribe=One-Click'"]


def test_an_http_only_list_unsubscribe_fails_marketing_mail() -> None:
    raw = replaced(b"<https://sp.example.com/u/tok>", b"<http://sp.example.com/u/tok>")
    assert lint(raw) == ["List-Unsubscribe: no https URI (RFC 8058)", "List-Unsubscribe: a 'http' URI (https or mailto only)"]
    assert lint(raw, marketing=False) == []
    assert lint(raw, https_only=False) == []  # an installation allowed an http public URL (tests, embedded)


def test_a_mailto_only_or_missing_list_unsubscribe_fails_marketing_mail() -> None:
    mailto_only = replaced(b"<https://sp.example.com/u/tok>,\r\n ", b"")
    assert lint(mailto_only) == ["List-Unsubscribe: no https URI (RFC 8058)"]
    start = GOOD.index(b"List-Unsubscribe: ")
    missing = GOOD[:start] + GOOD[GOOD.index(b"List-Unsubscribe-Post") :]
    assert lint(missing) == ["List-Unsubscribe: missing (marketing mail)"]
    assert lint(missing, marketing=False) == []


# --- malformed bytes -----------------------------------------------------------------------------


def test_a_block_with_no_end_is_reported_and_still_read() -> None:
    raw = GOOD[: GOOD.index(b"\r\n\r\n")]
    assert lint(raw) == ["no blank line (CRLF CRLF) ends the header block"]
    assert lint(b"") == [
        "no blank line (CRLF CRLF) ends the header block",
        "header line 1: not a field (name: value)",
        "From: missing",
        "To: missing",
        "Date: missing",
        "Message-ID: missing",
        "List-Unsubscribe: missing (marketing mail)",
        "List-Unsubscribe-Post: missing (marketing mail, RFC 8058)",
    ]


def test_a_line_that_is_not_a_field_and_a_leading_continuation_are_named() -> None:
    assert lint(replaced(b"Subject: Hi", b"Subject Hi")) == ["header line 3: not a field (name: value)"]
    assert lint(b" folded\r\n" + GOOD) == ["header line 1: not a field (name: value)"]


def test_bare_cr_or_lf_and_controls_are_named_by_header() -> None:
    assert lint(replaced(b"Subject: Hi", b"Subject: Hi\nBcc: x@example.net")) == ["Subject: bare CR or LF"]
    assert lint(replaced(b"Subject: Hi", b"Subject: Hi\rthere")) == ["Subject: bare CR or LF"]
    assert lint(replaced(b"Subject: Hi", b"Subject: H\x00i")) == ["Subject: control character"]
    assert lint(replaced(b"Subject: Hi", b"Subject: H\ti")) == []  # HTAB is white space


def test_problems_stay_few_and_each_is_one_line() -> None:
    raw = b"\r\n".join(b"line %d without a colon" % n for n in range(50)) + b"\r\n\r\n"
    problems = lint(raw)
    assert len(problems) == 10 and problems[-1] == "and more"


@given(st.binary(max_size=2000))
def test_no_bytes_make_the_lint_raise(raw: bytes) -> None:
    for problem in header_problems(raw, marketing=True):
        assert problem.rule in set(Rule) and "\n" not in problem.text and "\r" not in problem.text


@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.binary(min_size=1, max_size=8))
def test_no_corruption_of_a_good_message_makes_the_lint_raise(at: int, junk: bytes) -> None:
    for problem in header_problems(GOOD[:at] + junk + GOOD[at + len(junk) :], marketing=True):
        assert problem.rule in set(Rule) and "\n" not in problem.text


# --- the ESP path: what Django writes for the EmailMessage -----------------------------------------


def esp_email(**headers: str) -> EmailMultiAlternatives:
    values = dict(standard_headers(
        sender_name="Atelier", sender_address="news@mail.example.com", recipient="user@example.org", subject="Hi",
        message_id="<abc@mail.example.com>", unsubscribe=(f"https://sp.example.com/u/{TOKEN}", f"mailto:u+{TOKEN}@mail.example.com"),
    ))  # fmt: skip
    return EmailMultiAlternatives(
        subject=values.pop("Subject"), body="Hello", from_email=values.pop("From"), to=[values.pop("To")], headers=values | headers
    )


def test_an_esp_message_is_linted_on_the_header_block_django_writes() -> None:
    assert email_header_problems(esp_email(), marketing=True) == []
    broken = email_header_problems(esp_email(**{"List-Unsubscribe-Post": "List-Unsubscribe=Maybe"}), marketing=True)
    assert [p.text for p in broken] == ["List-Unsubscribe-Post: not 'List-Unsubscribe=One-Click'"]
    injected = email_header_problems(esp_email(**{"X-Note": "a\r\nBcc: x@example.net"}), marketing=False)
    assert [p.rule for p in injected] == [Rule.LINE_ENDING]


# --- through the worker ----------------------------------------------------------------------------


def drain(domain_id: int) -> None:
    for _ in range(100):
        if not batch_send(domain_id=domain_id).more:
            return
    raise AssertionError("the domain never ran out of work")


def lint_failures(rule: str) -> float:
    return REGISTRY.get_sample_value("sendplane_message_lint_failures_total", {"rule": rule}) or 0.0


@pytest.fixture
def production_links(settings: Any) -> None:
    """Settings as production has them: an https public URL, and no leave to use another."""
    settings.SENDPLANE_PUBLIC_URL = "https://sendplane.example.com"
    settings.SENDPLANE_INSECURE_PUBLIC_URL = False


@pytest.mark.django_db
def test_every_message_the_sink_receives_passes_the_lint_with_exactly_one_date(
    campaign: Any, smtp_sink: SmtpSink, production_links: None
) -> None:
    utf8 = {"address": "юзер@example.org", "context": SIMPLE_VARIABLES}  # To in UTF-8 (RFC 6532), over SMTPUTF8
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(3) + [utf8])
    drain(campaign.sending_domain_id)
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}
    assert len(smtp_sink.received) == 4
    for received in smtp_sink.received:
        assert message_lint(received.raw, marketing=True) == [], received.recipient
        assert len(message_from_bytes(received.raw).get_all("Date") or ()) == 1
        assert received.raw[: received.raw.index(b"\r\n\r\n")].count(b"\r\nDate: ") == 1


@pytest.mark.django_db
def test_a_message_that_fails_the_lint_ends_failed_with_its_reason_and_never_reaches_the_server(
    campaign: Any, smtp_sink: SmtpSink, settings: Any
) -> None:
    # No real input reaches a lint failure through the renderer and build_mime (they refuse first, or cannot produce
    # one); the one real way is settings: an http public URL without SENDPLANE_INSECURE_PUBLIC_URL, which startup
    # refuses in production and which a runtime change of settings (here) gets past. Marketing mail then has no
    # https unsubscribe URI (RFC 8058).
    settings.SENDPLANE_INSECURE_PUBLIC_URL = False
    assert settings.SENDPLANE_PUBLIC_URL.startswith("http://")
    before = lint_failures("list_unsubscribe")
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(3))
    drain(campaign.sending_domain_id)
    reason = "render: header lint: List-Unsubscribe: no https URI (RFC 8058); List-Unsubscribe: a 'http' URI (https or mailto only)"
    assert set(Message.objects.values_list("status", "attempts", "last_reply")) == {(MessageStatus.FAILED, 1, reason)}
    assert smtp_sink.received == []
    assert lint_failures("list_unsubscribe") - before == 3  # once per message, labelled by rule, never by text


@pytest.mark.django_db
def test_transactional_mail_needs_no_one_click_link_so_the_same_settings_send_it(campaign: Any, smtp_sink: SmtpSink, settings: Any) -> None:
    settings.SENDPLANE_INSECURE_PUBLIC_URL = False
    Campaign.objects.filter(pk=campaign.pk).update(purpose=TRANSACTIONAL)
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(2))
    drain(campaign.sending_domain_id)
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT} and len(smtp_sink.received) == 2


@pytest.mark.django_db
def test_the_esp_path_lints_too(campaign: Any, settings: Any, production_links: None) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(2))
    drain(campaign.sending_domain_id)
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT} and len(mail.outbox) == 2

    settings.SENDPLANE_PUBLIC_URL = "http://localhost:8000"
    trigger_accept(campaign=campaign, idempotency_key="k2", recipients=recipients(1, prefix="late"))
    drain(campaign.sending_domain_id)
    late = Message.objects.get(recipient="late0@example.org")
    assert (late.status, late.last_reply.split(": ")[:3]) == (MessageStatus.FAILED, ["render", "header lint", "List-Unsubscribe"])
    assert len(mail.outbox) == 2
