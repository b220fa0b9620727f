"""One bad message never blocks a queue: it ends with its reason; a domain-wide fault pauses the domain.

Against the real PostgreSQL and a real SMTP server on loopback (``tests/smtp_sink.py``),
which offers SMTPUTF8 or not. Batches are driven in-process through ``batch_send``.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anymail.exceptions import AnymailAPIError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend

from audit.models import AuditEntry
from deliverability.models import SendingDomain
from dispatch.models import Message, MessageStatus
from dispatch.services.campaigns import campaign_create
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from templates_registry import services
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES, recipients, relay_at
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.django_db

DOMAIN = "mail.example.com"
CYRILLIC = "юзер@example.org"  # a local part with no ASCII form: only SMTPUTF8 carries it
IDN = "user@пример.рф"  # an ASCII local part at an IDN domain: always sendable, as A-labels
PUNYCODE = "user@xn--e1afmkfd.xn--p1ai"


def drain(domain_id: int) -> list[Any]:
    results = []
    for _ in range(100):
        results.append(batch_send(domain_id=domain_id))
        if not results[-1].more:
            return results
    raise AssertionError("the domain never ran out of work")


def person(address: str, **context: Any) -> dict[str, Any]:
    return {"address": address, "context": SIMPLE_VARIABLES | context}


def statuses() -> dict[str, tuple[str, int, str]]:
    return {m.recipient: (m.status, m.attempts, m.last_reply) for m in Message.objects.all()}


@pytest.fixture
def plain_sink(settings: Any) -> Iterator[SmtpSink]:
    """A server that does not offer SMTPUTF8, as many relays still don't."""
    with SmtpSink(smtputf8=False) as sink, relay_at(settings, sink):
        yield sink


@pytest.fixture
def small_batches(settings: Any) -> None:
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "BATCH_SIZE": 3, "RETRY_BASE_SECONDS": 0.0, "MAX_ATTEMPTS": 2}


# --- addresses the next hop cannot take --------------------------------------------------------


def test_a_poison_recipient_mid_batch_fails_with_its_reason_and_every_other_message_goes_out(
    campaign: Any, plain_sink: SmtpSink, small_batches: None
) -> None:
    people = recipients(1) + [person(CYRILLIC)] + recipients(6, prefix="after")
    assert trigger_accept(campaign=campaign, idempotency_key="k", recipients=people)[0]["accepted"] == 8
    drain(campaign.sending_domain_id)
    final = statuses()
    assert final.pop(CYRILLIC) == (MessageStatus.FAILED, 1, "recipient needs SMTPUTF8, which 127.0.0.1 does not offer")
    assert set(final.values()) == {(MessageStatus.SENT, 1, "")}
    assert sorted(r for _, r in plain_sink.pairs()) == sorted(final)  # each other one reached the server, once


def test_a_cyrillic_local_part_goes_with_smtputf8_where_the_server_offers_it(campaign: Any, smtp_sink: SmtpSink) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=[person(CYRILLIC)] + recipients(2))
    drain(campaign.sending_domain_id)
    assert {status for status, _, _ in statuses().values()} == {MessageStatus.SENT}
    by_recipient = {r.recipient: r for r in smtp_sink.received}
    assert by_recipient[CYRILLIC].smtputf8
    assert f"\r\nTo: {CYRILLIC}\r\n".encode() in by_recipient[CYRILLIC].raw  # RFC 6532: UTF-8 as it is, no encoded-word
    assert not by_recipient["user0@example.org"].smtputf8  # the next transaction on the connection is plain ASCII again


def test_an_idn_domain_goes_out_as_punycode_even_without_smtputf8(campaign: Any, plain_sink: SmtpSink) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=[person(IDN)])
    drain(campaign.sending_domain_id)
    assert statuses() == {IDN: (MessageStatus.SENT, 1, "")}  # stored (and matched) as it was accepted
    [received] = plain_sink.received
    assert (received.recipient, received.smtputf8, received.parsed()["To"]) == (PUNYCODE, False, PUNYCODE)


def test_the_trigger_takes_both_forms_of_an_idn_address_as_one_recipient(campaign: Any) -> None:
    response, _ = trigger_accept(campaign=campaign, idempotency_key="k", recipients=[person(IDN), person(PUNYCODE), person(CYRILLIC)])
    assert response["accepted"] == 2
    assert response["rejections"] == [{"index": 1, "address": PUNYCODE, "reason": "duplicate address in this trigger"}]
    assert sorted(Message.objects.values_list("recipient", flat=True)) == sorted([IDN, CYRILLIC])  # stored as email-validator normalizes


def test_a_reply_without_a_code_defers_then_fails_that_message_alone(campaign: Any, smtp_sink: SmtpSink, small_batches: None) -> None:
    # smtplib reads such a line as code -1, which no status column can hold: it must not sink the batch's record.
    people = recipients(1) + [person("garbled@example.org")] + recipients(3, prefix="z")
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=people)
    for _ in range(3):
        drain(campaign.sending_domain_id)
    final = statuses()
    status, attempts, reply = final.pop("garbled@example.org")
    assert (status, attempts) == (MessageStatus.FAILED, 2) and "unreadable reply before DATA:" in reply and "not an SMTP reply" in reply
    assert set(final.values()) == {(MessageStatus.SENT, 1, "")} and len(smtp_sink.pairs()) == 4


# --- an unexpected error in one message ----------------------------------------------------------


def test_a_message_that_renders_but_cannot_be_encoded_fails_alone(
    variant: Any, marketer: Any, sending_domain: Any, smtp_sink: SmtpSink
) -> None:
    # A real poison, no mock: a Jinja string escape yields a lone surrogate for one recipient only. The version
    # passes the gate (sample data) and the trigger (which renders but does not encode); only building the MIME raises.
    from deliverability.assessments import version_assess

    poison = '{% if first_name == "Poison" %}{{ "\\ud800" }}{% endif %}'
    mjml = SIMPLE_MJML.replace("Hello {{ first_name }},", "Hello {{ first_name }}" + poison + ",")
    version = services.version_create(
        variant=variant, mjml_body=mjml, subject="Hi {{ first_name }}", sender_name="Atelier", preheader="Hello", variables=SIMPLE_VARIABLES
    )
    assert version_assess(version_id=version.pk).state == "scored"
    services.version_approve(version=version, approved_by=marketer)
    campaign = campaign_create(name="Poisoned", template=variant.template, sending_domain=sending_domain, created_by=marketer)
    people = recipients(4)
    people[1] = person("poison@example.org", first_name="Poison")
    assert trigger_accept(campaign=campaign, idempotency_key="k", recipients=people)[0]["accepted"] == 4
    [result] = drain(sending_domain.pk)
    final = statuses()
    status, attempts, reason = final.pop("poison@example.org")
    assert (status, attempts) == (MessageStatus.FAILED, 1)
    assert reason.startswith("prepare: UnicodeEncodeError:") and "\n" not in reason
    assert set(final.values()) == {(MessageStatus.SENT, 1, "")} and len(smtp_sink.pairs()) == 3
    assert result.counts == {MessageStatus.SENT: 3, MessageStatus.FAILED: 1}


def test_an_unexpected_error_while_sending_one_message_fails_it_and_the_batch_goes_on(
    campaign: Any, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rcpt = smtplib.SMTP.rcpt

    def rcpt(self: smtplib.SMTP, recip: str, options: Any = ()) -> tuple[int, bytes]:
        if recip.startswith("boom"):
            raise RuntimeError("the library tripped over this one")
        return real_rcpt(self, recip, options)

    monkeypatch.setattr(smtplib.SMTP, "rcpt", rcpt)  # the standard library, not our code
    people = recipients(2) + [person("boom@example.org")] + recipients(2, prefix="z")
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=people)
    drain(campaign.sending_domain_id)
    final = statuses()
    assert final.pop("boom@example.org") == (MessageStatus.FAILED, 1, "RuntimeError: the library tripped over this one")
    assert set(final.values()) == {(MessageStatus.SENT, 1, "")} and len(smtp_sink.pairs()) == 4  # the dropped session reopened


class PickyEsp(LocmemBackend):
    """An ESP backend (any EMAIL_BACKEND) that chokes on one message and is briefly down for another."""

    def send_messages(self, messages: Any) -> int:
        to = messages[0].to[0]
        if to.startswith("boom"):
            raise TypeError("cannot serialize this one")
        if to.startswith("down"):
            raise AnymailAPIError("ESP API response 503: try again later")
        return super().send_messages(messages)


def test_an_esp_error_ends_that_message_alone_failed_when_unexpected_deferred_when_the_esp_is_down(
    campaign: Any, settings: Any
) -> None:
    settings.EMAIL_BACKEND = f"{__name__}.PickyEsp"
    people = recipients(1) + [person("boom@example.org"), person("down@example.org")] + recipients(2, prefix="z")
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=people)
    batch_send(domain_id=campaign.sending_domain_id)
    final = statuses()
    assert final.pop("boom@example.org") == (MessageStatus.FAILED, 1, "TypeError: cannot serialize this one")
    assert final.pop("down@example.org")[:2] == (MessageStatus.DEFERRED, 1)  # retried with backoff, up to MAX_ATTEMPTS
    assert set(final.values()) == {(MessageStatus.SENT, 1, "")}


# --- a domain-wide fault: the DKIM key -----------------------------------------------------------


def _write_key(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _sign_with(campaign: Any, key_path: Path) -> SendingDomain:
    domain = SendingDomain.objects.get(pk=campaign.sending_domain_id)
    domain.dkim_selector, domain.dkim_key_path = "s2026", str(key_path)
    domain.save()
    return domain


def test_a_missing_dkim_key_pauses_the_domain_releases_the_batch_and_sends_after_the_fix(
    campaign: Any, smtp_sink: SmtpSink, tmp_path: Path, api_as: Any, oncall: Any
) -> None:
    key_path = tmp_path / "dkim.pem"
    domain = _sign_with(campaign, key_path)
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(5))
    result = batch_send(domain_id=domain.pk)
    reason = f"DKIM key {key_path} unreadable: No such file or directory"
    assert (result.claimed, result.fault, result.more, result.counts) == (5, reason, False, {MessageStatus.QUEUED: 5})
    assert set(statuses().values()) == {(MessageStatus.QUEUED, 0, "")}  # released, the attempt not counted: no unknown, no failed
    assert smtp_sink.pairs() == []
    entry = AuditEntry.objects.get(action="domain.pause")
    assert (entry.actor_label, entry.reason) == ("dispatch", reason)
    client = api_as(oncall)
    shown = client.get(f"/api/v1/domains/{DOMAIN}/").json()  # where on-call looks
    assert (shown["paused"], shown["paused_by"], shown["paused_reason"]) == (True, "dispatch", reason)
    assert batch_send(domain_id=domain.pk).claimed == 0  # paused: nothing more is claimed

    _write_key(key_path)
    assert client.post(f"/api/v1/domains/{DOMAIN}/resume", {"ramp_minutes": 0}, format="json").status_code == 200
    drain(domain.pk)
    assert set(statuses().values()) == {(MessageStatus.SENT, 1, "")}
    assert len(smtp_sink.pairs()) == 5 and all(r.raw.startswith(b"DKIM-Signature:") for r in smtp_sink.received)


def test_a_key_file_that_is_not_a_private_key_pauses_the_domain_too(campaign: Any, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    key_path = tmp_path / "dkim.pem"
    key_path.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    domain = _sign_with(campaign, key_path)
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(3))
    result = batch_send(domain_id=domain.pk)
    paused = SendingDomain.objects.get(pk=domain.pk)
    assert paused.paused and paused.paused_reason == result.fault
    assert result.fault.startswith(f"DKIM key {key_path} is not an RSA private key: ") and "\n" not in result.fault
    assert set(statuses().values()) == {(MessageStatus.QUEUED, 0, "")} and smtp_sink.pairs() == []
    _write_key(key_path)  # fixed in place, same path: the bad content must not be served from a cache
    SendingDomain.objects.filter(pk=domain.pk).update(paused=False)
    drain(domain.pk)
    assert set(statuses().values()) == {(MessageStatus.SENT, 1, "")}
