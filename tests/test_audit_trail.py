"""The audit trail: every state change that matters writes one entry from its service, in its transaction;
a change that changes nothing writes none; the table is append-only in PostgreSQL; the API and admin read it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import DatabaseError, connection, transaction
from django.db.models import Max
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEntry
from audit.services import audit_record
from controlplane.addresses import address_hash
from deliverability.errors import DeliverabilityError
from deliverability.models import EventType, SendingDomain, Suppression
from deliverability.services import Feedback, domain_create, domain_update, event_record, suppression_add, suppression_remove
from dispatch.models import Campaign, CampaignStatus, Message, MessageStatus
from dispatch.services.campaigns import campaign_set_status, messages_resolve_unknown
from dispatch.services.erasure import address_erase_everywhere
from dispatch.services.triggers import TriggerError, trigger_accept
from templates_registry import services as registry
from templates_registry.models import Origin, Variant, VariantVersion
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES, assert_error, recipients

pytestmark = pytest.mark.django_db
Api = Callable[[User | None], APIClient]
AUDIT_URL = "/api/v1/audit/"
REPORT = {"score": 1.5, "threshold": 5.0, "rules": [], "spamd_version": "test", "duration_ms": 3}


def mark() -> int:
    return AuditEntry.objects.aggregate(last=Max("id"))["last"] or 0


def since(last: int) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(id__gt=last).order_by("id"))


def only(last: int) -> AuditEntry:
    written = since(last)
    assert len(written) == 1, [(e.action, e.target_label) for e in written]
    return written[0]


def content(**changes: Any) -> dict[str, Any]:
    return {"mjml_body": SIMPLE_MJML, "subject": "Hi {{ first_name }}", "variables": SIMPLE_VARIABLES, **changes}


# --- template registry ------------------------------------------------------------------------------


def test_creating_a_template_and_a_variant_records_who(marketer: User) -> None:
    last = mark()
    template = registry.template_create(slug="promo", name="Promo", spam_threshold="4.5", created_by=marketer)
    entry = only(last)
    assert (entry.action, entry.actor, entry.target_type, entry.target_id) == (
        "template.create", marketer, "templates_registry.template", str(template.pk)
    )
    assert entry.data == {"slug": "promo", "spam_threshold": 4.5, "four_eyes": True}
    last = mark()
    variant = registry.variant_create(template=template, slug="b", weight=3, created_by=marketer)
    entry = only(last)
    assert (entry.action, entry.actor_label, entry.target_label, entry.data) == (
        "variant.create", marketer.username, "promo/b", {"template": template.pk, "weight": 3}
    )
    assert variant.pk == int(entry.target_id)


def test_a_refused_create_writes_nothing(variant: Variant, marketer: User) -> None:
    last = mark()
    with pytest.raises(registry.RegistryError):
        registry.template_create(slug="welcome", name="Again", created_by=marketer)
    with pytest.raises(registry.RegistryError):
        registry.variant_create(template=variant.template, slug="a", created_by=marketer)
    with pytest.raises(registry.RenderError):
        registry.version_create(variant=variant, created_by=marketer, **content(subject="{{ nope }}"))
    assert since(last) == []


def test_a_weight_change_records_before_and_after_and_the_same_weight_records_nothing(variant: Variant, marketer: User) -> None:
    last = mark()
    registry.variant_set_weight(variant=variant, weight=7, actor=marketer)
    entry = only(last)
    assert (entry.action, entry.actor, entry.data) == ("variant.set_weight", marketer, {"before": 1, "after": 7})
    last = mark()
    registry.variant_set_weight(variant=variant, weight=7, actor=marketer)
    assert since(last) == [] and Variant.objects.get(pk=variant.pk).weight == 7


def test_a_pushed_version_records_its_provenance_without_the_prompt(variant: Variant) -> None:
    last = mark()
    version = registry.version_create(
        variant=variant, **content(), origin=Origin.AI, generator="copybot", model_name="m-1", prompt="Write a secret welcome"
    )
    entry = only(last)
    assert (entry.action, entry.actor, entry.actor_label, entry.target_id) == ("version.create", None, "generator:copybot", str(version.pk))
    assert entry.data == {
        "number": 1, "content_hash": version.content_hash, "origin": "ai", "parent": None,
        "generator": "copybot", "model_name": "m-1", "prompt_hash": version.prompt_hash,
    }
    assert "secret" not in json.dumps(entry.data)


def test_a_derived_version_names_its_parent(version: VariantVersion, marketer: User) -> None:
    last = mark()
    derived = registry.version_derive(source=version, created_by=marketer, subject="Hello {{ first_name }}")
    entry = only(last)
    assert (entry.action, entry.actor, entry.data["number"], entry.data["parent"]) == (
        "version.create", marketer, derived.number, version.number
    )


def test_scoring_records_the_status_change_once_and_approval_records_score_and_threshold(version: VariantVersion, marketer: User) -> None:
    last = mark()
    registry.assessment_record(version=version, checks=[], report=REPORT)
    entry = only(last)
    assert (entry.action, entry.actor_label, entry.data) == (
        "version.score", "spam-sandbox", {"number": 1, "spam_score": 1.5, "from_cache": False}
    )
    last = mark()
    registry.assessment_record(version=version, checks=[], report=REPORT)  # a rescore: no status change
    assert since(last) == []
    registry.version_approve(version=version, approved_by=marketer)
    entry = only(last)
    assert (entry.action, entry.actor, entry.target_id) == ("version.approve", marketer, str(version.pk))
    assert entry.data == {"number": 1, "was": "scored", "spam_score": 1.5, "threshold": 5.0, "content_hash": version.content_hash}
    last = mark()
    registry.version_approve(version=version, approved_by=marketer)
    assert since(last) == []


def test_a_refused_approval_writes_nothing(version: VariantVersion, marketer: User) -> None:
    last = mark()
    with pytest.raises(registry.RegistryError, match="not been scored"):
        registry.version_approve(version=version, approved_by=marketer)
    assert since(last) == []


# --- dispatch ----------------------------------------------------------------------------------------


def test_creating_a_campaign_is_recorded(campaign: Campaign, marketer: User) -> None:
    entry = AuditEntry.objects.get(action="campaign.create")
    assert (entry.actor, entry.target_id, entry.data) == (
        marketer, str(campaign.pk), {"template": "welcome", "sending_domain": "mail.example.com", "purpose": "marketing"}
    )


def test_an_accepted_trigger_records_counts_once_and_a_replay_records_nothing(campaign: Campaign, marketer: User) -> None:
    suppression_add(address="user0@example.org", reason="manual", created_by=marketer)
    body = [*recipients(3), {"address": "not-an-address", "context": SIMPLE_VARIABLES}]
    last = mark()
    response, replayed = trigger_accept(campaign=campaign, idempotency_key="wave-1", recipients=body, created_by=marketer)
    entry = only(last)
    assert not replayed and (entry.action, entry.actor, entry.target_type, entry.target_id) == (
        "trigger.accept", marketer, "dispatch.campaign", str(campaign.pk)
    )
    assert entry.data == {
        "trigger": response["trigger"], "accepted": 2, "suppressed": 1, "without_consent": 0, "rejected": 1,
        "idempotency_key": "wave-1", "started": True,
    }
    assert "example.org" not in json.dumps(entry.data)
    last = mark()
    assert trigger_accept(campaign=campaign, idempotency_key="wave-1", recipients=body, created_by=marketer) == (response, True)
    with pytest.raises(TriggerError):
        trigger_accept(campaign=campaign, idempotency_key="wave-2", recipients=[], created_by=marketer)
    assert since(last) == []


def test_a_campaign_status_change_records_before_and_after(campaign: Campaign, oncall: User) -> None:
    last = mark()
    campaign_set_status(campaign=campaign, status=CampaignStatus.CANCELLED, actor=oncall, reason="wrong list")
    entry = only(last)
    assert (entry.action, entry.actor, entry.reason, entry.data) == (
        "campaign.set_status", oncall, "wrong list", {"before": "draft", "after": "cancelled"}
    )
    last = mark()
    campaign_set_status(campaign=campaign, status=CampaignStatus.CANCELLED, actor=oncall)
    assert since(last) == []


def test_settling_unknown_messages_records_the_count_and_nothing_when_none_are_unknown(campaign: Campaign, oncall: User) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(3))
    Message.objects.filter(campaign=campaign).update(status=MessageStatus.UNKNOWN)
    last = mark()
    assert messages_resolve_unknown(campaign=campaign, outcome="requeue", actor=oncall) == 3
    entry = only(last)
    assert (entry.action, entry.actor, entry.target_id, entry.data) == (
        "messages.resolve_unknown", oncall, str(campaign.pk), {"outcome": "requeue", "messages": 3, "named": None}
    )
    last = mark()
    assert messages_resolve_unknown(campaign=campaign, outcome="sent", actor="command:resolve_unknown") == 0
    assert since(last) == []


# --- suppression and erasure ------------------------------------------------------------------------


def test_a_manual_suppression_is_recorded_by_hash_once(marketer: User, sending_domain: SendingDomain) -> None:
    last = mark()
    row, created = suppression_add(
        address="Ana@Example.org", reason="manual", sending_domain=sending_domain, source="asked by phone", created_by=marketer
    )
    entry = only(last)
    assert created
    assert (entry.action, entry.actor, entry.reason, entry.target_id) == ("suppression.add", marketer, "asked by phone", str(row.pk))
    assert entry.target_label == f"sha256:{address_hash('ana@example.org')[:12]} (manual, mail.example.com)"
    assert entry.data == {"reason": "manual", "domain": "mail.example.com", "event": None}
    last = mark()
    assert not suppression_add(address="ana@example.org", reason="manual", sending_domain=sending_domain, created_by=marketer)[1]
    assert since(last) == []


def test_a_complaint_suppresses_in_the_name_of_its_source_and_a_repeat_records_nothing(sending_domain: SendingDomain) -> None:
    feedback = Feedback(
        event_type=EventType.COMPLAINED, recipient="eve@example.org", source="webhook:sendgrid", dedupe="sg-1",
        sending_domain=sending_domain, verified=True,
    )
    last = mark()
    event, _ = event_record(feedback)
    entry = only(last)
    assert (entry.action, entry.actor, entry.actor_label, entry.data["event"]) == (
        "suppression.add", None, "feedback:webhook:sendgrid", event.pk
    )
    last = mark()
    event_record(feedback)
    event_record(Feedback(event_type=EventType.DELIVERED, recipient="eve@example.org", source="webhook:sendgrid", dedupe="sg-2"))
    assert since(last) == []


def test_lifting_a_suppression_is_recorded_once(admin_role: User) -> None:
    row, _ = suppression_add(address="bob@example.org", reason="hard_bounce")
    last = mark()
    assert suppression_remove(suppression=row, removed_by=admin_role, reason="typo fixed")
    entry = only(last)
    assert (entry.action, entry.actor, entry.reason, entry.target_id, entry.data["reason"]) == (
        "suppression.remove", admin_role, "typo fixed", str(row.pk), "hard_bounce"
    )
    last = mark()
    assert not suppression_remove(suppression=row, removed_by=admin_role)
    assert since(last) == [] and not Suppression.objects.exists()


def test_an_erase_is_recorded_once_with_counts_and_never_names_the_address(admin_role: User, sending_domain: SendingDomain) -> None:
    suppression_add(address="gone@example.org", reason="manual", sending_domain=sending_domain)
    last = mark()
    address_erase_everywhere(address="Gone@example.org", requested_by=admin_role)
    written = since(last)
    assert [e.action for e in written] == ["suppression.add", "address.erase"]  # the global suppression it keeps, then the erase
    erase = written[1]
    assert (erase.actor, erase.target_type) == (admin_role, "deliverability.suppression")
    assert erase.target_label == f"sha256:{address_hash('gone@example.org')[:12]}"
    assert erase.data == {"messages": 0, "triggers": 0, "suppressions": 2, "events": 0, "mentions": 0}
    rows = AuditEntry.objects.values_list("target_label", "reason", "data")
    assert "gone@" not in json.dumps(list(rows)).lower()
    last = mark()
    address_erase_everywhere(address="gone@example.org", requested_by=admin_role)
    assert since(last) == []


# --- sending domains ----------------------------------------------------------------------------------


def test_creating_a_domain_records_its_settings(admin_role: User) -> None:
    last = mark()
    domain = domain_create(domain="News.example.net", default_sender="hi@news.example.net", rate_per_second=5, burst=10, actor=admin_role)
    entry = only(last)
    assert (entry.action, entry.actor, entry.target_id, entry.target_label) == (
        "domain.create", admin_role, str(domain.pk), "news.example.net"
    )
    assert entry.data == {"default_sender": "hi@news.example.net", "rate_per_second": 5, "burst": 10}


def test_a_settings_change_records_only_the_changed_fields_before_and_after(sending_domain: SendingDomain, oncall: User) -> None:
    last = mark()
    updated = domain_update(
        domain=sending_domain, actor=oncall, reason="Gmail asked us to slow down", rate_per_second=200.0, burst=1000,
        warmup_schedule=[10, 50], warmup_started_on=date(2026, 11, 1),
    )
    entry = only(last)
    assert (entry.action, entry.actor, entry.reason) == ("domain.update", oncall, "Gmail asked us to slow down")
    assert entry.data == {
        "before": {"rate_per_second": 1000.0, "warmup_schedule": [], "warmup_started_on": None},
        "after": {"rate_per_second": 200.0, "warmup_schedule": [10, 50], "warmup_started_on": "2026-11-01"},
    }
    stored = SendingDomain.objects.get(pk=sending_domain.pk)
    assert (updated.rate_per_second, stored.rate_per_second, stored.warmup_started_on) == (200.0, 200.0, date(2026, 11, 1))
    last = mark()
    domain_update(domain=sending_domain, actor=oncall, rate_per_second=200, burst=1000)
    assert since(last) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rate_per_second": 0}, "rate_per_second"),
        ({"burst": 0}, "burst"),
        ({"default_sender": "news@elsewhere.com"}, "default_sender"),
        ({"warmup_schedule": [5, -1]}, "warmup_schedule"),
        ({"provider_rates": {"gmail": "fast"}}, "provider_rates"),
        ({"paused": True}, "paused"),
    ],
)
def test_a_bad_settings_change_is_refused_and_changes_nothing(
    sending_domain: SendingDomain, oncall: User, changes: dict[str, Any], field: str
) -> None:
    last = mark()
    with pytest.raises(DeliverabilityError) as refused:
        domain_update(domain=sending_domain, actor=oncall, **changes)
    assert refused.value.field == field and since(last) == []
    stored = SendingDomain.objects.get(pk=sending_domain.pk)
    assert (stored.rate_per_second, stored.burst, stored.paused) == (1000.0, 1000, False)


# --- append-only --------------------------------------------------------------------------------------


def _entry(target: Any, actor: Any = None) -> AuditEntry:
    return audit_record(action="test.write", target=target, actor=actor, reason="kept", data={"n": 1})


needs_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")


@needs_postgresql
def test_an_entry_cannot_be_updated_or_deleted_through_the_orm(sending_domain: SendingDomain, oncall: User) -> None:
    entry = _entry(sending_domain, oncall)
    attempts = [
        lambda: AuditEntry.objects.filter(pk=entry.pk).update(reason="rewritten"),
        lambda: AuditEntry.objects.filter(pk=entry.pk).update(actor=None, reason="rewritten"),  # not the SET_NULL shape
        lambda: AuditEntry.objects.filter(pk=entry.pk).delete(),
        lambda: AuditEntry.objects.all().delete(),
    ]
    for attempt in attempts:
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            attempt()
    stored = AuditEntry.objects.get(pk=entry.pk)
    assert (stored.reason, stored.actor, stored.data) == ("kept", oncall, {"n": 1})


@needs_postgresql
def test_deleting_a_user_keeps_their_entries_with_the_label(sending_domain: SendingDomain, oncall: User) -> None:
    entry = _entry(sending_domain, oncall)
    oncall.delete()
    stored = AuditEntry.objects.get(pk=entry.pk)
    assert (stored.actor_id, stored.actor_label, stored.reason, stored.created_at) == (None, "omar-oncall", "kept", entry.created_at)


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_truncate_still_empties_the_table(sending_domain: SendingDomain) -> None:
    """The test runner flushes transactional tests with TRUNCATE: no row trigger fires for it."""
    _entry(sending_domain)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE audit_auditentry")
    assert not AuditEntry.objects.exists()


# --- API ----------------------------------------------------------------------------------------------


@pytest.fixture
def trail(sending_domain: SendingDomain, oncall: User, marketer: User) -> dict[str, Any]:
    other = domain_create(domain="other.example.com", default_sender="hi@other.example.com")
    before = timezone.now()
    pause = audit_record(action="domain.pause", target=sending_domain, actor=oncall, reason="blocklisted")
    middle = timezone.now()
    detector = audit_record(action="domain.pause", target=other, actor_label="detector", reason="bounces")
    setting = audit_record(action="domain.update", target=sending_domain, actor=marketer, data={"after": {"burst": 5}})
    return {"before": before, "middle": middle, "pause": pause.pk, "detector": detector.pk, "setting": setting.pk, "other": other}


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_the_api_filters_the_trail_newest_first(api_as: Api, oncall: User, trail: dict[str, Any], sending_domain: SendingDomain) -> None:
    client = api_as(oncall)
    get = lambda **params: ids(client.get(AUDIT_URL, params))  # noqa: E731
    assert get(action="domain.pause") == [trail["detector"], trail["pause"]]
    assert get(action="domain.")[:3] == [trail["setting"], trail["detector"], trail["pause"]]
    assert get(action="domain.") == get(action="domain.", target_type="deliverability.SendingDomain")
    created = AuditEntry.objects.get(action="domain.create", target_id=str(sending_domain.pk)).pk
    assert get(action="domain.", target_id=str(sending_domain.pk)) == [trail["setting"], trail["pause"], created]
    assert get(action="domain.", actor="omar-oncall") == [trail["pause"]]
    assert get(action="domain.", actor="detector") == [trail["detector"]]
    middle = trail["middle"].isoformat()
    assert get(action="domain.", since=middle) == [trail["setting"], trail["detector"]]
    assert get(action="domain.", since=trail["before"].isoformat(), until=middle) == [trail["pause"]]
    assert get(action="nothing.") == []


def test_the_api_pages_and_shows_each_entry_whole(api_as: Api, admin_role: User, trail: dict[str, Any]) -> None:
    body = api_as(admin_role).get(AUDIT_URL, {"action": "domain.", "limit": 1}).json()
    assert body["count"] >= 3 and body["next"] and len(body["results"]) == 1
    assert body["results"][0] == {
        "id": trail["setting"], "created_at": body["results"][0]["created_at"], "actor": "mara-marketer", "actor_label": "mara-marketer",
        "action": "domain.update", "target_type": "deliverability.sendingdomain", "target_id": body["results"][0]["target_id"],
        "target_label": "mail.example.com", "reason": "", "data": {"after": {"burst": 5}},
    }


@pytest.mark.parametrize("actor", ["marketer", "oncall", "admin_role"])
def test_every_role_reads_the_trail(api_as: Api, request: Any, actor: str, trail: dict[str, Any]) -> None:
    assert trail["pause"] in ids(api_as(request.getfixturevalue(actor)).get(AUDIT_URL))


def test_an_outsider_is_refused_and_anonymous_must_authenticate(api_as: Api, outsider: User) -> None:
    assert_error(api_as(outsider).get(AUDIT_URL), 403)
    assert_error(api_as(None).get(AUDIT_URL), 401)


@pytest.mark.parametrize("param", ["since", "until"])
def test_a_bad_date_is_a_400_naming_the_parameter(api_as: Api, oncall: User, param: str) -> None:
    body = assert_error(api_as(oncall).get(AUDIT_URL, {param: "yesterday"}), 400, param)
    assert body["error"].startswith(f"{param}: ")


# --- admin --------------------------------------------------------------------------------------------


def test_the_admin_links_the_target_and_shows_the_data_readably(
    staff_client: Any, oncall: User, trail: dict[str, Any], sending_domain: SendingDomain
) -> None:
    client = staff_client(oncall)
    target = f"/admin/deliverability/sendingdomain/{sending_domain.pk}/change/"
    listing = client.get("/admin/audit/auditentry/").content.decode()
    assert f'<a href="{target}">mail.example.com</a>' in listing
    page = client.get(f"/admin/audit/auditentry/{trail['setting']}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'<a href="{target}">mail.example.com</a>' in html
    assert "<pre>{\n  &quot;after&quot;: {\n    &quot;burst&quot;: 5\n  }\n}</pre>" in html
