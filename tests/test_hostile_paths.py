"""Hostile input never answers 5xx (issue 15, class 10): path segments, nested JSON, broken webhook bodies.

Every route the URL resolver knows (admin, API, unsubscribe) is requested with
each hostile value in each of its path parameters: NUL, non-numeric ids, very
long, unicode, ``../``, quotes. The admin is crawled as a superuser (so every
view is reached, not refused), the API as the ``admin`` role with a token.
"""

from __future__ import annotations

import json
import re
from base64 import b64encode
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern, RoutePattern

from deliverability.models import FeedbackEvent
from tests.conftest import assert_error

pytestmark = pytest.mark.django_db

HOSTILE = ["\x00", "a\x00b", "abc", "-1", "1.5", "9" * 30, "x" * 5000, "é☃𝄞", "..%2F..%2Fetc", "'\"<>;--", " ", "%ff"]
_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>[^)]*\)")
SECRET = "sendplane:Zq8w-hook-secret"
WEBHOOKS = [f"/webhooks/{esp}/tracking/" for esp in ("amazon_ses", "sendgrid", "mailgun", "postmark", "sparkpost")]


def _templates(patterns: list[URLPattern | URLResolver], prefix: str = "") -> Iterator[str]:
    """Every route as a path with ``{name}`` where a parameter goes ("admin/auth/user/{object_id}/change/")."""
    for entry in patterns:
        pattern = entry.pattern
        if isinstance(pattern, RoutePattern):
            piece = str(pattern)
        else:
            assert isinstance(pattern, RegexPattern)
            piece = str(pattern).lstrip("^").rstrip("$").replace("\\Z", "")
        piece = _PARAMETER.sub(lambda m: "{" + (m.group(1) or m.group(2)) + "}", piece)
        if isinstance(entry, URLResolver):
            yield from _templates(entry.url_patterns, prefix + piece)
        else:
            yield prefix + piece


ROUTES = sorted({t for t in _templates(get_resolver().url_patterns) if "{" in t})
ADMIN_ROUTES = [t for t in ROUTES if t.startswith("admin/")]
API_ROUTES = [t for t in ROUTES if t.startswith("api/")]
OTHER_ROUTES = [t for t in ROUTES if t not in ADMIN_ROUTES and t not in API_ROUTES]


def _paths(template: str) -> Iterator[str]:
    """Each hostile value in each parameter, the others a plausible value."""
    names = re.findall(r"\{(\w+)\}", template)
    for name in names:
        for value in HOSTILE:
            segment = value if "%" in value else quote(value, safe="")
            yield "/" + template.format(**{n: (segment if n == name else "1") for n in names})


def _no_server_error(response: Any, path: str) -> None:
    assert response.status_code < 500, f"{response.status_code} for {path!r}"


@pytest.fixture
def superuser_client(db: Any) -> Client:
    user = User.objects.create_superuser(username="root", password="correct-horse-battery-staple")
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def test_the_crawl_covers_the_admin_and_the_api() -> None:
    assert any("{object_id}/change/" in t for t in ADMIN_ROUTES) and any("{object_id}/history/" in t for t in ADMIN_ROUTES)
    assert any("{object_id}/delete/" in t for t in ADMIN_ROUTES)
    assert "api/v1/domains/{domain}/reputation" in API_ROUTES and "api/v1/templates/{slug}/" in API_ROUTES
    assert "u/{token}" in OTHER_ROUTES


@pytest.mark.parametrize("route", ADMIN_ROUTES)
def test_every_admin_url_survives_hostile_segments(route: str, superuser_client: Client, campaign: Any) -> None:
    for path in _paths(route):
        _no_server_error(superuser_client.get(path), path)


@pytest.mark.parametrize("route", API_ROUTES)
def test_every_api_route_refuses_hostile_segments_with_one_line(route: str, api_as: Any, admin_role: Any, campaign: Any) -> None:
    client = api_as(admin_role)
    client.raise_request_exception = False
    for path in _paths(route):
        for method in ("get", "post", "delete"):
            response = getattr(client, method)(path, {}, format="json")
            _no_server_error(response, path)
            if response.status_code >= 400 and response.status_code != 405:
                assert_error(response, response.status_code)


@pytest.mark.parametrize("route", OTHER_ROUTES)
def test_other_routes_survive_hostile_segments(route: str, campaign: Any) -> None:
    client = Client(raise_request_exception=False)
    for path in _paths(route):
        for method in ("get", "post"):
            _no_server_error(getattr(client, method)(path), path)


@pytest.mark.parametrize("domain", ["mail.example.com\x00", "\x00", "x" * 300, "a\x1fb"])
@pytest.mark.parametrize("suffix", ["/", "/reputation", "/evidence", "/pause", "/resume"])
def test_a_nul_or_overlong_domain_is_a_json_404(domain: str, suffix: str, api_as: Any, oncall: Any, sending_domain: Any) -> None:
    response = api_as(oncall).get(f"/api/v1/domains/{quote(domain)}{suffix}")
    assert_error(response, 404)


# --- deeply nested JSON in admin forms -------------------------------------------------------


@pytest.mark.parametrize("depth", [40, 10_000])
def test_the_launch_form_refuses_deeply_nested_json(depth: int, superuser_client: Client, campaign: Any) -> None:
    context = "[" * depth + "]" * depth
    recipients = f'[{{"address": "a@example.org", "context": {{"x": {context}}}}}]'
    response = superuser_client.post(
        "/admin/dispatch/campaign/launch/",
        {"name": "Deep", "template": campaign.template.pk, "sending_domain": campaign.sending_domain.pk, "recipients": recipients},
    )
    assert response.status_code == 200
    assert "nests deeper than" in response.content.decode()


@pytest.mark.parametrize("depth", [40, 10_000])
def test_the_version_form_refuses_deeply_nested_variables(depth: int, superuser_client: Client, variant: Any) -> None:
    response = superuser_client.post(
        "/admin/templates_registry/variantversion/add/",
        {"variant": variant.pk, "subject": "Hi", "mjml_body": "<mjml></mjml>", "variables": "[" * depth + "]" * depth},
    )
    assert response.status_code == 200
    assert "nests deeper than" in response.content.decode()


# --- webhook bodies: valid credentials, broken bodies -----------------------------------------


@pytest.fixture
def _webhooks_on(settings: Any) -> None:
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET, "MAILGUN_WEBHOOK_SIGNING_KEY": "9f3c1e0b7a5d4c2e8f6a1b3d5c7e9f0a"}


BODIES = {
    "empty": "",
    "not json": "hello, world",
    "truncated": '{"event": "bounce", "email": "a@exa',
    "NUL": '{"event": "bounce\\u0000"}',
    "nested": "[" * 10_000 + "]" * 10_000,
    "wrong shape: number": "42",
    "wrong shape: string": '"bounce"',
    "wrong shape: list of numbers": "[1, 2, 3]",
    "wrong shape: object": '{"unexpected": true}',
    "wrong shape: list of lists": "[[{}]]",
    "wrong shape: null": "null",
}


@pytest.mark.usefixtures("_webhooks_on")
@pytest.mark.parametrize("url", WEBHOOKS)
@pytest.mark.parametrize("body", list(BODIES), ids=list(BODIES))
def test_broken_webhook_bodies_with_valid_credentials_are_400(url: str, body: str) -> None:
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    auth = "Basic " + b64encode(SECRET.encode()).decode()
    response = client.post(url, BODIES[body], content_type="application/json", HTTP_AUTHORIZATION=auth)
    if body == "wrong shape: object" and response.status_code == 200:  # read as one event of a type we do not know
        assert not FeedbackEvent.objects.exists()
        return
    assert response.status_code == 400, (response.status_code, response.content[:300])
    text = response.content.decode()
    assert text.strip() and "\n" not in text.strip() and "Traceback" not in text


def test_deeply_nested_json_is_still_a_400_in_the_api(api_as: Any, marketer: Any) -> None:
    response = api_as(marketer).post("/api/v1/templates/", "[" * 10_000 + "]" * 10_000, content_type="application/json")
    assert_error(response, 400)
    assert json.loads(response.content)["error"]
