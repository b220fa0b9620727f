"""Issue 15, class 2: one address in any spelling is one person at every door.

Replays the attack: an address with a Cyrillic ``а`` (U+0430) in its domain or
its local part went through the trigger, then could not unsubscribe (500), be
suppressed or erased (400), and a suppression entered in punycode did not stop
a send to the Unicode form. Every door now checks addresses with one rule and
matches them by one key (``controlplane.addresses``); these tests go through
the real doors: the trigger service, the worker against an SMTP server on
loopback, the one-click endpoint, the API, the admin, bounce ingestion.
"""

from __future__ import annotations

import string
from typing import Any

import pytest
from django.apps import apps
from django.test import Client
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.addresses import address_hash, address_key, address_problem, address_spellings
from deliverability.models import FeedbackEvent, SendingDomain, Suppression, SuppressionReason
from deliverability.selectors import address_suppressed
from deliverability.services import suppression_add
from dispatch.models import Message, MessageStatus, Trigger
from dispatch.services.erasure import address_erase_everywhere
from dispatch.services.feedback import bounce_ingest
from dispatch.services.triggers import trigger_accept
from dispatch.services.unsubscribe import unsubscribe_token
from dispatch.services.worker import batch_send
from tests.conftest import SIMPLE_VARIABLES, assert_error
from tests.feedback_helpers import sent_message, verp_of
from tests.smtp_sink import SmtpSink
from tests.test_forged_reports import dsn_to

pytestmark = pytest.mark.django_db

UNICODE_DOMAIN = "idn@ex\u0430mple.org"  # the address: a Cyrillic а in the domain
PUNYCODE_DOMAIN = "idn@xn--exmple-4nf.org"  # the same address, its domain in A-labels
UNICODE_LOCAL = "\u0430na@example.org"  # a Cyrillic а in the local part: no ASCII form at all
SUPPRESSIONS_URL, ERASURES_URL = "/api/v1/suppressions/", "/api/v1/erasures/"


def person(address: str) -> dict[str, Any]:
    return {"address": address, "context": SIMPLE_VARIABLES}


def accept(campaign: Any, *addresses: str, key: str = "k") -> dict[str, Any]:
    return trigger_accept(campaign=campaign, idempotency_key=key, recipients=[person(a) for a in addresses])[0]


# --- the key ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [UNICODE_DOMAIN, PUNYCODE_DOMAIN, "IDN@EX\u0410MPLE.ORG", "idn@XN--EXMPLE-4NF.ORG", " idn@ex\u0430mple.org. ",
     "idn@ex\u0430mple\uff0eorg"],  # upper case, A-labels in capitals, a final dot, a full-width dot (UTS 46 folds it)
)
def test_every_spelling_of_one_address_has_one_key(spelling: str) -> None:
    assert address_key(spelling) == PUNYCODE_DOMAIN
    assert address_hash(spelling) == address_hash(UNICODE_DOMAIN)


def test_a_local_part_is_compared_in_nfc_and_lower_case_and_nothing_else_is_folded() -> None:
    assert address_key("A\u0301na@example.org") == address_key("\u00e1na@example.org")  # decomposed = composed
    assert address_key("\u0410NA@example.org") == address_key(UNICODE_LOCAL)
    assert address_key("a.na@example.org") != address_key("ana@example.org")  # different mailboxes somewhere
    assert address_key("ana+x@example.org") != address_key("ana@example.org")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_has_a_key_and_the_key_is_its_own_key(text: str) -> None:
    key = address_key(text)
    assert address_key(key) == key


_LABEL = st.text(alphabet=string.ascii_lowercase + "\u0430\u0431\u0432\u00fc\u00e9\u4e2d\u6587", min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.ascii_letters + "\u0430\u00e9\u00df", min_size=1, max_size=20), st.lists(_LABEL, min_size=1, max_size=3))
def test_a_valid_address_and_its_a_label_form_are_one_person(local: str, labels: list[str]) -> None:
    address = f"{local}@{'.'.join(labels)}.org"
    if address_problem(address) is not None:
        return  # not an address email-validator takes (a label IDNA 2008 refuses): no door lets it in
    spellings = address_spellings(address)
    assert {address_key(s) for s in spellings} == {address_key(address)}
    assert address_key(address).partition("@")[2].isascii()


# --- trigger and worker -------------------------------------------------------------------------


def test_a_suppression_entered_in_punycode_stops_the_unicode_form_at_the_trigger(campaign: Any) -> None:
    suppression_add(address=PUNYCODE_DOMAIN, reason=SuppressionReason.MANUAL)
    answer = accept(campaign, UNICODE_DOMAIN, "IDN@Ex\u0430mple.org", key="k")
    assert (answer["accepted"], len(answer["suppressed_recipients"])) == (0, 1)  # the second is the first's duplicate
    assert not Message.objects.exists()


def test_a_suppression_entered_in_unicode_stops_the_punycode_form_at_the_trigger(campaign: Any) -> None:
    suppression_add(address="IDN@EX\u0410MPLE.ORG", reason=SuppressionReason.MANUAL)
    assert accept(campaign, PUNYCODE_DOMAIN)["suppressed_recipients"] == [UNICODE_DOMAIN]


def test_a_suppression_added_after_the_trigger_stops_the_worker(campaign: Any, smtp_sink: SmtpSink) -> None:
    assert accept(campaign, UNICODE_DOMAIN, "ok@example.org")["accepted"] == 2
    suppression_add(address=PUNYCODE_DOMAIN, reason=SuppressionReason.MANUAL, sending_domain=campaign.sending_domain)
    while batch_send(domain_id=campaign.sending_domain_id).more:
        pass
    final = {m.recipient: m.status for m in Message.objects.all()}
    assert final == {UNICODE_DOMAIN: MessageStatus.SUPPRESSED, "ok@example.org": MessageStatus.SENT}
    assert [r for _, r in smtp_sink.pairs()] == ["ok@example.org"]


# --- unsubscribe, suppression and erase doors ---------------------------------------------------


@pytest.mark.parametrize("address", [UNICODE_DOMAIN, UNICODE_LOCAL])
def test_a_unicode_recipient_can_unsubscribe_and_then_no_spelling_of_it_is_mailed(campaign: Any, address: str) -> None:
    accept(campaign, address)
    message = Message.objects.get()
    assert Client().post(f"/u/{unsubscribe_token(message)}").status_code == 200  # was 500
    row = Suppression.objects.get()
    assert (row.reason, row.address_hash) == (SuppressionReason.UNSUBSCRIBED, address_hash(address))
    assert address_suppressed(address=address.upper(), sending_domain=campaign.sending_domain)
    assert accept(campaign, address.upper(), key="again")["accepted"] == 0


@pytest.mark.parametrize("address", [UNICODE_DOMAIN, UNICODE_LOCAL, PUNYCODE_DOMAIN])
def test_the_api_suppresses_a_unicode_address_and_finds_it_in_any_spelling(api_as: Any, oncall: Any, address: str) -> None:
    client = api_as(oncall)
    response = client.post(SUPPRESSIONS_URL, {"address": address}, format="json")
    assert response.status_code == 201, response.content  # was 400
    assert client.post(SUPPRESSIONS_URL, {"address": address.upper()}, format="json").status_code == 200  # the same one
    listed = client.get(SUPPRESSIONS_URL, {"address": address_spellings(address)[-1]}).json()
    assert [r["reason"] for r in listed["results"]] == ["manual"]


@pytest.mark.parametrize("bad", ["idn@", "\u0430na@", "a@b@c.org", "ana@exa mple.org", "x" * 65 + "@example.org"])
def test_the_api_refuses_what_is_not_an_address_with_one_line_and_writes_nothing(api_as: Any, oncall: Any, bad: str) -> None:
    body = assert_error(api_as(oncall).post(SUPPRESSIONS_URL, {"address": bad}, format="json"), 400, "address")
    assert "\n" not in str(body) and not Suppression.objects.exists()


def test_the_admin_suppresses_a_unicode_address(staff_client: Any, oncall: Any) -> None:
    response = staff_client(oncall).post("/admin/deliverability/suppression/add/", {"address": UNICODE_LOCAL, "sending_domain": ""})
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert Suppression.objects.get().address_hash == address_hash("\u0410NA@EXAMPLE.ORG")


def test_erase_finds_every_spelling_in_the_outbox_and_trigger_answers(api_as: Any, admin_role: Any, campaign: Any) -> None:
    accept(campaign, UNICODE_DOMAIN, key="one")
    # A row written in the other spelling (as an older version or another tool might have stored it).
    Message.objects.update(recipient=PUNYCODE_DOMAIN.upper())
    suppression_add(address=UNICODE_DOMAIN, reason=SuppressionReason.HARD_BOUNCE, sending_domain=campaign.sending_domain)
    accept(campaign, PUNYCODE_DOMAIN, key="two")  # its answer lists the address as suppressed
    response = api_as(admin_role).post(ERASURES_URL, {"address": "IDN@EX\u0410MPLE.ORG"}, format="json")
    assert response.status_code == 200, response.content  # was 400
    assert response.json()["messages"] == 1 and response.json()["triggers"] == 1
    assert not Message.objects.exclude(recipient="").exists()
    assert "xn--" not in str(list(Trigger.objects.values_list("response", flat=True))).lower()
    assert set(Suppression.objects.values_list("address", flat=True)) == {""}
    assert address_suppressed(address=PUNYCODE_DOMAIN)  # kept by hash, everywhere


def test_erase_of_a_unicode_local_part(campaign: Any) -> None:
    accept(campaign, UNICODE_LOCAL)
    result = address_erase_everywhere(address="\u0410NA@example.org")
    assert result.messages == 1 and not Message.objects.exclude(recipient="").exists()


# --- ingestion ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "final_recipient",
    ["rfc822; idn@xn--exmple-4nf.org", "utf-8; idn@ex\u0430mple.org", "utf-8; idn@ex\\x{0430}mple.org"],
)
def test_a_dsn_naming_any_spelling_of_our_recipient_is_verified_and_suppresses_it(campaign: Any, final_recipient: str) -> None:
    message = sent_message(campaign, UNICODE_DOMAIN)
    raw = dsn_to(verp_of(message), ["PLACEHOLDER"]).replace(b"rfc822; PLACEHOLDER", final_recipient.encode())
    bounce_ingest(raw=raw, source="mailbox")
    event = FeedbackEvent.objects.get()
    assert (event.verified, event.recipient_hash) == (True, address_hash(UNICODE_DOMAIN))
    assert "reported_recipient" not in event.detail
    assert address_suppressed(address=PUNYCODE_DOMAIN)


def test_a_dsn_in_a_utf8_local_part_for_our_recipient(campaign: Any) -> None:
    message = sent_message(campaign, UNICODE_LOCAL)
    raw = dsn_to(verp_of(message), ["PLACEHOLDER"]).replace(b"rfc822; PLACEHOLDER", "utf-8; \\x{0410}NA@example.org".encode())
    bounce_ingest(raw=raw, source="mailbox")
    assert FeedbackEvent.objects.get().verified and address_suppressed(address=UNICODE_LOCAL)


# --- stored rows from before the key ------------------------------------------------------------


def test_the_migration_rehashes_rows_hashed_by_lower_case_and_merges_two_spellings(sending_domain: SendingDomain) -> None:
    import hashlib
    import importlib

    old = lambda address: hashlib.sha256(address.strip().lower().encode()).hexdigest()  # noqa: E731 (0002's rule)
    Suppression.objects.bulk_create([
        Suppression(address=UNICODE_DOMAIN, address_hash=old(UNICODE_DOMAIN), reason="manual"),
        Suppression(address=PUNYCODE_DOMAIN, address_hash=old(PUNYCODE_DOMAIN), reason="hard_bounce"),
        Suppression(address="ana@example.org", address_hash=old("ana@example.org"), reason="manual", sending_domain=sending_domain),
    ])
    FeedbackEvent.objects.create(
        event_type="bounced", recipient=UNICODE_DOMAIN, recipient_hash=old(UNICODE_DOMAIN), dedupe_key="x", source="t",
        occurred_at=timezone.now(),
    )
    importlib.import_module("deliverability.migrations.0008_address_key_hashes").rehash(apps, None)
    rows = {r.address: r.address_hash for r in Suppression.objects.all()}
    assert rows == {PUNYCODE_DOMAIN: address_hash(UNICODE_DOMAIN), "ana@example.org": old("ana@example.org")}
    assert FeedbackEvent.objects.get().recipient_hash == address_hash(PUNYCODE_DOMAIN) != old(UNICODE_DOMAIN)


def test_the_admin_search_finds_an_address_in_any_spelling(staff_client: Any, oncall: Any, campaign: Any) -> None:
    for address in (UNICODE_DOMAIN, "other@example.org"):
        message = sent_message(campaign, address, key=address)
        bounce_ingest(raw=dsn_to(verp_of(message), [address_spellings(address)[-1]]), source="mailbox")
    assert Suppression.objects.count() == FeedbackEvent.objects.count() == 2
    client = staff_client(oncall)
    for page in ("suppression", "feedbackevent"):
        response = client.get(f"/admin/deliverability/{page}/", {"q": PUNYCODE_DOMAIN.upper()})
        assert response.status_code == 200 and "1 result (" in response.content.decode(), page
