"""Issue 18: consent-aware sending.

Campaigns carry a purpose; recipients carry consent records (purpose, source,
time, lawful basis, evidence); where the sending domain requires it a trigger
refuses recipients without consent for the campaign's purpose, reported per
recipient as suppression is; a withdrawal is an unsubscribe from the purpose.
API, admin, audit. Real PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from controlplane.errors import ServiceError
from deliverability.errors import DeliverabilityError
from deliverability.models import ConsentRecord, Purpose, SendingDomain
from deliverability.services.consent import consent_give, consent_withdraw
from dispatch.models import Message
from dispatch.services.campaigns import CampaignError, campaign_create
from dispatch.services.erasure import address_erase_everywhere
from dispatch.services.triggers import TriggerError, trigger_accept
from tests.conftest import SIMPLE_VARIABLES, assert_error
from tests.dns_server import DnsServer, dns_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db

ANA, BEN, CLEO = "ana@example.org", "ben@example.org", "cleo@example.org"


def people(*addresses: str) -> list[dict[str, Any]]:
    return [{"address": a, "context": SIMPLE_VARIABLES} for a in addresses]


def send(campaign: Any, *addresses: str, key: str = "k") -> dict[str, Any]:
    return trigger_accept(campaign=campaign, idempotency_key=key, recipients=people(*addresses))[0]


@pytest.fixture
def requiring(sending_domain: SendingDomain) -> SendingDomain:
    SendingDomain.objects.filter(pk=sending_domain.pk).update(consent_required=True)
    sending_domain.refresh_from_db()
    return sending_domain


@pytest.fixture
def newsletter(db: Any) -> Purpose:
    return Purpose.objects.create(slug="newsletter", name="Weekly newsletter")


# --- the service ----------------------------------------------------------------------------------


def test_consent_is_recorded_with_its_proof_and_a_repeat_changes_nothing(marketer: Any) -> None:
    when = timezone.now() - timedelta(days=3)
    row, changed = consent_give(
        address="Ana@Example.org", purpose="marketing", source="signup form /join", lawful_basis="consent",
        evidence={"form": "join-v3", "double_opt_in_at": "2026-12-03T10:00:00Z"}, given_at=when, created_by=marketer,
    )
    assert changed and (row.address, row.purpose, row.given_at, row.withdrawn_at) == (ANA, "marketing", when, None)
    assert consent_give(address=ANA, purpose="marketing", source="again")[1] is False
    entry = AuditEntry.objects.get(action="consent.give")
    assert entry.actor == marketer and "ana@" not in entry.target_label and entry.data["purpose"] == "marketing"


@pytest.mark.parametrize(
    ("change", "field", "named"),
    [
        ({"purpose": "transactional"}, "purpose", "transactional mail needs no consent"),
        ({"purpose": "offers"}, "purpose", "unknown purpose 'offers'"),
        ({"lawful_basis": "because"}, "lawful_basis", "must be one of"),
        ({"source": "  "}, "source", "must say where"),
        ({"evidence": {"blob": "x" * 5000}}, "evidence", "at most 4096 bytes"),
        ({"evidence": {"nul": "\x00"}}, "evidence", "NUL"),
        ({"given_at": timezone.now() + timedelta(days=1)}, "given_at", "must not be in the future"),
        ({"address": "not an address"}, "address", ""),
    ],
)
def test_bad_consent_is_refused_naming_the_field_and_nothing_is_written(change: dict[str, Any], field: str, named: str) -> None:
    args = {"address": ANA, "purpose": "marketing", "source": "form"} | change
    with pytest.raises(ServiceError) as refused:  # DeliverabilityError, or the address check's own
        consent_give(**args)
    assert refused.value.field == field and named in str(refused.value)
    assert not ConsentRecord.objects.exists() and not AuditEntry.objects.filter(action="consent.give").exists()


def test_a_withdrawal_is_kept_even_without_a_consent_and_giving_again_reopens_it(newsletter: Purpose) -> None:
    row, changed = consent_withdraw(address=ANA, purpose="newsletter", source="api: phone call")
    assert changed and row.withdrawn_at is not None and row.source == "never given here"
    assert consent_withdraw(address=ANA.upper(), purpose="newsletter", source="again")[1] is False  # one person, any spelling
    with pytest.raises(DeliverabilityError, match="withdrawn after that time"):
        consent_give(address=ANA, purpose="newsletter", source="old import", given_at=timezone.now() - timedelta(days=30))
    again, changed = consent_give(address=ANA, purpose="newsletter", source="re-joined on the site")
    assert changed and again.pk == row.pk and again.withdrawn_at is None and again.withdrawn_source == ""
    assert [e.action for e in AuditEntry.objects.order_by("id")] == ["consent.withdraw", "consent.give"]


# --- the trigger ---------------------------------------------------------------------------------


def test_where_the_domain_requires_consent_a_trigger_refuses_recipients_without_it_one_by_one(
    campaign: Any, requiring: SendingDomain
) -> None:
    consent_give(address=ANA, purpose="marketing", source="form")
    consent_give(address=BEN, purpose="marketing", source="form")
    consent_withdraw(address=BEN, purpose="marketing", source="preference centre")
    answer = send(campaign, ANA, BEN, CLEO)
    assert (answer["accepted"], answer["without_consent"], answer["suppressed"], answer["rejected"]) == (1, 2, 0, 0)
    assert answer["without_consent_recipients"] == [
        {"index": 1, "address": BEN, "reason": "consent for marketing withdrawn"},
        {"index": 2, "address": CLEO, "reason": "no consent for marketing (the sending domain requires it)"},
    ]
    assert list(Message.objects.values_list("recipient", flat=True)) == [ANA]
    assert AuditEntry.objects.get(action="trigger.accept").data["without_consent"] == 2


def test_a_withdrawal_refuses_whatever_the_domains_policy_and_only_for_its_purpose(
    campaign: Any, newsletter: Purpose, marketer: Any
) -> None:
    consent_withdraw(address=BEN, purpose="marketing", source="preference centre")
    consent_withdraw(address=CLEO, purpose="newsletter", source="preference centre")
    answer = send(campaign, ANA, BEN, CLEO)  # the domain does not require consent
    assert (answer["accepted"], answer["without_consent"]) == (2, 1)
    assert answer["without_consent_recipients"][0]["address"] == BEN


def test_a_transactional_campaign_needs_no_consent(campaign: Any, requiring: SendingDomain, marketer: Any) -> None:
    receipts = campaign_create(
        name="Receipts", template=campaign.template, sending_domain=requiring, purpose="transactional", created_by=marketer
    )
    consent_withdraw(address=BEN, purpose="marketing", source="preference centre")
    answer = send(receipts, ANA, BEN)
    assert (answer["accepted"], answer["without_consent"]) == (2, 0)


def test_every_recipient_without_consent_is_an_answer_not_an_error(campaign: Any, requiring: SendingDomain) -> None:
    answer = send(campaign, ANA, BEN)
    assert (answer["accepted"], answer["without_consent"]) == (0, 2)


def test_a_marketing_campaign_refuses_a_transactional_template(campaign: Any, marketer: Any) -> None:
    with pytest.raises(CampaignError, match="is transactional: a marketing campaign needs a marketing template"):
        type(campaign.template).objects.filter(pk=campaign.template.pk).update(kind="transactional")
        campaign.template.refresh_from_db()
        campaign_create(name="x", template=campaign.template, sending_domain=campaign.sending_domain, created_by=marketer)
    with pytest.raises(TriggerError, match="is transactional"):
        send(campaign, ANA)  # made before the template changed kind
    assert not Message.objects.exists()


def test_a_campaign_names_a_known_purpose(campaign: Any, marketer: Any, newsletter: Purpose) -> None:
    with pytest.raises(CampaignError, match="unknown purpose 'offers'") as refused:
        campaign_create(name="x", template=campaign.template, sending_domain=campaign.sending_domain, purpose="offers")
    assert refused.value.field == "purpose"
    made = campaign_create(name="x", template=campaign.template, sending_domain=campaign.sending_domain, purpose="newsletter")
    assert made.purpose == "newsletter"


# --- erase ------------------------------------------------------------------------------------------


def test_an_erase_blanks_the_consent_and_keeps_the_withdrawal_by_hash(campaign: Any) -> None:
    consent_give(address=ANA, purpose="marketing", source="form", evidence={"ip": "192.0.2.1", "email": ANA})
    consent_withdraw(address=ANA, purpose="marketing", source="preference centre")
    address_erase_everywhere(address=ANA)
    row = ConsentRecord.objects.get()
    assert (row.address, row.evidence) == ("", {}) and row.withdrawn_at is not None
    assert send(campaign, ANA)["accepted"] == 0  # the erase's global suppression, and the withdrawal, both hold


# --- API ---------------------------------------------------------------------------------------------


def test_the_api_records_lists_and_withdraws_consent_by_role(api_as: Any, marketer: Any, oncall: Any, newsletter: Purpose) -> None:
    body = {"address": ANA, "purpose": "newsletter", "source": "signup form", "evidence": {"form": "join"}}
    assert api_as(oncall).post("/api/v1/consents/", body, format="json").status_code == 403  # giving lets mail go
    created = api_as(marketer).post("/api/v1/consents/", body, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["lawful_basis"] == "consent" and created.json()["withdrawn_at"] is None
    assert api_as(marketer).post("/api/v1/consents/", body, format="json").status_code == 200
    listed = api_as(oncall).get("/api/v1/consents/", {"address": ANA.upper()}).json()
    assert [r["purpose"] for r in listed["results"]] == ["newsletter"]
    withdrawn = api_as(oncall).post("/api/v1/consents/withdraw", {"address": ANA, "purpose": "newsletter", "note": "asked"}, format="json")
    assert withdrawn.status_code == 200 and withdrawn.json()["withdrawn_source"] == f"api: {oncall.username}: asked"
    assert [p["slug"] for p in api_as(oncall).get("/api/v1/purposes/").json()] == ["newsletter"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"address": ANA, "purpose": "offers", "source": "x"}, "purpose"),
        ({"address": "nope", "purpose": "marketing", "source": "x"}, "address"),
        ({"address": ANA, "purpose": "marketing"}, "source"),
        ({"address": ANA, "purpose": "marketing", "source": "x", "evidence": []}, "evidence"),
        ({"address": ANA, "purpose": "marketing", "source": "x", "extra": 1}, None),
    ],
)
def test_the_api_refuses_bad_consent_in_one_line_and_writes_nothing(api_as: Any, marketer: Any, body: dict[str, Any], field: Any) -> None:
    assert_error(api_as(marketer).post("/api/v1/consents/", body, format="json"), 400, field)
    assert not ConsentRecord.objects.exists()


def test_a_campaign_is_created_with_its_purpose_through_the_api(api_as: Any, marketer: Any, campaign: Any) -> None:
    body = {"name": "Receipts", "template": campaign.template.slug, "sending_domain": "mail.example.com", "purpose": "transactional"}
    created = api_as(marketer).post("/api/v1/campaigns/", body, format="json")
    assert created.status_code == 201 and created.json()["purpose"] == "transactional"
    assert_error(api_as(marketer).post("/api/v1/campaigns/", body | {"purpose": "offers"}, format="json"), 400, "purpose")


# --- admin -------------------------------------------------------------------------------------------


def test_the_admin_records_a_consent_through_the_service_and_withdraws_it(staff_client: Any, marketer: Any) -> None:
    client: Client = staff_client(marketer)
    url = reverse("admin:deliverability_consentrecord_add")
    form = {"address": ANA, "purpose": "marketing", "lawful_basis": "consent", "source": "paper form", "evidence": "{}",
            "given_at_0": "2026-12-01", "given_at_1": "10:00:00"}
    assert client.post(url, form).status_code == 302
    row = ConsentRecord.objects.get()
    assert AuditEntry.objects.filter(action="consent.give", actor=marketer).count() == 1
    refused = client.post(url, form | {"address": BEN, "purpose": "offers"})
    assert refused.status_code == 200 and "unknown purpose" in refused.content.decode()
    changelist = reverse("admin:deliverability_consentrecord_changelist")
    client.post(changelist, {"action": "withdraw", "_selected_action": [row.pk], "apply": "1", "note": "letter"})
    row.refresh_from_db()
    assert row.withdrawn_at is not None and row.withdrawn_source == f"admin: {marketer.username}: letter"


# --- the providers' sender rules gate marketing triggers ----------------------------------------------


def test_a_domain_failing_the_required_sender_rules_cannot_send_marketing_mail_unless_its_policy_warns(
    campaign: Any, marketer: Any, dns_server: DnsServer  # noqa: F811 - the imported fixture
) -> None:
    from deliverability.services import domain_create

    dns_server.add_zone("acme-shop.com", {"@": ["A 192.0.2.1"]})  # news.acme-shop.com: no SPF, no DKIM, no DMARC
    domain = domain_create(domain="news.acme-shop.com", default_sender="news@news.acme-shop.com")
    newsletter = campaign_create(name="News", template=campaign.template, sending_domain=domain, created_by=marketer)
    with pytest.raises(TriggerError, match="news.acme-shop.com fails the providers' required sender rules: spf_or_dkim"):
        send(newsletter, ANA)
    receipts = campaign_create(name="Receipts", template=campaign.template, sending_domain=domain, purpose="transactional")
    assert send(receipts, ANA)["accepted"] == 1  # transactional mail is not gated
    SendingDomain.objects.filter(pk=domain.pk).update(sender_rules="warn")
    newsletter.sending_domain.refresh_from_db()
    assert send(newsletter, BEN, key="k2")["accepted"] == 1
    assert not Message.objects.filter(campaign=newsletter, recipient=ANA).exists()


def test_an_admin_sets_the_domains_marketing_policies_through_the_api_audited(api_as: Any, admin_role: Any, marketer: Any) -> None:
    from deliverability.services import domain_create

    domain_create(domain="news.acme-shop.com", default_sender="news@news.acme-shop.com")
    url = "/api/v1/domains/news.acme-shop.com/"
    change = {"consent_required": True, "sender_rules": "warn", "reason": "DPO: consent only, DMARC next week"}
    assert_error(api_as(marketer).patch(url, change, format="json"), 403)
    assert_error(api_as(admin_role).patch(url, change | {"sender_rules": "off"}, format="json"), 400, "sender_rules")
    response = api_as(admin_role).patch(url, change, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["consent_required"], response.json()["sender_rules"]) == (True, "warn")
    entry = AuditEntry.objects.get(action="domain.update")
    assert entry.data["after"] == {"consent_required": True, "sender_rules": "warn"}
