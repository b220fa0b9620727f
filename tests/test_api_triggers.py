"""POST /api/v1/campaigns/{id}/triggers: idempotent, all-or-nothing on bad input, per-recipient reasons.

Publishing hints uses transaction.on_commit; pytest-django's test transaction
never commits, so these tests need no broker and nothing is published.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from rest_framework.test import APIClient

from deliverability.services import suppression_add
from dispatch.models import Campaign, Message, MessageStatus, Trigger
from dispatch.services.campaigns import campaign_create, campaign_set_status
from dispatch.services.triggers import MAX_RECIPIENTS
from templates_registry.models import VariantVersion
from tests.conftest import SIMPLE_VARIABLES, assert_error, recipients

Api = Callable[[User | None], APIClient]


def trigger_url(campaign: Campaign) -> str:
    return f"/api/v1/campaigns/{campaign.pk}/triggers"


def post(client: APIClient, campaign: Campaign, body: Any, *, key: str | None = "key-1") -> Any:
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    if isinstance(body, str):
        return client.post(trigger_url(campaign), body, content_type="application/json", **headers)
    return client.post(trigger_url(campaign), body, format="json", **headers)


def assert_nothing_inserted() -> None:
    assert not Message.objects.exists()
    assert not Trigger.objects.exists()


def person(address: str, **context: Any) -> dict[str, Any]:
    return {"address": address, "context": {**SIMPLE_VARIABLES, **context}}


# --- Accepting ----------------------------------------------------------------------------------


def test_trigger_is_accepted_and_queues_one_message_per_recipient(
    api_as: Api, marketer: User, campaign: Campaign, approved_version: VariantVersion
) -> None:
    response = post(api_as(marketer), campaign, {"recipients": recipients(3)})
    assert response.status_code == 202, response.content
    data = response.json()
    trigger = Trigger.objects.get()
    assert data == {
        "trigger": trigger.pk,
        "accepted": 3,
        "suppressed": 0,
        "without_consent": 0,
        "rejected": 0,
        "suppressed_recipients": [],
        "without_consent_recipients": [],
        "rejections": [],
    }
    assert "Idempotent-Replayed" not in response
    assert (trigger.idempotency_key, trigger.created_by) == ("key-1", marketer)
    messages = Message.objects.order_by("recipient")
    assert [m.recipient for m in messages] == ["user0@example.org", "user1@example.org", "user2@example.org"]
    assert {(m.status, m.trigger_id, m.version_id, m.sending_domain_id) for m in messages} == {
        (MessageStatus.QUEUED, trigger.pk, approved_version.pk, campaign.sending_domain_id)
    }
    assert messages[1].context == {**SIMPLE_VARIABLES, "first_name": "R1"}


def test_trigger_makes_a_draft_campaign_running(api_as: Api, marketer: User, campaign: Campaign) -> None:
    assert campaign.status == "draft"
    post(api_as(marketer), campaign, {"recipients": recipients(1)})
    campaign.refresh_from_db()
    assert campaign.status == "running"


def test_admin_can_trigger(api_as: Api, admin_role: User, campaign: Campaign) -> None:
    assert post(api_as(admin_role), campaign, {"recipients": recipients(2)}).status_code == 202
    assert Message.objects.count() == 2


def test_context_is_optional(api_as: Api, marketer: User, campaign: Campaign, approved_version: Any) -> None:
    # The version declares no required variables beyond its samples; without a context it does not render.
    response = post(api_as(marketer), campaign, {"recipients": [{"address": "a@example.org"}, person("b@example.org")]})
    data = response.json()
    assert response.status_code == 202, data
    assert (data["accepted"], data["rejected"]) == (1, 1)
    assert data["rejections"][0]["index"] == 0 and "does not render" in data["rejections"][0]["reason"]


def test_ten_thousand_recipients_are_accepted(api_as: Api, marketer: User, campaign: Campaign) -> None:
    response = post(api_as(marketer), campaign, {"recipients": recipients(MAX_RECIPIENTS)})
    assert response.status_code == 202, response.content[:500]
    assert response.json()["accepted"] == MAX_RECIPIENTS
    assert Message.objects.filter(status=MessageStatus.QUEUED).count() == MAX_RECIPIENTS


# --- Idempotency --------------------------------------------------------------------------------


def test_same_key_and_body_replays_the_first_response_and_inserts_nothing(
    api_as: Api, marketer: User, campaign: Campaign
) -> None:
    client = api_as(marketer)
    first = post(client, campaign, {"recipients": recipients(3)})
    assert first.status_code == 202
    before = Message.objects.count()
    again = post(client, campaign, {"recipients": recipients(3)})
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Message.objects.count() == before == 3
    assert Trigger.objects.count() == 1


def test_replay_does_not_depend_on_key_order_in_the_json(api_as: Api, marketer: User, campaign: Campaign) -> None:
    client = api_as(marketer)
    one = {"address": "a@example.org", "context": {"first_name": "A", "offer_url": "https://x.test/", "items": []}}
    first = post(client, campaign, json.dumps({"recipients": [one]}))
    reordered = (
        '{"recipients": [{"context": {"items": [], "offer_url": "https://x.test/", "first_name": "A"},'
        ' "address": "a@example.org"}]}'
    )
    again = post(client, campaign, reordered)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Message.objects.count() == 1


def test_replay_by_another_write_role_still_replays(
    api_as: Api, marketer: User, admin_role: User, campaign: Campaign
) -> None:
    first = post(api_as(marketer), campaign, {"recipients": recipients(2)})
    again = post(api_as(admin_role), campaign, {"recipients": recipients(2)})
    assert again.json() == first.json()
    assert Message.objects.count() == 2


def test_same_key_with_a_different_body_is_409_and_inserts_nothing(
    api_as: Api, marketer: User, campaign: Campaign
) -> None:
    client = api_as(marketer)
    post(client, campaign, {"recipients": recipients(3)})
    response = post(client, campaign, {"recipients": recipients(4)})
    body = assert_error(response, 409)
    assert body == {"error": "this Idempotency-Key was already used with a different body"}
    assert Message.objects.count() == 3
    assert Trigger.objects.count() == 1


def test_same_key_with_a_different_context_is_409(api_as: Api, marketer: User, campaign: Campaign) -> None:
    client = api_as(marketer)
    post(client, campaign, {"recipients": [person("a@example.org", first_name="A")]})
    assert_error(post(client, campaign, {"recipients": [person("a@example.org", first_name="B")]}), 409)
    assert Message.objects.get().context["first_name"] == "A"


def test_a_refused_trigger_does_not_use_up_its_key(api_as: Api, marketer: User, campaign: Campaign) -> None:
    client = api_as(marketer)
    assert_error(post(client, campaign, {"recipients": [person("nope")]}), 400)
    response = post(client, campaign, {"recipients": recipients(2)})
    assert response.status_code == 202 and "Idempotent-Replayed" not in response
    assert Message.objects.count() == 2


def test_another_key_inserts_again(api_as: Api, marketer: User, campaign: Campaign) -> None:
    client = api_as(marketer)
    post(client, campaign, {"recipients": recipients(2)}, key="key-1")
    response = post(client, campaign, {"recipients": recipients(2)}, key="key-2")
    assert response.status_code == 202 and "Idempotent-Replayed" not in response
    assert Message.objects.count() == 4


def test_a_key_belongs_to_one_campaign(api_as: Api, marketer: User, campaign: Campaign) -> None:
    other = campaign_create(name="Other", template=campaign.template, sending_domain=campaign.sending_domain)
    client = api_as(marketer)
    post(client, campaign, {"recipients": recipients(2)})
    response = post(client, other, {"recipients": recipients(3)})
    assert response.status_code == 202 and response.json()["accepted"] == 3
    assert Message.objects.filter(campaign=other).count() == 3


# --- The Idempotency-Key header -------------------------------------------------------------------


def test_missing_idempotency_key_is_400_and_inserts_nothing(api_as: Api, marketer: User, campaign: Campaign) -> None:
    body = assert_error(
        post(api_as(marketer), campaign, {"recipients": recipients(2)}, key=None), 400, "Idempotency-Key"
    )
    assert body["error"] == "Idempotency-Key: this header is required"
    assert_nothing_inserted()


@pytest.mark.parametrize("key", ["", "   "])
def test_empty_idempotency_key_is_400(api_as: Api, marketer: User, campaign: Campaign, key: str) -> None:
    assert_error(post(api_as(marketer), campaign, {"recipients": recipients(2)}, key=key), 400, "Idempotency-Key")
    assert_nothing_inserted()


def test_idempotency_key_over_200_characters_is_400(api_as: Api, marketer: User, campaign: Campaign) -> None:
    response = post(api_as(marketer), campaign, {"recipients": recipients(2)}, key="k" * 201)
    assert "at most 200" in assert_error(response, 400, "Idempotency-Key")["error"]
    assert_nothing_inserted()


def test_idempotency_key_of_200_characters_is_accepted(api_as: Api, marketer: User, campaign: Campaign) -> None:
    assert post(api_as(marketer), campaign, {"recipients": recipients(1)}, key="k" * 200).status_code == 202
    assert Trigger.objects.get().idempotency_key == "k" * 200


def test_idempotency_key_with_a_control_character_is_400(api_as: Api, marketer: User, campaign: Campaign) -> None:
    response = post(api_as(marketer), campaign, {"recipients": recipients(1)}, key="key\x00one")
    assert_error(response, 400, "Idempotency-Key")
    assert_nothing_inserted()


# --- Bad input changes nothing ----------------------------------------------------------------------


def test_malformed_json_is_400(api_as: Api, marketer: User, campaign: Campaign) -> None:
    response = post(api_as(marketer), campaign, '{"recipients": [{"address": "a@example.org",')
    body = assert_error(response, 400)
    assert "JSON parse error" in body["error"] and "fields" not in body
    assert_nothing_inserted()


def test_unknown_top_level_field_is_400(api_as: Api, marketer: User, campaign: Campaign) -> None:
    response = post(api_as(marketer), campaign, {"recipients": recipients(2), "send_at": "tomorrow"})
    assert assert_error(response, 400, "send_at")["error"] == "send_at: Unknown field."
    assert_nothing_inserted()


def test_unknown_recipient_field_is_400(api_as: Api, marketer: User, campaign: Campaign) -> None:
    people = recipients(3)
    people[1]["name"] = "Ana"
    body = assert_error(post(api_as(marketer), campaign, {"recipients": people}), 400, "recipients")
    assert body["error"] == "recipients.1.name: Unknown field."
    assert_nothing_inserted()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"recipients": "a@example.org"}, "recipients: "),
        ({"recipients": {"address": "a@example.org"}}, "recipients: "),
        ({"recipients": ["a@example.org"]}, "recipients.0: "),
        ({"recipients": [{"address": 42, "context": {}}]}, "recipients.0.address: Must be a string."),
        ({"recipients": [{"address": ["a@example.org"]}]}, "recipients.0.address: Must be a string."),
        ({"recipients": [{"address": None}]}, "recipients.0.address: "),
        ({"recipients": [{"address": "a@example.org", "context": ["Ana"]}]}, "recipients.0.context: "),
        ({"recipients": [{"address": "a@example.org", "context": "Ana"}]}, "recipients.0.context: "),
        ({"recipients": [{"context": {}}]}, "recipients.0.address: This field is required."),
        ({"recipients": []}, "recipients: "),
        ({}, "recipients: This field is required."),
    ],
    ids=[
        "recipients-a-string",
        "recipients-an-object",
        "recipient-a-string",
        "address-a-number",
        "address-a-list",
        "address-null",
        "context-a-list",
        "context-a-string",
        "address-missing",
        "recipients-empty",
        "recipients-missing",
    ],
)
def test_wrong_shape_or_type_is_400(
    api_as: Api, marketer: User, campaign: Campaign, body: dict[str, Any], expected: str
) -> None:
    error = assert_error(post(api_as(marketer), campaign, body), 400, "recipients")["error"]
    assert error.startswith(expected), error
    assert_nothing_inserted()


def test_json_array_body_is_400(api_as: Api, marketer: User, campaign: Campaign) -> None:
    assert_error(post(api_as(marketer), campaign, recipients(2)), 400)
    assert_nothing_inserted()


def test_one_bad_recipient_type_refuses_the_whole_trigger(api_as: Api, marketer: User, campaign: Campaign) -> None:
    people = recipients(5)
    people[4]["address"] = 4
    assert_error(post(api_as(marketer), campaign, {"recipients": people}), 400, "recipients")
    assert_nothing_inserted()


def test_nul_in_an_address_is_400(api_as: Api, marketer: User, campaign: Campaign) -> None:
    people = [*recipients(1), person("a\x00b@example.org")]
    error = assert_error(post(api_as(marketer), campaign, {"recipients": people}), 400, "recipients")["error"]
    assert error.startswith("recipients.1.address: ")
    assert_nothing_inserted()


def test_lone_surrogate_in_an_address_is_400(api_as: Api, marketer: User, campaign: Campaign) -> None:
    raw = json.dumps({"recipients": [*recipients(1), person("a\udc00b@example.org")]})
    error = assert_error(post(api_as(marketer), campaign, raw), 400, "recipients")["error"]
    assert error.startswith("recipients.1.address: ")
    assert_nothing_inserted()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=4096)
def test_oversized_body_is_413_and_inserts_nothing(api_as: Api, marketer: User, campaign: Campaign) -> None:
    response = post(api_as(marketer), campaign, {"recipients": recipients(100)})
    assert response.status_code == 413
    assert response.json() == {"error": "request body is larger than 4096 bytes"}
    assert_nothing_inserted()


def test_nul_in_a_context_is_400(api_as: Api, marketer: User, campaign: Campaign) -> None:
    people = [*recipients(1), person("a@example.org", first_name="A\x00")]
    error = assert_error(post(api_as(marketer), campaign, {"recipients": people}), 400, "recipients")["error"]
    assert error.startswith("recipients.1.context: ")
    assert_nothing_inserted()


def test_more_than_ten_thousand_recipients_is_400_before_any_item_is_checked(
    api_as: Api, marketer: User, campaign: Campaign
) -> None:
    # Every item is malformed: the answer names the count, so the items were never validated.
    too_many = [{"address": 7}] * (MAX_RECIPIENTS + 1)
    body = assert_error(post(api_as(marketer), campaign, {"recipients": too_many}), 400, "recipients")
    assert body["error"] == "recipients: at most 10000 recipients per trigger, got 10001"
    assert_nothing_inserted()


def test_ten_thousand_and_one_valid_recipients_is_400(api_as: Api, marketer: User, campaign: Campaign) -> None:
    response = post(api_as(marketer), campaign, {"recipients": recipients(MAX_RECIPIENTS + 1)})
    assert "at most 10000 recipients" in assert_error(response, 400, "recipients")["error"]
    assert_nothing_inserted()


# --- Per-recipient outcomes ---------------------------------------------------------------------------


def test_invalid_addresses_are_rejected_with_reasons_and_the_rest_accepted(
    api_as: Api, marketer: User, campaign: Campaign
) -> None:
    people = [person("good@example.org"), person("not-an-address"), person(""), person("a@b@example.org")]
    response = post(api_as(marketer), campaign, {"recipients": people})
    assert response.status_code == 202, response.content
    data = response.json()
    assert (data["accepted"], data["rejected"], data["suppressed"]) == (1, 3, 0)
    assert [(r["index"], r["address"]) for r in data["rejections"]] == [
        (1, "not-an-address"),
        (2, ""),
        (3, "a@b@example.org"),
    ]
    assert all(r["reason"].startswith("invalid address: ") for r in data["rejections"])
    assert list(Message.objects.values_list("recipient", flat=True)) == ["good@example.org"]


def test_duplicate_address_is_rejected_once(api_as: Api, marketer: User, campaign: Campaign) -> None:
    people = [person("a@example.org"), person("A@example.org")]
    data = post(api_as(marketer), campaign, {"recipients": people}).json()
    assert (data["accepted"], data["rejected"]) == (1, 1)
    assert data["rejections"] == [
        {"index": 1, "address": "A@example.org", "reason": "duplicate address in this trigger"}
    ]
    assert Message.objects.count() == 1


def test_all_recipients_invalid_is_400_with_one_line_and_inserts_nothing(
    api_as: Api, marketer: User, campaign: Campaign
) -> None:
    people = [person("nope"), person("also nope")]
    body = assert_error(post(api_as(marketer), campaign, {"recipients": people}), 400)
    assert body["error"].startswith("every recipient was rejected; first: #0 invalid address")
    assert_nothing_inserted()
    campaign.refresh_from_db()
    assert campaign.status == "draft"


def test_suppressed_addresses_are_counted_and_not_inserted(api_as: Api, marketer: User, campaign: Campaign) -> None:
    suppression_add(address="user1@example.org", reason="unsubscribed")
    suppression_add(address="user2@example.org", reason="hard_bounce", sending_domain=campaign.sending_domain)
    data = post(api_as(marketer), campaign, {"recipients": recipients(4)}).json()
    assert (data["accepted"], data["suppressed"], data["rejected"]) == (2, 2, 0)
    assert sorted(data["suppressed_recipients"]) == ["user1@example.org", "user2@example.org"]
    assert sorted(Message.objects.values_list("recipient", flat=True)) == ["user0@example.org", "user3@example.org"]


def test_suppression_matches_whatever_the_case(api_as: Api, marketer: User, campaign: Campaign) -> None:
    suppression_add(address="user0@example.org", reason="unsubscribed")
    people = [person("User0@Example.org"), person("other@example.org")]
    data = post(api_as(marketer), campaign, {"recipients": people}).json()
    assert (data["accepted"], data["suppressed"]) == (1, 1)
    assert not Message.objects.filter(recipient__iexact="user0@example.org").exists()


def test_all_recipients_suppressed_is_still_accepted_and_queues_nothing(
    api_as: Api, marketer: User, campaign: Campaign
) -> None:
    suppression_add(address="user0@example.org", reason="unsubscribed")
    response = post(api_as(marketer), campaign, {"recipients": recipients(1)})
    assert response.status_code == 202, response.content
    assert (response.json()["accepted"], response.json()["suppressed"]) == (0, 1)
    assert not Message.objects.exists()


@pytest.mark.parametrize("injected", ["Ana\r\nBcc: everyone@example.com", "Ana\nBcc: x@example.com", "Ana\rX"])
def test_line_break_in_a_context_value_used_in_the_subject_rejects_that_recipient(
    api_as: Api, marketer: User, campaign: Campaign, injected: str
) -> None:
    people = [person("good@example.org"), person("evil@example.org", first_name=injected)]
    response = post(api_as(marketer), campaign, {"recipients": people})
    assert response.status_code == 202, response.content
    data = response.json()
    assert (data["accepted"], data["rejected"]) == (1, 1)
    (rejection,) = data["rejections"]
    assert (rejection["index"], rejection["address"]) == (1, "evil@example.org")
    assert "header injection" in rejection["reason"]
    assert list(Message.objects.values_list("recipient", flat=True)) == ["good@example.org"]


def test_context_missing_a_variable_rejects_that_recipient(api_as: Api, marketer: User, campaign: Campaign) -> None:
    people = [person("good@example.org"), {"address": "bad@example.org", "context": {"first_name": "B"}}]
    data = post(api_as(marketer), campaign, {"recipients": people}).json()
    assert (data["accepted"], data["rejected"]) == (1, 1)
    assert data["rejections"][0]["reason"].startswith("does not render")


def test_template_without_an_approved_version_is_400_and_inserts_nothing(
    api_as: Api, marketer: User, version: VariantVersion, sending_domain: Any
) -> None:
    unapproved = campaign_create(name="Too early", template=version.variant.template, sending_domain=sending_domain)
    body = assert_error(post(api_as(marketer), unapproved, {"recipients": recipients(2)}), 400)
    assert "no approved version" in body["error"]
    assert_nothing_inserted()


def test_cancelled_campaign_cannot_be_triggered(api_as: Api, marketer: User, campaign: Campaign) -> None:
    campaign_set_status(campaign=campaign, status="cancelled")
    assert "cancelled" in assert_error(post(api_as(marketer), campaign, {"recipients": recipients(2)}), 400)["error"]
    assert_nothing_inserted()


def test_unknown_campaign_is_404(api_as: Api, marketer: User, db: Any) -> None:
    response = api_as(marketer).post(
        "/api/v1/campaigns/999999/triggers", {"recipients": recipients(1)}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert assert_error(response, 404)["error"] == "campaign 999999 not found"
    assert_nothing_inserted()


# --- Who may trigger ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["oncall", "outsider"])
def test_oncall_and_outsider_cannot_trigger(
    request: pytest.FixtureRequest, api_as: Api, campaign: Campaign, role: str
) -> None:
    response = post(api_as(request.getfixturevalue(role)), campaign, {"recipients": recipients(2)})
    assert assert_error(response, 403)["error"] == "Your role does not allow this."
    assert_nothing_inserted()


def test_anonymous_cannot_trigger(api_as: Api, campaign: Campaign) -> None:
    response = post(api_as(None), campaign, {"recipients": recipients(2)})
    assert_error(response, 401)
    assert response["WWW-Authenticate"] == "Token"
    assert_nothing_inserted()


def test_bad_token_cannot_trigger(campaign: Campaign) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
    assert_error(post(client, campaign, {"recipients": recipients(2)}), 401)
    assert_nothing_inserted()


def test_get_is_not_allowed(api_as: Api, marketer: User, campaign: Campaign) -> None:
    assert_error(api_as(marketer).get(trigger_url(campaign)), 405)


# --- Schema -------------------------------------------------------------------------------------------


def test_schema_requires_the_idempotency_key_header(api_as: Api, oncall: User, db: Any) -> None:
    schema = api_as(oncall).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/api/v1/campaigns/{campaign_id}/triggers"]["post"]
    (header,) = [p for p in operation["parameters"] if p["in"] == "header"]
    assert (header["name"], header["required"]) == ("Idempotency-Key", True)
    assert {"202", "400", "401", "403", "404", "409"} <= set(operation["responses"])
    assert "Idempotent-Replayed" in operation["responses"]["202"]["headers"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    recipients_schema = schema["components"]["schemas"][ref]["properties"]["recipients"]
    assert recipients_schema["maxItems"] == MAX_RECIPIENTS
