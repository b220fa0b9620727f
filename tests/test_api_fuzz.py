"""Schemathesis against every operation of the OpenAPI schema: no answer is a server error (issue 7).

The schema is the one /api/v1/schema/ serves (drf-spectacular's generator, the
same call ``manage.py spectacular`` makes), and every request goes in-process
through Django's WSGI application to the real PostgreSQL test database, as an
``admin`` (the role allowed everything) with a token made the way ``api_as``
makes it.

Database: ``transaction=True``. A request through the WSGI handler fires
``request_started``/``request_finished``, whose ``close_old_connections`` closes
a connection that is inside pytest-django's test transaction (autocommit off),
which aborts it. Django's own test client disconnects that signal; a raw WSGI
call does not, so each request must run in autocommit on committed data, as
in production. ``reset_sequences`` makes the seeded rows id 1 each test, so the
path-parameter dictionaries below can name them at collection time (checked in
``seeded``). Celery hints (send_task on commit) are recorded, not published:
the broker is shared and its tasks are tested elsewhere.

Path parameters and a few body fields draw from dictionaries of the seeded
objects with probability 0.8, so most cases reach real objects rather than a
404, and the rest still probe unknown ids and names. No operation is excluded
(the bounce upload gets generated binary bodies as message/rfc822 and
application/octet-stream). Phases: the schema's examples, coverage and
fuzzing, positive and negative data, derandomized with a fixed seed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import hypothesis
import pytest
import schemathesis
from drf_spectacular.renderers import OpenApiJsonRenderer
from drf_spectacular.settings import spectacular_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from access.services import token_create
from controlplane.wsgi import application
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES, recipients

pytestmark = [pytest.mark.django_db(transaction=True, reset_sequences=True)]

# Per operation; raise it for a deeper run by hand: API_FUZZ_EXAMPLES=500 ./ops/test tests/test_api_fuzz.py
MAX_EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "25"))
SEEDED_ID = 1  # every seeded row is the first of its table (reset_sequences)
DOMAIN = "mail.example.com"
PLAIN_MJML = "<mjml><mj-body><mj-section><mj-column><mj-text>Hello</mj-text></mj-column></mj-section></mj-body></mjml>"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

_DICTIONARIES = {
    "seeded_id": [SEEDED_ID],
    "domain": [DOMAIN, DOMAIN.upper()],
    "template": ["welcome"],
    "variant": ["a"],
    "address": ["someone@example.org", "user0@example.org"],
    "mjml": [PLAIN_MJML],
}
_BINDINGS = {
    "path.campaign_id": "seeded_id",
    "path.version_id": "seeded_id",
    "path.suppression_id": "seeded_id",
    "path.domain": "domain",
    "path.slug": "template",
    "path.variant_slug": "variant",
    "query.domain": "domain",
    "query.address": "address",
    "query.recipient": "address",
    "body.template": "template",
    "body.sending_domain": "domain",
    "body.domain": "domain",
    "body.parent": "seeded_id",
    "body.address": "address",
    "body.recipients[*].address": "address",
    "body.mjml_body": "mjml",
}
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 7,
        "dictionaries": {name: {"values": values} for name, values in _DICTIONARIES.items()},
        "parameters": {key: {"dictionary": name, "probability": 0.8} for key, name in _BINDINGS.items()},
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    }
)


# Explicit examples: the examples phase sends each once, so every write reaches its success path at least once
# (a trigger needs recipients whose context renders the seeded template, which random data never is).
PARAMETER_EXAMPLES: dict[str, Any] = {
    "campaign_id": SEEDED_ID, "version_id": SEEDED_ID, "suppression_id": SEEDED_ID, "domain": DOMAIN,
    "slug": "welcome", "variant_slug": "a", "Idempotency-Key": "fuzz-example",
}
BODY_EXAMPLES: dict[tuple[str, str], Any] = {
    ("post", "/api/v1/campaigns/"): {"name": "Autumn", "template": "welcome", "sending_domain": DOMAIN},
    ("post", "/api/v1/campaigns/{campaign_id}/triggers"): {"recipients": recipients(2)},
    ("post", "/api/v1/templates/"): {"slug": "autumn", "name": "Autumn"},
    ("post", "/api/v1/templates/{slug}/variants/"): {"slug": "b", "weight": 1},
    ("post", "/api/v1/templates/{slug}/variants/{variant_slug}/versions/"): {
        "mjml_body": SIMPLE_MJML, "subject": "Hi {{ first_name }}", "variables": SIMPLE_VARIABLES, "parent": SEEDED_ID,
    },
    ("post", "/api/v1/versions/{version_id}/preview"): {"context": SIMPLE_VARIABLES},
    ("post", "/api/v1/suppressions/"): {"address": "someone@example.org", "domain": DOMAIN, "note": "asked us"},
    ("post", "/api/v1/domains/{domain}/resume"): {"reason": "delisted", "ramp_minutes": 30, "force": True},
}


def _served_schema() -> dict[str, Any]:
    """The document /api/v1/schema/ serves, built without a request (like ``manage.py spectacular``)."""
    generator = spectacular_settings.DEFAULT_GENERATOR_CLASS()
    document = generator.get_schema(request=None, public=spectacular_settings.SERVE_PUBLIC)
    return json.loads(OpenApiJsonRenderer().render(document, renderer_context={}))


def _with_examples(document: dict[str, Any]) -> dict[str, Any]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"] in PARAMETER_EXAMPLES:
                    parameter["example"] = PARAMETER_EXAMPLES[parameter["name"]]
            if (method, path) in BODY_EXAMPLES:
                operation["requestBody"]["content"]["application/json"]["example"] = BODY_EXAMPLES[method, path]
    return document


schema = schemathesis.openapi.from_dict(_with_examples(_served_schema()), config=CONFIG)
schema.app = application  # requests go through the WSGI handler, in this process


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    from controlplane.celery import app as celery_app

    sent: list[tuple[str, Any]] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, args=None, **kw: sent.append((name, args)))
    return sent


@pytest.fixture
def seeded(campaign: Any, marketer: Any, published: Any, settings: Any) -> Any:
    """A campaign with queued messages, a manual suppression: every path parameter can name a real object."""
    from deliverability.models import SuppressionReason
    from deliverability.services import suppression_add
    from dispatch.services.triggers import trigger_accept

    settings.SENDPLANE_API_THROTTLE = {"user": "100000/minute", "anon": "100000/minute"}  # fuzzing is not abuse
    trigger_accept(campaign=campaign, idempotency_key="seed", recipients=recipients(3), created_by=marketer)
    suppression, _ = suppression_add(
        address="bounced@example.org", reason=SuppressionReason.MANUAL, sending_domain=campaign.sending_domain,
        source="seed", created_by=marketer,
    )
    version = campaign.template.variants.get().versions.get()
    assert campaign.pk == version.pk == suppression.pk == SEEDED_ID, "the dictionaries name id 1"
    assert campaign.sending_domain.domain == DOMAIN
    return campaign


@pytest.fixture
def admin_authorization(admin_role: Any) -> dict[str, str]:
    _, plaintext = token_create(user=admin_role, name="tests", created_by=None)  # as conftest's api_as does
    return {"Authorization": f"Token {plaintext}"}


@schema.parametrize()
# One seed per operation, shared by its examples on purpose: state builds up as it would for a real client.
@hypothesis.settings(deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
def test_api_answers_without_server_errors(case: schemathesis.Case, seeded: Any, admin_authorization: dict[str, str]) -> None:
    case.call_and_validate(headers=admin_authorization, checks=CHECKS)
