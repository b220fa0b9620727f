"""The OpenAPI schema at /api/v1/schema/ describes the registry API completely and validly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.test import APIClient

Api = Callable[[User | None], APIClient]

REGISTRY_OPERATIONS = {
    "/api/v1/templates/": {"get", "post"},
    "/api/v1/templates/{slug}/": {"get"},
    "/api/v1/templates/{slug}/variants/": {"get", "post"},
    "/api/v1/templates/{slug}/variants/{variant_slug}/": {"get"},
    "/api/v1/templates/{slug}/variants/{variant_slug}/versions/": {"get", "post"},
    "/api/v1/versions/{version_id}/": {"get"},
    "/api/v1/versions/{version_id}/preview": {"post"},
}


@pytest.fixture
def schema(api_as: Api, oncall: User) -> dict[str, Any]:
    response = api_as(oncall).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_schema_lists_every_registry_operation(schema: dict[str, Any]) -> None:
    for path, methods in REGISTRY_OPERATIONS.items():
        assert methods <= set(schema["paths"].get(path, {})), path


def test_schema_describes_version_provenance_input(schema: dict[str, Any]) -> None:
    request_body = schema["paths"]["/api/v1/templates/{slug}/variants/{variant_slug}/versions/"]["post"]["requestBody"]
    ref = request_body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    component = schema["components"]["schemas"][ref]
    assert {"mjml_body", "subject", "origin", "generator", "model_name", "prompt", "prompt_hash", "parent"} <= set(
        component["properties"]
    )
    assert component["required"] == ["mjml_body", "subject"]


def test_schema_describes_error_responses(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/api/v1/versions/{version_id}/preview"]["post"]["responses"]
    assert {"200", "400", "401", "403", "404"} <= set(responses)
    assert responses["400"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"


def test_schema_declares_token_authentication(schema: dict[str, Any]) -> None:
    assert schema["components"]["securitySchemes"]["tokenAuth"]["type"] == "apiKey"
    assert {"tokenAuth": []} in schema["paths"]["/api/v1/templates/"]["post"]["security"]


def test_schema_validates_without_warnings(db: Any, tmp_path: Path) -> None:
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    paths = yaml.safe_load(out.read_text(encoding="utf-8"))["paths"]
    assert set(REGISTRY_OPERATIONS) <= set(paths)
