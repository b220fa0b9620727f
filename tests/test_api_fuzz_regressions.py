"""What the schemathesis run (tests/test_api_fuzz.py) found, pinned one by one: the schema must describe the answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.http import Http404
from django.test import Client, RequestFactory
from django.urls import get_resolver
from rest_framework.test import APIClient

from controlplane.api_errors import not_found
from deliverability.models import EventType, SendingDomain, SuppressionReason
from deliverability.services import suppression_add
from deliverability.services.feedback import Feedback, event_record
from tests.conftest import assert_error

Api = Callable[[User | None], APIClient]

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(api_as: Api, oncall: User) -> dict[str, Any]:
    response = api_as(oncall).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def _component(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    return schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]


def _described(schema: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    ref = schema["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"]
    return _component(schema, ref)


# --- a URL no route matches was Django's HTML page: undocumented content type -----------------------


def test_a_url_no_route_matches_is_the_api_json_404(api_as: Api, oncall: User) -> None:
    """Needs ``handler404 = "controlplane.api_errors.not_found"`` in controlplane/urls.py."""
    assert get_resolver().resolve_error_handler(404) is not_found
    assert_error(api_as(oncall).get("/api/v1/campaigns/null,null/"), 404)


def test_the_404_handler_answers_json_under_the_api_and_html_elsewhere() -> None:
    api = not_found(RequestFactory().get("/api/v1/versions/abc/"), Http404())
    assert (api.status_code, api["Content-Type"]) == (404, "application/json")
    site = not_found(RequestFactory().get("/elsewhere/"), Http404())
    assert site.status_code == 404 and site["Content-Type"].startswith("text/html")


def test_outside_the_api_an_unknown_url_stays_an_html_page(client: Client) -> None:
    assert client.get("/no-such-page/")["Content-Type"].startswith("text/html")


# --- the suppression and event lists answer a page; the schema said a bare array -------------------


def test_the_suppression_list_is_described_as_the_page_it_answers(schema: dict[str, Any], api_as: Api, oncall: User) -> None:
    body = api_as(oncall).get("/api/v1/suppressions/").json()
    described = _described(schema, "/api/v1/suppressions/", "get", "200")
    assert set(body) == set(described["properties"]) == {"count", "next", "previous", "results"}
    assert {"limit", "offset"} <= {p["name"] for p in schema["paths"]["/api/v1/suppressions/"]["get"]["parameters"]}


def test_the_event_list_is_described_as_the_page_it_answers(schema: dict[str, Any], api_as: Api, oncall: User) -> None:
    body = api_as(oncall).get("/api/v1/events/").json()
    described = _described(schema, "/api/v1/events/", "get", "200")
    assert set(body) == set(described["properties"]) == {"count", "next", "previous", "results"}


# --- a suppression for every domain, an event without one: null where the schema said string ---------


def test_a_suppression_for_every_domain_answers_a_null_domain_the_schema_allows(
    schema: dict[str, Any], api_as: Api, oncall: User
) -> None:
    response = api_as(oncall).post("/api/v1/suppressions/", {"address": "someone@example.org"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["domain"] is None
    properties = _component(schema, "Suppression")["properties"]
    assert properties["domain"].get("nullable") is True
    assert properties["created_by"].get("nullable") is True  # a suppression added by ingestion has no user


def test_an_event_without_a_sending_domain_answers_a_null_domain_the_schema_allows(
    schema: dict[str, Any], api_as: Api, oncall: User
) -> None:
    event_record(Feedback(event_type=EventType.BOUNCED, recipient="someone@example.org", source="upload", dedupe="x"))
    [event] = api_as(oncall).get("/api/v1/events/").json()["results"]
    assert event["domain"] is None
    assert not SendingDomain.objects.exists()
    assert _component(schema, "FeedbackEvent")["properties"]["domain"].get("nullable") is True


# --- server errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/api/v1/templates/", "/api/v1/campaigns/", "/api/v1/suppressions/", "/api/v1/events/",
     "/api/v1/templates/welcome/variants/", "/api/v1/templates/welcome/variants/a/versions/"],
)
def test_a_limit_past_bigint_is_capped_not_a_500(api_as: Api, oncall: User, campaign: Any, path: str) -> None:
    """DRF handed any limit to SQL: ``LIMIT 14945229477407904235520`` was PostgreSQL's 'bigint out of range'."""
    event, _ = event_record(Feedback(event_type=EventType.BOUNCED, recipient="a@example.org", source="upload", dedupe="x"))
    suppression_add(address="a@example.org", reason=SuppressionReason.MANUAL, event=event)  # every list has a row
    response = api_as(oncall).get(path, {"limit": "14945229477407904235520", "offset": "-912421"})
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("path", "name"),
    [("/api/v1/events/", "domain"), ("/api/v1/events/", "event_type"), ("/api/v1/suppressions/", "domain"),
     ("/api/v1/suppressions/", "reason")],
)
def test_a_nul_in_a_list_filter_is_400_not_a_500(api_as: Api, oncall: User, path: str, name: str) -> None:
    """PostgreSQL refuses NUL in text: the filter reached the query and was a DataError."""
    assert_error(api_as(oncall).get(path, {name: "mail\x00.example.com"}), 400, field=name)
