"""The campaigns REST API: who may create and read them, and the progress they show."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from dispatch.models import Campaign, Message, MessageStatus
from dispatch.services.campaigns import campaign_create
from dispatch.services.triggers import trigger_accept
from templates_registry.models import VariantVersion
from tests.conftest import recipients

Api = Callable[[User | None], APIClient]

CAMPAIGNS_URL = "/api/v1/campaigns/"
ALL_STATUSES = {"queued", "sending", "deferred", "sent", "failed", "suppressed", "unknown", "cancelled"}


def campaign_url(campaign: Campaign) -> str:
    return f"/api/v1/campaigns/{campaign.pk}/"


def new_campaign(**changes: Any) -> dict[str, Any]:
    return {"name": "Spring wave", "template": "welcome", "sending_domain": "mail.example.com", **changes}


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"]
    if field is not None:
        assert field in body["fields"], body
    return body


@pytest.fixture
def ready(approved_version: VariantVersion, sending_domain: Any) -> None:
    """A template with an approved version and a sending domain, but no campaign yet."""


# --- Creating -------------------------------------------------------------------------------


def test_marketer_creates_a_campaign(api_as: Api, marketer: User, ready: None) -> None:
    response = api_as(marketer).post(CAMPAIGNS_URL, new_campaign(), format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    campaign = Campaign.objects.get()
    assert {k: data[k] for k in ("id", "name", "template", "sending_domain", "status")} == {
        "id": campaign.pk,
        "name": "Spring wave",
        "template": "welcome",
        "sending_domain": "mail.example.com",
        "status": "draft",
    }
    assert data["progress"] == {**{s: 0 for s in ALL_STATUSES}, "total": 0}
    assert data["created_at"]
    assert campaign.created_by == marketer


def test_admin_creates_a_campaign(api_as: Api, admin_role: User, ready: None) -> None:
    assert api_as(admin_role).post(CAMPAIGNS_URL, new_campaign(), format="json").status_code == 201
    assert Campaign.objects.get().created_by == admin_role


@pytest.mark.parametrize("role", ["oncall", "outsider"])
def test_oncall_and_outsider_cannot_create_a_campaign(
    request: pytest.FixtureRequest, api_as: Api, role: str, ready: None
) -> None:
    response = api_as(request.getfixturevalue(role)).post(CAMPAIGNS_URL, new_campaign(), format="json")
    assert assert_error(response, 403)["error"] == "Your role does not allow this."
    assert not Campaign.objects.exists()


def test_anonymous_cannot_create_a_campaign(api_as: Api, ready: None) -> None:
    response = api_as(None).post(CAMPAIGNS_URL, new_campaign(), format="json")
    assert_error(response, 401)
    assert response["WWW-Authenticate"] == "Token"
    assert not Campaign.objects.exists()


def test_invalid_token_cannot_create_a_campaign(ready: None) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
    assert_error(client.post(CAMPAIGNS_URL, new_campaign(), format="json"), 401)
    assert not Campaign.objects.exists()


def test_unknown_template_is_400_naming_the_field(api_as: Api, marketer: User, ready: None) -> None:
    response = api_as(marketer).post(CAMPAIGNS_URL, new_campaign(template="nope"), format="json")
    body = assert_error(response, 400, "template")
    assert body["error"].startswith("template: ") and "nope" in body["error"]
    assert not Campaign.objects.exists()


def test_unknown_sending_domain_is_400_naming_the_field(api_as: Api, marketer: User, ready: None) -> None:
    response = api_as(marketer).post(CAMPAIGNS_URL, new_campaign(sending_domain="mail.nope.com"), format="json")
    body = assert_error(response, 400, "sending_domain")
    assert body["error"].startswith("sending_domain: ") and "mail.nope.com" in body["error"]
    assert not Campaign.objects.exists()


def test_sending_domain_name_is_case_insensitive(api_as: Api, marketer: User, ready: None) -> None:
    response = api_as(marketer).post(CAMPAIGNS_URL, new_campaign(sending_domain="Mail.Example.COM"), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["sending_domain"] == "mail.example.com"


def test_unknown_field_is_refused_and_nothing_created(api_as: Api, marketer: User, ready: None) -> None:
    response = api_as(marketer).post(CAMPAIGNS_URL, new_campaign(domain="mail.example.com"), format="json")
    assert assert_error(response, 400, "domain")["error"] == "domain: Unknown field."
    assert not Campaign.objects.exists()


@pytest.mark.parametrize("name", ["", "   "])
def test_blank_name_is_refused(api_as: Api, marketer: User, ready: None, name: str) -> None:
    assert_error(api_as(marketer).post(CAMPAIGNS_URL, new_campaign(name=name), format="json"), 400, "name")
    assert not Campaign.objects.exists()


def test_name_longer_than_the_column_is_refused(api_as: Api, marketer: User, ready: None) -> None:
    assert_error(api_as(marketer).post(CAMPAIGNS_URL, new_campaign(name="n" * 201), format="json"), 400, "name")
    assert not Campaign.objects.exists()


@pytest.mark.parametrize("field", ["name", "template", "sending_domain"])
def test_missing_field_is_refused(api_as: Api, marketer: User, ready: None, field: str) -> None:
    body = new_campaign()
    del body[field]
    assert_error(api_as(marketer).post(CAMPAIGNS_URL, body, format="json"), 400, field)
    assert not Campaign.objects.exists()


def test_template_of_the_wrong_type_is_refused(api_as: Api, marketer: User, ready: None) -> None:
    assert_error(
        api_as(marketer).post(CAMPAIGNS_URL, new_campaign(template=["welcome"]), format="json"), 400, "template"
    )
    assert not Campaign.objects.exists()


def test_malformed_json_is_400_and_nothing_created(api_as: Api, marketer: User, ready: None) -> None:
    response = api_as(marketer).post(CAMPAIGNS_URL, '{"name": "x", ', content_type="application/json")
    assert "JSON parse error" in assert_error(response, 400)["error"]
    assert not Campaign.objects.exists()


# --- Reading --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["marketer", "oncall", "admin_role"])
def test_every_role_can_list_campaigns(
    request: pytest.FixtureRequest, api_as: Api, role: str, campaign: Campaign
) -> None:
    response = api_as(request.getfixturevalue(role)).get(CAMPAIGNS_URL)
    assert response.status_code == 200
    assert [c["id"] for c in response.json()["results"]] == [campaign.pk]


@pytest.mark.parametrize("url", [CAMPAIGNS_URL, "detail"])
def test_outsider_cannot_read_campaigns(api_as: Api, outsider: User, campaign: Campaign, url: str) -> None:
    assert_error(api_as(outsider).get(campaign_url(campaign) if url == "detail" else url), 403)


@pytest.mark.parametrize("url", [CAMPAIGNS_URL, "detail"])
def test_anonymous_cannot_read_campaigns(api_as: Api, campaign: Campaign, url: str) -> None:
    assert_error(api_as(None).get(campaign_url(campaign) if url == "detail" else url), 401)


def test_campaign_list_is_newest_first_and_paginated(api_as: Api, oncall: User, campaign: Campaign) -> None:
    later = [
        campaign_create(name=f"Wave {i}", template=campaign.template, sending_domain=campaign.sending_domain)
        for i in (2, 3)
    ]
    data = api_as(oncall).get(CAMPAIGNS_URL, {"limit": 2}).json()
    assert data["count"] == 3
    assert [c["id"] for c in data["results"]] == [later[1].pk, later[0].pk]


def test_campaign_detail_shows_progress(api_as: Api, oncall: User, campaign: Campaign) -> None:
    response, _ = trigger_accept(campaign=campaign, idempotency_key="k1", recipients=recipients(3))
    assert response["accepted"] == 3
    Message.objects.filter(recipient="user0@example.org").update(status=MessageStatus.SENT)
    data = api_as(oncall).get(campaign_url(campaign)).json()
    assert data["status"] == "running"
    assert data["progress"] == {**{s: 0 for s in ALL_STATUSES}, "queued": 2, "sent": 1, "total": 3}


def test_campaign_list_shows_each_campaigns_progress(api_as: Api, marketer: User, campaign: Campaign) -> None:
    other = campaign_create(name="Other", template=campaign.template, sending_domain=campaign.sending_domain)
    trigger_accept(campaign=campaign, idempotency_key="k1", recipients=recipients(2))
    results = api_as(marketer).get(CAMPAIGNS_URL).json()["results"]
    totals = {c["id"]: c["progress"]["total"] for c in results}
    assert totals == {campaign.pk: 2, other.pk: 0}


def test_campaign_detail_output(api_as: Api, marketer: User, campaign: Campaign) -> None:
    data = api_as(marketer).get(campaign_url(campaign)).json()
    assert set(data) == {"id", "name", "template", "sending_domain", "status", "purpose", "created_at", "progress"}
    assert (data["name"], data["template"], data["sending_domain"], data["status"]) == (
        "Welcome wave",
        "welcome",
        "mail.example.com",
        "draft",
    )


def test_unknown_campaign_is_404(api_as: Api, oncall: User, db: Any) -> None:
    body = assert_error(api_as(oncall).get("/api/v1/campaigns/999999/"), 404)
    assert body["error"] == "campaign 999999 not found"


def test_schema_describes_campaign_operations(api_as: Api, oncall: User, db: Any) -> None:
    schema = api_as(oncall).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert {"get", "post"} <= set(schema["paths"]["/api/v1/campaigns/"])
    assert "get" in schema["paths"]["/api/v1/campaigns/{campaign_id}/"]
    create = schema["paths"]["/api/v1/campaigns/"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert schema["components"]["schemas"][ref]["required"] == ["name", "sending_domain", "template"]
    assert {"201", "400", "401", "403"} <= set(create["responses"])
