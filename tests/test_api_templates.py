"""The template registry's REST API: roles, provenance, and bad input that changes nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from templates_registry import services
from templates_registry.models import Template, Variant, VariantVersion
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES

Api = Callable[[User | None], APIClient]

READ_ROLES = ["marketer", "oncall", "admin_role"]
WRITE_ROLES = ["marketer", "admin_role"]
PROMPT = "Write a warm welcome email for new customers of a hat shop. Mention two picks."
PROMPT_SHA256 = hashlib.sha256(PROMPT.encode("utf-8")).hexdigest()

TEMPLATES_URL = "/api/v1/templates/"
VARIANTS_URL = "/api/v1/templates/welcome/variants/"
VERSIONS_URL = "/api/v1/templates/welcome/variants/a/versions/"


def version_url(version: VariantVersion) -> str:
    return f"/api/v1/versions/{version.pk}/"


def preview_url(version: VariantVersion) -> str:
    return f"/api/v1/versions/{version.pk}/preview"


def human_version(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "mjml_body": SIMPLE_MJML,
        "subject": "Hi {{ first_name }}",
        "sender_name": "Atelier",
        "preheader": "Two picks for {{ first_name }}",
        "variables": SIMPLE_VARIABLES,
    }
    return {**body, **changes}


def ai_version(**changes: Any) -> dict[str, Any]:
    provenance = {
        "origin": "ai",
        "generator": "copywriter-bot/2.3",
        "model_name": "gpt-4o-2024-08-06",
        "prompt": PROMPT,
        "generation_params": {"temperature": 0.7, "seed": 42},
    }
    return human_version(**{**provenance, **changes})


def user_of(request: pytest.FixtureRequest, role: str) -> User:
    return request.getfixturevalue(role)


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"]
    if field is not None:
        assert field in body["fields"], body
    return body


# --- Authentication and roles ------------------------------------------------------------


def test_anonymous_is_asked_for_a_token(api_as: Api, template: Template) -> None:
    response = api_as(None).get(TEMPLATES_URL)
    assert_error(response, 401)
    assert response["WWW-Authenticate"] == "Token"


def test_invalid_token_is_refused(template: Template) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
    assert_error(client.get(TEMPLATES_URL), 401)


@pytest.mark.parametrize("role", READ_ROLES)
def test_every_role_can_list_templates(
    request: pytest.FixtureRequest, api_as: Api, role: str, template: Template
) -> None:
    response = api_as(user_of(request, role)).get(TEMPLATES_URL)
    assert response.status_code == 200
    assert [t["slug"] for t in response.json()["results"]] == ["welcome"]


@pytest.mark.parametrize(
    "url",
    [TEMPLATES_URL, "/api/v1/templates/welcome/", VARIANTS_URL, "/api/v1/templates/welcome/variants/a/", VERSIONS_URL],
)
def test_outsider_cannot_read(api_as: Api, outsider: User, version: VariantVersion, url: str) -> None:
    assert_error(api_as(outsider).get(url), 403)


@pytest.mark.parametrize(
    "url",
    [TEMPLATES_URL, "/api/v1/templates/welcome/", VARIANTS_URL, "/api/v1/templates/welcome/variants/a/", VERSIONS_URL],
)
def test_oncall_can_read_every_registry_url(api_as: Api, oncall: User, version: VariantVersion, url: str) -> None:
    assert api_as(oncall).get(url).status_code == 200


def test_outsider_cannot_read_a_version(api_as: Api, outsider: User, version: VariantVersion) -> None:
    assert_error(api_as(outsider).get(version_url(version)), 403)


@pytest.mark.parametrize("role", WRITE_ROLES)
def test_marketer_and_admin_can_create_template(request: pytest.FixtureRequest, api_as: Api, role: str) -> None:
    response = api_as(user_of(request, role)).post(TEMPLATES_URL, {"slug": "promo", "name": "Promo"}, format="json")
    assert response.status_code == 201, response.content
    assert Template.objects.filter(slug="promo").exists()


def test_oncall_cannot_create_template(api_as: Api, oncall: User) -> None:
    response = api_as(oncall).post(TEMPLATES_URL, {"slug": "promo", "name": "Promo"}, format="json")
    assert_error(response, 403)
    assert not Template.objects.exists()


def test_outsider_cannot_create_template(api_as: Api, outsider: User) -> None:
    response = api_as(outsider).post(TEMPLATES_URL, {"slug": "promo", "name": "Promo"}, format="json")
    assert_error(response, 403)
    assert not Template.objects.exists()


def test_anonymous_cannot_create_template(api_as: Api, db: Any) -> None:
    response = api_as(None).post(TEMPLATES_URL, {"slug": "promo", "name": "Promo"}, format="json")
    assert_error(response, 401)
    assert not Template.objects.exists()


def test_oncall_cannot_create_variant(api_as: Api, oncall: User, template: Template) -> None:
    assert_error(api_as(oncall).post(VARIANTS_URL, {"slug": "b"}, format="json"), 403)
    assert not Variant.objects.exists()


@pytest.mark.parametrize("role", ["oncall", "outsider"])
def test_oncall_and_outsider_cannot_push_version(
    request: pytest.FixtureRequest, api_as: Api, role: str, variant: Variant
) -> None:
    assert_error(api_as(user_of(request, role)).post(VERSIONS_URL, human_version(), format="json"), 403)
    assert not VariantVersion.objects.exists()


def test_anonymous_cannot_push_version(api_as: Api, variant: Variant) -> None:
    assert_error(api_as(None).post(VERSIONS_URL, human_version(), format="json"), 401)
    assert not VariantVersion.objects.exists()


@pytest.mark.parametrize("role", READ_ROLES)
def test_every_role_can_preview(
    request: pytest.FixtureRequest, api_as: Api, role: str, version: VariantVersion
) -> None:
    assert api_as(user_of(request, role)).post(preview_url(version), format="json").status_code == 200


def test_outsider_cannot_preview(api_as: Api, outsider: User, version: VariantVersion) -> None:
    assert_error(api_as(outsider).post(preview_url(version), format="json"), 403)


def test_anonymous_cannot_preview(api_as: Api, version: VariantVersion) -> None:
    assert_error(api_as(None).post(preview_url(version), format="json"), 401)


# --- Templates -------------------------------------------------------------------------------


def test_marketer_creates_template_with_all_fields(api_as: Api, marketer: User) -> None:
    body = {"slug": "promo", "name": "Spring promo", "description": "Seasonal", "spam_threshold": "4.5"}
    response = api_as(marketer).post(TEMPLATES_URL, body, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert {k: data[k] for k in ("slug", "name", "description", "spam_threshold", "variant_count")} == {
        "slug": "promo",
        "name": "Spring promo",
        "description": "Seasonal",
        "spam_threshold": "4.50",
        "variant_count": 0,
    }


def test_template_detail_counts_its_variants(api_as: Api, oncall: User, variant: Variant) -> None:
    response = api_as(oncall).get("/api/v1/templates/welcome/")
    assert response.status_code == 200
    assert response.json()["variant_count"] == 1


def test_unknown_template_is_404(api_as: Api, oncall: User, db: Any) -> None:
    body = assert_error(api_as(oncall).get("/api/v1/templates/nope/"), 404)
    assert "nope" in body["error"]


def test_template_list_is_paginated(api_as: Api, oncall: User, db: Any) -> None:
    for slug in ("a1", "a2", "a3"):
        services.template_create(slug=slug, name=slug)
    data = api_as(oncall).get(TEMPLATES_URL, {"limit": 2, "offset": 1}).json()
    assert data["count"] == 3
    assert [t["slug"] for t in data["results"]] == ["a2", "a3"]


def test_unknown_field_is_refused_and_nothing_saved(api_as: Api, marketer: User) -> None:
    body = {"slug": "promo", "name": "Promo", "spam_treshold": 3}
    response = api_as(marketer).post(TEMPLATES_URL, body, format="json")
    assert assert_error(response, 400, "spam_treshold")["error"] == "spam_treshold: Unknown field."
    assert not Template.objects.exists()


def test_wrong_type_is_refused_and_nothing_saved(api_as: Api, marketer: User) -> None:
    body = {"slug": "promo", "name": "Promo", "spam_threshold": "lots"}
    assert_error(api_as(marketer).post(TEMPLATES_URL, body, format="json"), 400, "spam_threshold")
    assert not Template.objects.exists()


def test_missing_name_is_refused(api_as: Api, marketer: User) -> None:
    assert_error(api_as(marketer).post(TEMPLATES_URL, {"slug": "promo"}, format="json"), 400, "name")
    assert not Template.objects.exists()


def test_name_longer_than_the_column_is_refused(api_as: Api, marketer: User) -> None:
    body = {"slug": "promo", "name": "n" * 201}
    assert_error(api_as(marketer).post(TEMPLATES_URL, body, format="json"), 400, "name")
    assert not Template.objects.exists()


def test_bad_slug_is_refused_with_the_service_message(api_as: Api, marketer: User) -> None:
    response = api_as(marketer).post(TEMPLATES_URL, {"slug": "Spring Promo", "name": "Promo"}, format="json")
    body = assert_error(response, 400, "slug")
    assert body["error"].startswith("slug: must be lowercase letters")
    assert body["fields"]["slug"] == ["must be lowercase letters, digits, - or _ (at most 100)"]
    assert not Template.objects.exists()


def test_spam_threshold_out_of_range_is_refused(api_as: Api, marketer: User) -> None:
    body = {"slug": "promo", "name": "Promo", "spam_threshold": -150}
    assert_error(api_as(marketer).post(TEMPLATES_URL, body, format="json"), 400, "spam_threshold")
    assert not Template.objects.exists()


def test_duplicate_template_slug_is_refused(api_as: Api, marketer: User, template: Template) -> None:
    response = api_as(marketer).post(TEMPLATES_URL, {"slug": "welcome", "name": "Again"}, format="json")
    assert "already exists" in assert_error(response, 400, "slug")["error"]
    assert Template.objects.get().name == "Welcome"


def test_malformed_json_is_400_in_the_error_shape(api_as: Api, marketer: User) -> None:
    response = api_as(marketer).post(TEMPLATES_URL, '{"slug": "promo", "name": ', content_type="application/json")
    body = assert_error(response, 400)
    assert "JSON parse error" in body["error"] and "fields" not in body
    assert not Template.objects.exists()


def test_json_array_body_is_refused(api_as: Api, marketer: User) -> None:
    assert_error(api_as(marketer).post(TEMPLATES_URL, [{"slug": "promo"}], format="json"), 400)
    assert not Template.objects.exists()


def test_form_encoded_body_is_unsupported(api_as: Api, marketer: User) -> None:
    response = api_as(marketer).post(TEMPLATES_URL, {"slug": "promo", "name": "Promo"})
    assert_error(response, 415)
    assert not Template.objects.exists()


# --- Variants ------------------------------------------------------------------------------------


def test_marketer_creates_variant_with_weight(api_as: Api, marketer: User, template: Template) -> None:
    response = api_as(marketer).post(VARIANTS_URL, {"slug": "b", "weight": 3}, format="json")
    assert response.status_code == 201, response.content
    assert {k: response.json()[k] for k in ("template", "slug", "weight", "version_count")} == {
        "template": "welcome",
        "slug": "b",
        "weight": 3,
        "version_count": 0,
    }


def test_variant_weight_defaults_to_one(api_as: Api, marketer: User, template: Template) -> None:
    response = api_as(marketer).post(VARIANTS_URL, {"slug": "b"}, format="json")
    assert response.json()["weight"] == 1


def test_variant_weight_out_of_range_is_refused(api_as: Api, marketer: User, template: Template) -> None:
    response = api_as(marketer).post(VARIANTS_URL, {"slug": "b", "weight": 10_001}, format="json")
    assert_error(response, 400, "weight")
    assert not Variant.objects.exists()


def test_variant_weight_of_wrong_type_is_refused(api_as: Api, marketer: User, template: Template) -> None:
    response = api_as(marketer).post(VARIANTS_URL, {"slug": "b", "weight": "heavy"}, format="json")
    assert_error(response, 400, "weight")
    assert not Variant.objects.exists()


def test_duplicate_variant_slug_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    response = api_as(marketer).post(VARIANTS_URL, {"slug": "a", "weight": 5}, format="json")
    assert_error(response, 400, "slug")
    assert Variant.objects.get().weight == 1


def test_variant_of_unknown_template_is_404(api_as: Api, marketer: User, db: Any) -> None:
    assert_error(api_as(marketer).post("/api/v1/templates/nope/variants/", {"slug": "a"}, format="json"), 404)
    assert not Variant.objects.exists()


def test_variants_list_with_their_version_counts(api_as: Api, oncall: User, version: VariantVersion) -> None:
    data = api_as(oncall).get(VARIANTS_URL).json()
    assert [(v["slug"], v["version_count"]) for v in data["results"]] == [("a", 1)]


def test_variant_detail(api_as: Api, oncall: User, variant: Variant) -> None:
    response = api_as(oncall).get("/api/v1/templates/welcome/variants/a/")
    assert response.status_code == 200
    assert response.json()["template"] == "welcome"


def test_variant_is_not_found_under_another_template(api_as: Api, oncall: User, variant: Variant) -> None:
    services.template_create(slug="other", name="Other")
    assert_error(api_as(oncall).get("/api/v1/templates/other/variants/a/"), 404)


# --- Versions: pushing ---------------------------------------------------------------------------------


def test_marketer_pushes_human_version(api_as: Api, marketer: User, variant: Variant) -> None:
    response = api_as(marketer).post(VERSIONS_URL, human_version(), format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    saved = VariantVersion.objects.get()
    assert data["id"] == saved.pk
    assert (data["number"], data["status"], data["origin"]) == (1, "draft", "human")
    assert data["created_by"] == marketer.username
    assert data["content_hash"] == services.content_hash(saved.content())
    assert data["mjml_body"] == SIMPLE_MJML
    assert data["variables"] == SIMPLE_VARIABLES


def test_ai_generator_pushes_version_with_provenance(api_as: Api, marketer: User, variant: Variant) -> None:
    response = api_as(marketer).post(VERSIONS_URL, ai_version(), format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert {k: data[k] for k in ("origin", "generator", "model_name", "prompt", "generation_params")} == {
        "origin": "ai",
        "generator": "copywriter-bot/2.3",
        "model_name": "gpt-4o-2024-08-06",
        "prompt": PROMPT,
        "generation_params": {"temperature": 0.7, "seed": 42},
    }
    assert VariantVersion.objects.get().origin == "ai"


def test_prompt_hash_is_computed_from_the_prompt(api_as: Api, admin_role: User, variant: Variant) -> None:
    response = api_as(admin_role).post(VERSIONS_URL, ai_version(), format="json")
    assert response.json()["prompt_hash"] == PROMPT_SHA256
    assert VariantVersion.objects.get().prompt_hash == PROMPT_SHA256


def test_prompt_is_stored_exactly_as_sent(api_as: Api, marketer: User, variant: Variant) -> None:
    prompt = "  Two picks, please.\n"
    response = api_as(marketer).post(VERSIONS_URL, ai_version(prompt=prompt), format="json")
    assert response.json()["prompt_hash"] == hashlib.sha256(prompt.encode()).hexdigest()
    assert VariantVersion.objects.get().prompt == prompt


def test_ai_version_with_only_a_prompt_hash_is_accepted(api_as: Api, marketer: User, variant: Variant) -> None:
    body = ai_version(prompt_hash=PROMPT_SHA256)
    del body["prompt"]
    response = api_as(marketer).post(VERSIONS_URL, body, format="json")
    assert response.status_code == 201, response.content
    assert (response.json()["prompt"], response.json()["prompt_hash"]) == ("", PROMPT_SHA256)


def test_mismatched_prompt_hash_is_refused_and_nothing_saved(api_as: Api, marketer: User, variant: Variant) -> None:
    body = ai_version(prompt_hash=hashlib.sha256(b"another prompt").hexdigest())
    response = api_as(marketer).post(VERSIONS_URL, body, format="json")
    assert assert_error(response, 400, "prompt_hash")["error"] == "prompt_hash: does not match the SHA-256 of prompt"
    assert not VariantVersion.objects.exists()


def test_prompt_hash_that_is_not_hex_sha256_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    response = api_as(marketer).post(VERSIONS_URL, ai_version(prompt_hash=PROMPT_SHA256.upper()), format="json")
    assert_error(response, 400, "prompt_hash")
    assert not VariantVersion.objects.exists()


def test_ai_version_without_generator_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    response = api_as(marketer).post(VERSIONS_URL, ai_version(generator=""), format="json")
    assert_error(response, 400, "generator")
    assert not VariantVersion.objects.exists()


def test_ai_version_without_prompt_or_hash_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    body = ai_version()
    del body["prompt"]
    assert_error(api_as(marketer).post(VERSIONS_URL, body, format="json"), 400, "prompt")
    assert not VariantVersion.objects.exists()


def test_unknown_origin_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    assert_error(api_as(marketer).post(VERSIONS_URL, ai_version(origin="robot"), format="json"), 400, "origin")
    assert not VariantVersion.objects.exists()


def test_generation_params_must_be_an_object(api_as: Api, marketer: User, variant: Variant) -> None:
    response = api_as(marketer).post(VERSIONS_URL, ai_version(generation_params=[0.7]), format="json")
    assert_error(response, 400, "generation_params")
    assert not VariantVersion.objects.exists()


def test_versions_are_numbered_in_order(api_as: Api, marketer: User, version: VariantVersion) -> None:
    response = api_as(marketer).post(VERSIONS_URL, human_version(subject="Hello {{ first_name }}"), format="json")
    assert response.json()["number"] == 2


def test_version_records_its_parent(api_as: Api, marketer: User, version: VariantVersion) -> None:
    response = api_as(marketer).post(VERSIONS_URL, ai_version(parent=version.pk), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["parent"] == version.pk
    assert VariantVersion.objects.get(number=2).parent_id == version.pk


def test_parent_from_another_template_is_refused(api_as: Api, marketer: User, version: VariantVersion) -> None:
    other = services.variant_create(template=services.template_create(slug="other", name="Other"), slug="a")
    url = "/api/v1/templates/other/variants/a/versions/"
    assert_error(api_as(marketer).post(url, human_version(parent=version.pk), format="json"), 400, "parent")
    assert not other.versions.exists()


def test_unknown_parent_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    assert_error(api_as(marketer).post(VERSIONS_URL, human_version(parent=999_999), format="json"), 400, "parent")
    assert not VariantVersion.objects.exists()


def test_version_of_unknown_variant_is_404(api_as: Api, marketer: User, template: Template) -> None:
    url = "/api/v1/templates/welcome/variants/nope/versions/"
    assert_error(api_as(marketer).post(url, human_version(), format="json"), 404)
    assert not VariantVersion.objects.exists()


def test_unknown_field_in_version_is_refused_and_nothing_saved(api_as: Api, marketer: User, variant: Variant) -> None:
    response = api_as(marketer).post(VERSIONS_URL, ai_version(temperature=0.7), format="json")
    assert_error(response, 400, "temperature")
    assert not VariantVersion.objects.exists()


def test_variables_must_be_an_object(api_as: Api, marketer: User, variant: Variant) -> None:
    response = api_as(marketer).post(VERSIONS_URL, human_version(variables=["first_name"]), format="json")
    assert_error(response, 400, "variables")
    assert not VariantVersion.objects.exists()


def test_reserved_variable_name_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    variables = {**SIMPLE_VARIABLES, "sp_preheader": "x"}
    response = api_as(marketer).post(VERSIONS_URL, human_version(variables=variables), format="json")
    assert_error(response, 400, "variables")
    assert not VariantVersion.objects.exists()


def test_subject_of_wrong_type_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    assert_error(api_as(marketer).post(VERSIONS_URL, human_version(subject=["Hi"]), format="json"), 400, "subject")
    assert not VariantVersion.objects.exists()


def test_subject_longer_than_a_header_line_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    assert_error(api_as(marketer).post(VERSIONS_URL, human_version(subject="s" * 999), format="json"), 400, "subject")
    assert not VariantVersion.objects.exists()


def test_nul_character_in_a_source_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    response = api_as(marketer).post(VERSIONS_URL, human_version(sender_name="Atelier\x00"), format="json")
    assert_error(response, 400, "sender_name")
    assert not VariantVersion.objects.exists()


def test_nul_character_in_sample_values_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    variables = {**SIMPLE_VARIABLES, "first_name": "Ana\x00"}
    response = api_as(marketer).post(VERSIONS_URL, human_version(variables=variables), format="json")
    assert_error(response, 400, "variables")
    assert not VariantVersion.objects.exists()


def test_lone_surrogate_in_sample_values_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    raw = json.dumps(human_version(variables={**SIMPLE_VARIABLES, "first_name": "\udc00"}))
    response = api_as(marketer).post(VERSIONS_URL, raw, content_type="application/json")
    assert_error(response, 400, "variables")
    assert not VariantVersion.objects.exists()


def test_non_finite_number_in_generation_params_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    raw = json.dumps(ai_version(generation_params={"temperature": 1}))
    raw = raw.replace('"temperature": 1', '"temperature": 1e400')
    response = api_as(marketer).post(VERSIONS_URL, raw, content_type="application/json")
    assert_error(response, 400, "generation_params")
    assert not VariantVersion.objects.exists()


def test_deeply_nested_sample_value_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    deep: Any = "leaf"
    for _ in range(40):
        deep = [deep]
    variables = {**SIMPLE_VARIABLES, "deep": deep}
    response = api_as(marketer).post(VERSIONS_URL, human_version(variables=variables), format="json")
    assert "nests deeper" in assert_error(response, 400, "variables")["error"]
    assert not VariantVersion.objects.exists()


def test_json_nested_beyond_the_decoder_is_400(api_as: Api, marketer: User, variant: Variant) -> None:
    raw = json.dumps(human_version(variables={"deep": "HERE"})).replace('"HERE"', "[" * 100_000 + "]" * 100_000)
    response = api_as(marketer).post(VERSIONS_URL, raw, content_type="application/json")
    assert "nested too deeply" in assert_error(response, 400)["error"]
    assert not VariantVersion.objects.exists()


def test_sandbox_escape_in_version_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    subject = "{{ first_name.__class__.__mro__[1].__subclasses__() }}"
    response = api_as(marketer).post(VERSIONS_URL, human_version(subject=subject), format="json")
    assert_error(response, 400, "subject")
    assert not VariantVersion.objects.exists()


def test_str_format_in_version_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    subject = "{{ '{0.__class__}'.format(first_name) }}"
    response = api_as(marketer).post(VERSIONS_URL, human_version(subject=subject), format="json")
    assert_error(response, 400, "subject")
    assert not VariantVersion.objects.exists()


def test_refused_statement_in_version_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    mjml = SIMPLE_MJML.replace("<mj-body>", "<mj-body>\n{% include 'secrets.txt' %}")
    response = api_as(marketer).post(VERSIONS_URL, human_version(mjml_body=mjml), format="json")
    assert_error(response, 400, "mjml_body")
    assert not VariantVersion.objects.exists()


def test_undeclared_variable_names_the_line(api_as: Api, marketer: User, variant: Variant) -> None:
    mjml = SIMPLE_MJML.replace("see the offer</a>", "see the offer</a>\n {{ last_name }}")
    response = api_as(marketer).post(VERSIONS_URL, human_version(mjml_body=mjml), format="json")
    body = assert_error(response, 400, "mjml_body")
    assert body["error"] == "mjml_body: undeclared variable 'last_name' (line 5)"
    assert body["fields"] == {"mjml_body": ["undeclared variable 'last_name' (line 5)"]}
    assert not VariantVersion.objects.exists()


def test_jinja_syntax_error_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    mjml = SIMPLE_MJML.replace("{% endfor %}", "")
    response = api_as(marketer).post(VERSIONS_URL, human_version(mjml_body=mjml), format="json")
    assert "Jinja syntax error" in assert_error(response, 400, "mjml_body")["error"]
    assert not VariantVersion.objects.exists()


def test_malformed_mjml_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    mjml = SIMPLE_MJML.replace("</mj-text>", "", 1)
    response = api_as(marketer).post(VERSIONS_URL, human_version(mjml_body=mjml), format="json")
    assert "MJML" in assert_error(response, 400, "mjml_body")["error"]
    assert not VariantVersion.objects.exists()


def test_header_injection_in_sample_values_is_refused(api_as: Api, marketer: User, variant: Variant) -> None:
    variables = {**SIMPLE_VARIABLES, "first_name": "Ana\r\nBcc: everyone@example.com"}
    response = api_as(marketer).post(VERSIONS_URL, human_version(variables=variables), format="json")
    assert "header injection" in assert_error(response, 400, "subject")["error"]
    assert not VariantVersion.objects.exists()


def test_oversized_mjml_body_is_refused_and_nothing_saved(api_as: Api, marketer: User, variant: Variant) -> None:
    limit = settings.SENDPLANE_RENDER["MAX_SOURCE_BYTES"]
    padding = "<mj-section><mj-column><mj-text>x</mj-text></mj-column></mj-section>\n"
    mjml = SIMPLE_MJML.replace("</mj-body>", padding * (limit // len(padding) + 1) + "</mj-body>")
    assert len(mjml.encode()) > limit
    response = api_as(marketer).post(VERSIONS_URL, human_version(mjml_body=mjml), format="json")
    assert "larger than" in assert_error(response, 400, "mjml_body")["error"]
    assert not VariantVersion.objects.exists()


def test_bad_version_leaves_existing_versions_untouched(api_as: Api, marketer: User, version: VariantVersion) -> None:
    api_as(marketer).post(VERSIONS_URL, human_version(subject="{{ nope }}"), format="json")
    assert list(VariantVersion.objects.values_list("number", flat=True)) == [1]


# --- Versions: reading ----------------------------------------------------------------------------------


def test_versions_list_newest_first_without_sources(api_as: Api, oncall: User, version: VariantVersion) -> None:
    services.version_derive(source=version, subject="Hello {{ first_name }}")
    data = api_as(oncall).get(VERSIONS_URL).json()
    assert [v["number"] for v in data["results"]] == [2, 1]
    assert "mjml_body" not in data["results"][0]
    assert data["results"][0]["parent"] == version.pk


@pytest.mark.parametrize("role", READ_ROLES)
def test_every_role_can_fetch_a_version(
    request: pytest.FixtureRequest, api_as: Api, role: str, version: VariantVersion
) -> None:
    response = api_as(user_of(request, role)).get(version_url(version))
    assert response.status_code == 200
    data = response.json()
    assert (data["template"], data["variant"], data["number"]) == ("welcome", "a", 1)
    assert (data["subject"], data["sender_name"], data["content_hash"]) == (
        "Hi {{ first_name }}",
        "Atelier",
        version.content_hash,
    )
    assert data["created_by"] is None


def test_unknown_version_is_404(api_as: Api, oncall: User, db: Any) -> None:
    assert_error(api_as(oncall).get("/api/v1/versions/999999/"), 404)


# --- Preview ---------------------------------------------------------------------------------------------


def test_preview_renders_with_sample_values_by_default(api_as: Api, marketer: User, version: VariantVersion) -> None:
    data = api_as(marketer).post(preview_url(version), format="json").json()
    assert (data["subject"], data["sender_name"], data["preheader"]) == ("Hi Ana", "Atelier", "Two picks for Ana")
    assert "Hello Ana" in data["html"] and "1. Hat" in data["text"]


def test_preview_renders_with_given_context(api_as: Api, oncall: User, version: VariantVersion) -> None:
    context = {"first_name": "Bea", "offer_url": "https://example.com/b", "items": ["Boots"]}
    response = api_as(oncall).post(preview_url(version), {"context": context}, format="json")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["subject"] == "Hi Bea"
    assert "https://example.com/b" in data["html"] and "1. Boots" in data["text"] and "Scarf" not in data["text"]


def test_preview_escapes_html_from_the_context(api_as: Api, marketer: User, version: VariantVersion) -> None:
    context = {**SIMPLE_VARIABLES, "first_name": "<script>alert(1)</script>"}
    html = api_as(marketer).post(preview_url(version), {"context": context}, format="json").json()["html"]
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html


def test_preview_header_injection_is_400(api_as: Api, marketer: User, version: VariantVersion) -> None:
    context = {**SIMPLE_VARIABLES, "first_name": "Ana\nBcc: everyone@example.com"}
    response = api_as(marketer).post(preview_url(version), {"context": context}, format="json")
    body = assert_error(response, 400, "subject")
    assert body["error"] == "subject: contains a line break or NUL after rendering (header injection)"


def test_preview_with_missing_variable_is_400(api_as: Api, marketer: User, version: VariantVersion) -> None:
    context = {"offer_url": "https://example.com", "items": []}
    body = assert_error(api_as(marketer).post(preview_url(version), {"context": context}, format="json"), 400)
    assert "first_name" in body["error"]


def test_preview_over_the_iteration_limit_is_400(api_as: Api, marketer: User, version: VariantVersion) -> None:
    items = ["x"] * (settings.SENDPLANE_RENDER["MAX_ITERATIONS"] + 1)
    context = {**SIMPLE_VARIABLES, "items": items}
    body = assert_error(api_as(marketer).post(preview_url(version), {"context": context}, format="json"), 400)
    assert "loop iterations" in body["error"]


def test_preview_context_with_lone_surrogate_is_400(api_as: Api, marketer: User, version: VariantVersion) -> None:
    raw = json.dumps({"context": {**SIMPLE_VARIABLES, "first_name": "\udc00"}})
    response = api_as(marketer).post(preview_url(version), raw, content_type="application/json")
    assert_error(response, 400, "context")


def test_preview_context_must_be_an_object(api_as: Api, marketer: User, version: VariantVersion) -> None:
    response = api_as(marketer).post(preview_url(version), {"context": ["Ana"]}, format="json")
    assert_error(response, 400, "context")


def test_preview_unknown_field_is_refused(api_as: Api, marketer: User, version: VariantVersion) -> None:
    response = api_as(marketer).post(preview_url(version), {"contxt": {}}, format="json")
    assert_error(response, 400, "contxt")


def test_preview_of_unknown_version_is_404(api_as: Api, marketer: User, db: Any) -> None:
    assert_error(api_as(marketer).post("/api/v1/versions/999999/preview", format="json"), 404)
