"""Issue 17: retire a version, roll a variant back to one approved before, four-eyes approval.

The live version of a variant is its newest approved one (templates_registry.selectors.version_latest_approved,
which the trigger reads); these tests go through the real trigger path, real spamd scores and real tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from audit.models import AuditEntry
from deliverability.assessments import version_assess
from dispatch.models import Message
from dispatch.services.campaigns import campaign_create
from dispatch.services.triggers import TriggerError, trigger_accept
from dispatch.services.worker import batch_send
from templates_registry import services
from templates_registry.models import Template, Variant, VariantVersion, VersionStatus
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES, assert_error, recipients

pytestmark = pytest.mark.django_db

Api = Callable[[User | None], APIClient]


def _new_version(variant: Variant, subject: str, created_by: Any = None) -> VariantVersion:
    version = services.version_create(
        variant=variant, mjml_body=SIMPLE_MJML, subject=subject, variables=SIMPLE_VARIABLES, created_by=created_by
    )
    assessment = version_assess(version_id=version.pk)
    assert assessment is not None and assessment.state == "scored", assessment and assessment.not_scored_reason
    version.refresh_from_db()
    return version


@pytest.fixture
def v1(variant: Variant, admin_role: User) -> VariantVersion:
    return services.version_approve(version=_new_version(variant, "First {{ first_name }}"), approved_by=admin_role)


@pytest.fixture
def v2(v1: VariantVersion, admin_role: User) -> VariantVersion:
    return services.version_approve(version=_new_version(v1.variant, "Second {{ first_name }}"), approved_by=admin_role)


@pytest.fixture
def wave(v1: VariantVersion, sending_domain: Any, marketer: User) -> Any:
    return campaign_create(name="Wave", template=v1.variant.template, sending_domain=sending_domain, created_by=marketer)


def _sent_versions(campaign: Any, key: str) -> set[int]:
    trigger_accept(campaign=campaign, idempotency_key=key, recipients=recipients(5, prefix=key))
    return set(Message.objects.filter(trigger__idempotency_key=key).values_list("version__number", flat=True))


def _statuses(variant: Variant) -> dict[int, str]:
    return dict(VariantVersion.objects.filter(variant=variant).values_list("number", "status"))


def _snapshot(variant: Variant) -> tuple[Any, ...]:
    versions = VariantVersion.objects.filter(variant=variant).order_by("number")
    rows = list(versions.values_list("number", "status", "status_changed_at", "approved_by", "approved_at"))
    return rows, AuditEntry.objects.count()


# --- retire -------------------------------------------------------------------------------


def test_a_retired_version_is_not_sent_by_later_triggers(wave: Any, v2: VariantVersion, marketer: User) -> None:
    assert _sent_versions(wave, "before") == {2}
    services.version_retire(version=v2, actor=marketer, reason="typo in the subject")
    assert _statuses(v2.variant) == {1: VersionStatus.APPROVED, 2: VersionStatus.RETIRED}
    assert _sent_versions(wave, "after") == {1}
    entry = AuditEntry.objects.get(action="version.retire")
    assert (entry.actor, entry.reason, entry.target_id) == (marketer, "typo in the subject", str(v2.pk))
    assert entry.data == {"number": 2, "was_live": True, "live_now": 1}


def test_retiring_the_only_approved_version_takes_the_template_out_of_sending(wave: Any, v1: VariantVersion, marketer: User) -> None:
    services.version_retire(version=v1, actor=marketer, reason="withdrawn")
    with pytest.raises(TriggerError, match="has no approved version to send"):
        trigger_accept(campaign=wave, idempotency_key="k", recipients=recipients(1))


def test_messages_queued_before_a_retire_still_send_as_queued(wave: Any, v2: VariantVersion, marketer: User, smtp_sink: Any) -> None:
    trigger_accept(campaign=wave, idempotency_key="queued", recipients=recipients(3))
    services.version_retire(version=v2, actor=marketer, reason="superseded")
    while batch_send(domain_id=wave.sending_domain_id).more:
        pass
    subjects = {received.parsed()["Subject"] for received in smtp_sink.received}
    assert subjects == {"Second R0", "Second R1", "Second R2"}  # the content approved when they were triggered


@pytest.mark.parametrize("status", [VersionStatus.DRAFT, VersionStatus.SCORED, VersionStatus.REJECTED])
def test_only_an_approved_version_can_be_retired(variant: Variant, marketer: User, status: str) -> None:
    version = services.version_create(variant=variant, mjml_body=SIMPLE_MJML, subject="Hi", variables=SIMPLE_VARIABLES)
    VariantVersion.objects.filter(pk=version.pk).update(status=status)
    before = _snapshot(variant)
    with pytest.raises(services.RegistryError, match="only an approved version can be retired") as caught:
        services.version_retire(version=version, actor=marketer, reason="why not")
    assert "\n" not in str(caught.value) and _snapshot(variant) == before


def test_retire_needs_a_reason(v1: VariantVersion, marketer: User) -> None:
    before = _snapshot(v1.variant)
    with pytest.raises(services.RegistryError, match="reason: say why"):
        services.version_retire(version=v1, actor=marketer, reason="  ")
    assert _snapshot(v1.variant) == before


def test_a_retired_version_cannot_be_approved_again(v1: VariantVersion, marketer: User, admin_role: User) -> None:
    services.version_retire(version=v1, actor=marketer, reason="old")
    with pytest.raises(services.RegistryError, match="roll the variant back to it instead"):
        services.version_approve(version=v1, approved_by=admin_role)


# --- roll back ------------------------------------------------------------------------------


def test_rollback_makes_the_earlier_version_live_without_a_new_version(wave: Any, v2: VariantVersion, oncall: User, marketer: User) -> None:
    v1 = VariantVersion.objects.get(variant=v2.variant, number=1)
    approved = (v1.approved_by, v1.approved_at)
    assert _sent_versions(wave, "before") == {2}
    result = services.version_rollback(variant=v2.variant, to_version=v1, actor=marketer, reason="v2 converts worse")
    assert (result.live.pk, [v.number for v in result.retired]) == (v1.pk, [2])
    assert _statuses(v2.variant) == {1: VersionStatus.APPROVED, 2: VersionStatus.RETIRED}
    assert VariantVersion.objects.count() == 2
    assert _sent_versions(wave, "after") == {1}
    v1.refresh_from_db()
    assert (v1.approved_by, v1.approved_at) == approved  # who approved the content stays
    rollback = AuditEntry.objects.get(action="version.rollback")
    assert (rollback.actor, rollback.reason, rollback.target_id) == (marketer, "v2 converts worse", str(v1.pk))
    assert rollback.data == {"variant": "welcome/a", "from": 2, "to": 1, "retired": [2], "was": "approved"}
    retire = AuditEntry.objects.get(action="version.retire")
    assert (retire.target_id, retire.data) == (str(v2.pk), {"number": 2, "was_live": True, "rollback_to": 1})


def test_rollback_to_a_retired_version_approves_it_again(wave: Any, v2: VariantVersion, marketer: User) -> None:
    v1 = VariantVersion.objects.get(variant=v2.variant, number=1)
    services.version_rollback(variant=v2.variant, to_version=v1, actor=marketer, reason="back")
    services.version_rollback(variant=v2.variant, to_version=v2, actor=marketer, reason="and forth")
    assert _statuses(v2.variant) == {1: VersionStatus.APPROVED, 2: VersionStatus.APPROVED}
    assert _sent_versions(wave, "forth") == {2}
    assert AuditEntry.objects.filter(action="version.rollback").latest("id").data["was"] == "retired"


def test_rollback_retires_every_approved_version_newer_than_the_target(v2: VariantVersion, admin_role: User, marketer: User) -> None:
    v3 = services.version_approve(version=_new_version(v2.variant, "Third {{ first_name }}"), approved_by=admin_role)
    draft = services.version_create(variant=v2.variant, mjml_body=SIMPLE_MJML, subject="Fourth", variables=SIMPLE_VARIABLES)
    v1 = VariantVersion.objects.get(variant=v2.variant, number=1)
    result = services.version_rollback(variant=v2.variant, to_version=v1, actor=marketer, reason="back to the start")
    assert [v.number for v in result.retired] == [v3.number, 2]
    assert _statuses(v2.variant) == {1: "approved", 2: "retired", 3: "retired", draft.number: "draft"}


def _refused_rollback(variant: Variant, target: VariantVersion, actor: User, match: str) -> None:
    before = _snapshot(variant), _snapshot(target.variant)
    with pytest.raises(services.RegistryError, match=match) as caught:
        services.version_rollback(variant=variant, to_version=target, actor=actor, reason="try")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("to_version: cannot roll back")
    assert (_snapshot(variant), _snapshot(target.variant)) == before


def test_rollback_to_a_version_never_approved_is_refused(v2: VariantVersion, marketer: User) -> None:
    scored = _new_version(v2.variant, "Unapproved {{ first_name }}")
    _refused_rollback(v2.variant, scored, marketer, r"it was never approved \(it is scored\)")


def test_rollback_to_a_rejected_version_is_refused(v2: VariantVersion, marketer: User) -> None:
    v1 = VariantVersion.objects.get(variant=v2.variant, number=1)
    VariantVersion.objects.filter(pk=v1.pk).update(status=VersionStatus.REJECTED)
    _refused_rollback(v2.variant, v1, marketer, "it was rejected")


def test_rollback_to_a_version_of_another_variant_is_refused(v2: VariantVersion, marketer: User, admin_role: User) -> None:
    other = services.variant_create(template=v2.variant.template, slug="b")
    theirs = services.version_approve(version=_new_version(other, "Other {{ first_name }}"), approved_by=admin_role)
    _refused_rollback(v2.variant, theirs, marketer, "is a version of another variant")


def test_rollback_to_the_live_version_is_refused(v2: VariantVersion, marketer: User) -> None:
    _refused_rollback(v2.variant, v2, marketer, "it is already the live version")


def test_rollback_still_needs_the_gate(v2: VariantVersion, marketer: User) -> None:
    v1 = VariantVersion.objects.get(variant=v2.variant, number=1)
    Template.objects.filter(pk=v2.variant.template_id).update(spam_threshold=-50)
    _refused_rollback(v2.variant, v1, marketer, "is not under the template's threshold -50")


# --- four-eyes ------------------------------------------------------------------------------


def test_the_creator_cannot_approve_their_own_version(variant: Variant, marketer: User, admin_role: User) -> None:
    mine = _new_version(variant, "Mine {{ first_name }}", created_by=marketer)
    with pytest.raises(services.RegistryError) as caught:
        services.version_approve(version=mine, approved_by=marketer)
    assert str(caught.value) == f"status: cannot approve {mine}: mara-marketer created it; four-eyes approval needs another person"
    mine.refresh_from_db()
    assert (mine.status, mine.approved_by) == (VersionStatus.SCORED, None)
    assert services.version_approve(version=mine, approved_by=admin_role).approved_by == admin_role


def test_a_template_without_four_eyes_allows_self_approval(marketer: User) -> None:
    template = services.template_create(slug="solo", name="Solo", four_eyes=False, created_by=marketer)
    variant = services.variant_create(template=template, slug="a")
    mine = _new_version(variant, "Mine {{ first_name }}", created_by=marketer)
    assert services.version_approve(version=mine, approved_by=marketer).status == VersionStatus.APPROVED


def test_a_version_without_a_recorded_creator_is_not_held(version: VariantVersion, marketer: User) -> None:
    version_assess(version_id=version.pk)
    assert version.created_by is None
    assert services.version_approve(version=version, approved_by=marketer).status == VersionStatus.APPROVED


def _push(client: APIClient, subject: str) -> dict[str, Any]:
    body = {
        "mjml_body": SIMPLE_MJML, "subject": subject, "variables": SIMPLE_VARIABLES, "origin": "ai",
        "generator": "copybot", "model_name": "m-1", "prompt": "write a welcome",
    }  # fmt: skip
    response = client.post("/api/v1/templates/welcome/variants/a/versions/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_an_ai_generators_token_cannot_approve_what_it_pushed(variant: Variant, api_as: Api, marketer: User, admin_role: User) -> None:
    generator = api_as(marketer)
    pushed = _push(generator, "From the bot {{ first_name }}")
    version_assess(version_id=pushed["id"])
    assessment = generator.get(f"/api/v1/versions/{pushed['id']}/assessment").json()
    assert assessment["approvable_reason"] == "mara-marketer created it; four-eyes approval needs another person"
    body = assert_error(generator.post(f"/api/v1/versions/{pushed['id']}/approve"), 400, "status")
    assert body["error"].endswith("mara-marketer created it; four-eyes approval needs another person")
    assert VariantVersion.objects.get(pk=pushed["id"]).status == VersionStatus.SCORED
    response = api_as(admin_role).post(f"/api/v1/versions/{pushed['id']}/approve")
    assert (response.status_code, response.json()["approved_by"]) == (200, "ada-admin")


def test_four_eyes_is_set_at_creation_and_changed_over_the_api_audited(
    api_as: Api, marketer: User, oncall: User, admin_role: User
) -> None:
    # A marketer (or a generator's token with the role) may not switch four-eyes off: it could then approve its own.
    refused = api_as(marketer).post("/api/v1/templates/", {"slug": "solo", "name": "Solo", "four_eyes": False}, format="json")
    assert refused.status_code == 403 and "admin's decision" in refused.json()["error"]
    assert not Template.objects.filter(slug="solo").exists()
    client = api_as(admin_role)
    created = client.post("/api/v1/templates/", {"slug": "solo", "name": "Solo", "four_eyes": False}, format="json")
    assert (created.status_code, created.json()["four_eyes"]) == (201, False)
    assert AuditEntry.objects.get(action="template.create").data["four_eyes"] is False
    assert api_as(oncall).patch("/api/v1/templates/solo/", {"four_eyes": True}, format="json").status_code == 403
    assert api_as(marketer).patch("/api/v1/templates/solo/", {"four_eyes": True}, format="json").status_code == 403
    changed = client.patch("/api/v1/templates/solo/", {"four_eyes": True}, format="json")
    assert (changed.status_code, changed.json()["four_eyes"]) == (200, True)
    assert client.patch("/api/v1/templates/solo/", {"four_eyes": True}, format="json").status_code == 200
    entries = AuditEntry.objects.filter(action="template.four_eyes")
    assert [(e.actor, e.data) for e in entries] == [(admin_role, {"before": False, "after": True})]
    assert_error(client.patch("/api/v1/templates/solo/", {"name": "Renamed"}, format="json"), 400, "name")
    assert Template.objects.get(slug="solo").name == "Solo"


# --- the API --------------------------------------------------------------------------------


def test_retire_and_rollback_over_the_api(wave: Any, v2: VariantVersion, api_as: Api, marketer: User, oncall: User) -> None:
    client = api_as(marketer)
    assert api_as(oncall).post(f"/api/v1/versions/{v2.pk}/retire", {"reason": "x"}, format="json").status_code == 403
    assert_error(client.post(f"/api/v1/versions/{v2.pk}/retire", {}, format="json"), 400, "reason")
    retired = client.post(f"/api/v1/versions/{v2.pk}/retire", {"reason": "broken link"}, format="json")
    assert (retired.status_code, retired.json()["status"]) == (200, "retired")
    assert _sent_versions(wave, "after-retire") == {1}
    again = assert_error(client.post(f"/api/v1/versions/{v2.pk}/retire", {"reason": "again"}, format="json"), 400, "status")
    assert again["error"] == f"status: cannot retire {v2}: it is retired; only an approved version can be retired"

    url = "/api/v1/templates/welcome/variants/a/rollback"
    assert api_as(oncall).post(url, {"to_version": 2, "reason": "x"}, format="json").status_code == 403
    assert client.post(url, {"to_version": 9, "reason": "x"}, format="json").status_code == 404
    live = assert_error(client.post(url, {"to_version": 1, "reason": "x"}, format="json"), 400, "to_version")
    assert live["error"] == "to_version: cannot roll back welcome/a to v1: it is already the live version"
    rolled = client.post(url, {"to_version": 2, "reason": "link fixed upstream"}, format="json")
    assert rolled.status_code == 200, rolled.content
    assert (rolled.json()["live"]["number"], rolled.json()["retired"]) == (2, [])
    assert _sent_versions(wave, "after-rollback") == {2}


# --- the admin ------------------------------------------------------------------------------


def _admin_url(name: str, *args: Any) -> str:
    return reverse(f"admin:templates_registry_{name}", args=args)


def _action(client: Client, action: str, version: VariantVersion, reason: str | None) -> Any:
    data: dict[str, Any] = {"action": action, "_selected_action": [version.pk]}
    if reason is not None:
        data |= {"apply": "yes", "reason": reason}
    return client.post(_admin_url("variantversion_changelist"), data, follow=True)


def _messages(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_admin_retires_and_rolls_back_with_a_reason(
    wave: Any, v2: VariantVersion, staff_client: Callable[[User], Client], marketer: User
) -> None:
    client = staff_client(marketer)
    page = client.get(_admin_url("variantversion_change", v2.pk)).content.decode()
    assert 'value="retire_selected"' in page and 'value="rollback_to_selected"' not in page  # v2 is live
    asks = _action(client, "retire_selected", v2, None)
    assert "reason" in asks.context["form"].fields and VariantVersion.objects.get(pk=v2.pk).status == "approved"
    done = _action(client, "retire_selected", v2, "wrong price")
    assert _messages(done) == ["Retired welcome/a v2; welcome/a now sends v1."]
    assert AuditEntry.objects.get(action="version.retire").reason == "wrong price"
    assert _sent_versions(wave, "after-retire") == {1}

    page = client.get(_admin_url("variantversion_change", v2.pk)).content.decode()
    assert 'value="rollback_to_selected"' in page and 'value="retire_selected"' not in page
    done = _action(client, "rollback_to_selected", v2, "price fixed")
    assert _messages(done) == ["Rolled welcome/a back to v2 (retired nothing)."]
    assert _sent_versions(wave, "after-rollback") == {2}
    assert VariantVersion.objects.count() == 2


def test_admin_refusals_are_one_line_and_change_nothing(
    v2: VariantVersion, staff_client: Callable[[User], Client], marketer: User, oncall: User
) -> None:
    client = staff_client(marketer)
    before = _snapshot(v2.variant)
    refused = _action(client, "rollback_to_selected", v2, "nothing to do")
    assert _messages(refused) == [f"{v2}: to_version: cannot roll back welcome/a to v2: it is already the live version"]
    assert _snapshot(v2.variant) == before
    response = _action(staff_client(oncall), "retire_selected", v2, "not mine to do")
    assert VariantVersion.objects.get(pk=v2.pk).status == VersionStatus.APPROVED  # no such action for on-call
    assert "retire_selected" not in response.content.decode()


def test_admin_approve_shows_the_four_eyes_refusal_as_one_line(
    variant: Variant, staff_client: Callable[[User], Client], marketer: User
) -> None:
    mine = _new_version(variant, "Mine {{ first_name }}", created_by=marketer)
    client = staff_client(marketer)
    response = client.post(_admin_url("variantversion_approve", mine.pk), follow=True)
    assert _messages(response) == [f"cannot approve {mine}: mara-marketer created it; four-eyes approval needs another person"]
    assert VariantVersion.objects.get(pk=mine.pk).status == VersionStatus.SCORED
    page = client.get(_admin_url("variantversion_change", mine.pk)).content.decode()
    assert "No: mara-marketer created it; four-eyes approval needs another person" in page


def test_admin_creates_templates_with_four_eyes_and_turns_it_off(
    staff_client: Callable[[User], Client], marketer: User, admin_role: User
) -> None:
    as_marketer = staff_client(marketer)
    form = {"slug": "solo", "name": "Solo", "description": "", "spam_threshold": "5"}  # no four-eyes field for a marketer
    form |= {"variants-TOTAL_FORMS": "0", "variants-INITIAL_FORMS": "0"}
    assert "four_eyes" not in as_marketer.get(_admin_url("template_add")).content.decode()
    as_marketer.post(_admin_url("template_add"), form)
    template = Template.objects.get(slug="solo")
    assert template.four_eyes is True
    marketer_try = as_marketer.post(
        _admin_url("template_changelist"), {"action": "four_eyes_off", "_selected_action": [template.pk], "index": "0"}, follow=True
    )
    assert Template.objects.get(slug="solo").four_eyes is True and marketer_try.status_code == 200
    client = staff_client(admin_role)
    response = client.post(
        _admin_url("template_changelist"), {"action": "four_eyes_off", "_selected_action": [template.pk], "index": "0"}, follow=True
    )
    assert _messages(response)[-1] == "Four-eyes approval off for 1 template(s)."
    assert Template.objects.get(slug="solo").four_eyes is False
    assert AuditEntry.objects.get(action="template.four_eyes").data == {"before": True, "after": False}
