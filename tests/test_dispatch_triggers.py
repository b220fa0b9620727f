"""trigger_accept: one transaction, idempotent, suppression and variant assignment."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from django.db import connection

from deliverability.services import suppression_add
from dispatch.models import Campaign, CampaignStatus, Message, Trigger
from dispatch.services.triggers import TriggerConflict, TriggerError, assign_arm, trigger_accept
from templates_registry import services
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES, recipients

pytestmark = pytest.mark.django_db


def test_repeated_key_returns_the_first_response_and_inserts_nothing(campaign: Campaign) -> None:
    first, replayed = trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(3))
    again, replayed_again = trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(3))
    assert (replayed, replayed_again) == (False, True)
    assert first == again and first["accepted"] == 3
    assert Message.objects.count() == 3 and Trigger.objects.count() == 1


def test_same_key_with_another_body_is_a_conflict(campaign: Campaign) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(3))
    with pytest.raises(TriggerConflict):
        trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(4))
    assert Message.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_racing_requests_with_one_key_insert_once(campaign: Campaign) -> None:
    answers: list[Any] = []

    def send() -> None:
        try:
            answers.append(trigger_accept(campaign=Campaign.objects.get(pk=campaign.pk), idempotency_key="race", recipients=recipients(50)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            answers.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(a, tuple) for a in answers), answers
    assert len({a[0]["trigger"] for a in answers}) == 1
    assert Message.objects.count() == 50


def test_suppressed_and_invalid_addresses_are_reported_not_inserted(campaign: Campaign) -> None:
    suppression_add(address="user1@example.org", reason="unsubscribed")
    people = recipients(3) + [
        {"address": "not-an-address", "context": SIMPLE_VARIABLES}, {"address": "user0@example.org", "context": SIMPLE_VARIABLES}
    ]
    response, _ = trigger_accept(campaign=campaign, idempotency_key="k", recipients=people)
    assert (response["accepted"], response["suppressed"], response["rejected"]) == (2, 1, 2)
    reasons = {r["index"]: r["reason"] for r in response["rejections"]}
    assert reasons[3].startswith("invalid address") and reasons[4] == "duplicate address in this trigger"
    assert response["suppressed_recipients"] == ["user1@example.org"]
    assert sorted(Message.objects.values_list("recipient", flat=True)) == ["user0@example.org", "user2@example.org"]


def test_header_injection_in_context_rejects_that_recipient(campaign: Campaign) -> None:
    bad = {"address": "evil@example.org", "context": SIMPLE_VARIABLES | {"first_name": "X\r\nBcc: all@example.org"}}
    response, _ = trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(1) + [bad])
    assert response["accepted"] == 1 and "header injection" in response["rejections"][0]["reason"]
    assert not Message.objects.filter(recipient="evil@example.org").exists()


def test_all_rejected_is_an_error_and_inserts_nothing(campaign: Campaign) -> None:
    with pytest.raises(TriggerError, match="every recipient was rejected"):
        trigger_accept(campaign=campaign, idempotency_key="k", recipients=[{"address": "nope", "context": {}}])
    assert not Trigger.objects.exists()


def test_no_approved_version_refuses_the_trigger(version: Any, sending_domain: Any) -> None:
    from dispatch.services.campaigns import campaign_create

    campaign = campaign_create(name="c", template=version.variant.template, sending_domain=sending_domain)
    with pytest.raises(TriggerError, match="no approved version"):
        trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(1))


def test_trigger_starts_a_draft_campaign(campaign: Campaign) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(1))
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.RUNNING


def test_variants_are_assigned_stably_by_weight(campaign: Campaign, approved_version: Any, marketer: Any) -> None:
    template = approved_version.variant.template
    other = services.variant_create(template=template, slug="b", weight=3)
    b_version = services.version_create(variant=other, mjml_body=SIMPLE_MJML, subject="B {{ first_name }}", variables=SIMPLE_VARIABLES)
    from deliverability.assessments import version_assess

    version_assess(version_id=b_version.pk)
    services.version_approve(version=b_version, approved_by=marketer)
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(2000))
    shares = Counter(Message.objects.values_list("version__variant__slug", flat=True))
    assert 0.70 < shares["b"] / 2000 < 0.80  # weight 3 of 4
    from dispatch.services.triggers import _arms

    arms = _arms(campaign)
    assert all(assign_arm(arms, campaign.pk, f"user{i}@example.org").variant.slug == slug
               for i, slug in enumerate(Message.objects.order_by("id").values_list("version__variant__slug", flat=True)[:50]))


def test_empty_recipients_is_a_clear_error(campaign: Campaign) -> None:
    with pytest.raises(TriggerError, match="must not be empty"):
        trigger_accept(campaign=campaign, idempotency_key="k", recipients=[])


@pytest.mark.parametrize("address", ["a\x00b@example.org", "a\ud800@example.org"])
def test_unstorable_address_is_rejected_not_a_crash(campaign: Campaign, address: str) -> None:
    response, _ = trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(1) + [{"address": address, "context": {}}])
    assert response["accepted"] == 1 and "NUL or surrogate" in response["rejections"][0]["reason"]
    assert Trigger.objects.get().response["rejections"][0]["address"] != address
