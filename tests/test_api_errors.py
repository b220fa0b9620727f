"""The API's error shape: one line, JSON, right status, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from rest_framework.test import APIClient

from templates_registry.models import Template

pytestmark = pytest.mark.django_db


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2048)
def test_oversized_body_is_413_json_and_changes_nothing(marketer: User, api_as: Callable[[User | None], APIClient]) -> None:
    body = json.dumps({"slug": "big", "name": "x" * 5000})
    response = api_as(marketer).post("/api/v1/templates/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"error": "request body is larger than 2048 bytes"}
    assert not Template.objects.exists()


def test_permission_error_is_one_plain_line(outsider: User, api_as: Callable[[User | None], APIClient]) -> None:
    response = api_as(outsider).get("/api/v1/templates/")
    assert response.status_code == 403
    assert response.json() == {"error": "Your role does not allow this."}


def test_not_found_names_the_missing_thing(marketer: User, api_as: Callable[[User | None], APIClient]) -> None:
    response = api_as(marketer).get("/api/v1/templates/nope/")
    assert response.status_code == 404
    assert response.json()["error"].startswith("template 'nope'")


def test_deeply_nested_json_is_400(marketer: User, api_as: Callable[[User | None], APIClient]) -> None:
    body = '{"slug": "x", "name": "y", "description": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = api_as(marketer).post("/api/v1/templates/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("JSON parse error")


def test_schema_needs_authentication(api_as: Callable[[User | None], APIClient], oncall: User) -> None:
    assert api_as(None).get("/api/v1/schema/").status_code == 401
    assert api_as(oncall).get("/api/v1/schema/").status_code == 200


