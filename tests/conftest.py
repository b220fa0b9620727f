"""Shared actors and helpers. Tests run against the real PostgreSQL (ops/test sets DATABASE_URL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from access.services import token_create
from templates_registry import services
from templates_registry.models import Template, Variant, VariantVersion
from templates_registry.rendering import compile_cache

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"

SIMPLE_MJML = """<mjml>
  <mj-body>
    <mj-section><mj-column>
      <mj-text>Hello {{ first_name }}, <a href="{{ offer_url }}">see the offer</a></mj-text>
    </mj-column></mj-section>
    {% for item in items %}
    <mj-section><mj-column><mj-text>{{ loop.index }}. {{ item }}</mj-text></mj-column></mj-section>
    {% endfor %}
    <mj-section><mj-column><mj-text><a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text></mj-column></mj-section>
  </mj-body>
</mjml>"""
SIMPLE_VARIABLES = {"first_name": "Ana", "offer_url": "https://example.com/offer", "items": ["Hat", "Scarf"]}


@pytest.fixture(autouse=True)
def _fresh_compile_cache() -> None:
    compile_cache.clear()


@pytest.fixture(autouse=True)
def _no_dns_unless_asked(settings: Any) -> None:
    # Recipient domains outside the reserved ones would be looked up (MX, deliverability/providers.py) through the
    # machine's resolver: tests ask only the loopback DNS server they start (tests/dns_server.py), which sets its own.
    settings.SENDPLANE_DNS_RESOLVER = "off"


@pytest.fixture(autouse=True)
def _fresh_throttle_counters() -> None:
    # Every anonymous request of every test comes from 127.0.0.1 and counts (access/throttling.py): per test, not per minute.
    cache.clear()


def _user(username: str, role: str | None) -> User:
    user = User.objects.create_user(username=username, password="correct-horse-battery-staple")
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])  # a transaction=True test flushes migration data
    return user


@pytest.fixture
def marketer(db: Any) -> User:
    return _user("mara-marketer", "marketer")


@pytest.fixture
def oncall(db: Any) -> User:
    return _user("omar-oncall", "oncall")


@pytest.fixture
def admin_role(db: Any) -> User:
    return _user("ada-admin", "admin")


@pytest.fixture
def outsider(db: Any) -> User:
    """Authenticated but with no role: must be refused everywhere."""
    return _user("olga-outsider", None)


@pytest.fixture
def api_as() -> Callable[[User | None], APIClient]:
    def make(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            _, plaintext = token_create(user=user, name="tests", created_by=None)
            client.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
        return client

    return make


@pytest.fixture
def staff_client() -> Callable[[User], Client]:
    """A client logged in as ``user`` made staff (the shared actors are not staff)."""

    def login(user: User) -> Client:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        client = Client()
        client.force_login(user)
        return client

    return login


@pytest.fixture
def template(db: Any) -> Template:
    return services.template_create(slug="welcome", name="Welcome")


@pytest.fixture
def variant(template: Template) -> Variant:
    return services.variant_create(template=template, slug="a", weight=1)


@pytest.fixture
def version(variant: Variant) -> VariantVersion:
    return services.version_create(
        variant=variant,
        mjml_body=SIMPLE_MJML,
        subject="Hi {{ first_name }}",
        sender_name="Atelier",
        preheader="Two picks for {{ first_name }}",
        variables=SIMPLE_VARIABLES,
    )


@pytest.fixture
def smtp_sink(settings: Any) -> Any:
    """A real SMTP server on loopback; Django's EMAIL_* point at it for the test."""
    from tests.smtp_sink import SmtpSink

    with SmtpSink() as sink, relay_at(settings, sink):
        yield sink


@contextmanager
def relay_at(settings: Any, sink: Any) -> Iterator[None]:
    """Django's EMAIL_* point at ``sink`` meanwhile; this process's SMTP sessions start and end with it."""
    from dispatch.services.smtp_pool import pools_close

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    pools_close()  # a pool reads SENDPLANE_SMTP when it is made, and a port may be reused by a later sink
    try:
        yield
    finally:
        pools_close()


@pytest.fixture
def sending_domain(db: Any) -> Any:
    from deliverability.services import domain_create

    return domain_create(domain="mail.example.com", default_sender="news@mail.example.com", rate_per_second=1000, burst=1000)


@pytest.fixture
def approved_version(version: VariantVersion, marketer: User) -> VariantVersion:
    """Through the real gate: pre-send checks and a score from the real spamd (ops/test starts it)."""
    from deliverability.assessments import version_assess

    assessment = version_assess(version_id=version.pk)
    assert assessment is not None and assessment.state == "scored", assessment and assessment.not_scored_reason
    return services.version_approve(version=version, approved_by=marketer)


@pytest.fixture
def campaign(approved_version: VariantVersion, sending_domain: Any, marketer: User) -> Any:
    from dispatch.services.campaigns import campaign_create

    template = approved_version.variant.template
    return campaign_create(name="Welcome wave", template=template, sending_domain=sending_domain, created_by=marketer)


def recipients(n: int, *, prefix: str = "user", domain: str = "example.org") -> list[dict[str, Any]]:
    return [{"address": f"{prefix}{i}@{domain}", "context": SIMPLE_VARIABLES | {"first_name": f"R{i}"}} for i in range(n)]


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"] and "\r" not in body["error"]
    if field is not None:
        assert field in body["fields"], body
    return body


@pytest.fixture
def two_variants(campaign: Any, marketer: User) -> Any:
    """The campaign's template gets a second variant, b, approved through the real gate."""
    from deliverability.assessments import version_assess

    variant = services.variant_create(template=campaign.template, slug="b", weight=1)
    version = services.version_create(
        variant=variant, mjml_body=SIMPLE_MJML, subject="Hello {{ first_name }}", sender_name="Atelier",
        preheader="Picked for {{ first_name }}", variables=SIMPLE_VARIABLES,
    )
    assessment = version_assess(version_id=version.pk)
    assert assessment is not None and assessment.state == "scored"
    services.version_approve(version=version, approved_by=marketer)
    return campaign
