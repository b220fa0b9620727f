"""Registry writes: validation before any write, numbering, immutability, provenance."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest
from django.db import connection

from templates_registry import services
from templates_registry.models import ImmutableVersionError, Origin, Variant, VariantVersion, VersionStatus
from templates_registry.rendering import RenderError
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES

pytestmark = pytest.mark.django_db


def make(variant: Variant, **overrides: Any) -> VariantVersion:
    fields: dict[str, Any] = {"mjml_body": SIMPLE_MJML, "subject": "Hi {{ first_name }}", "variables": SIMPLE_VARIABLES}
    return services.version_create(variant=variant, **{**fields, **overrides})


def test_versions_are_numbered_per_variant(variant: Variant) -> None:
    first, second = make(variant), make(variant, subject="Hello {{ first_name }}")
    assert (first.number, second.number) == (1, 2)
    assert first.status == VersionStatus.DRAFT


def test_content_hash_depends_on_content_and_sample_values(variant: Variant) -> None:
    a, b = make(variant), make(variant)
    c = make(variant, variables={**SIMPLE_VARIABLES, "first_name": "Bo"})
    assert a.content_hash == b.content_hash != c.content_hash
    assert len(a.content_hash) == 64


def test_a_version_cannot_be_edited_in_place(version: VariantVersion) -> None:
    version.subject = "Changed"
    with pytest.raises(ImmutableVersionError):
        version.save()
    with pytest.raises(ImmutableVersionError):
        version.save(update_fields=["subject"])
    version.refresh_from_db()
    assert version.subject == "Hi {{ first_name }}"


def test_status_may_change(version: VariantVersion) -> None:
    version.status = VersionStatus.RETIRED
    version.save(update_fields=["status"])
    version.refresh_from_db()
    assert version.status == VersionStatus.RETIRED


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"mjml_body": "<mjml><mj-body>{% if %}</mj-body></mjml>"}, "mjml_body", "Jinja syntax error"),
        ({"mjml_body": "<mjml><mj-body><mj-section></mj-body></mjml>"}, "mjml_body", "MJML error"),
        ({"subject": "Hi {{ nickname }}"}, "subject", "undeclared variable 'nickname'"),
        ({"mjml_body": SIMPLE_MJML.replace("{{ first_name }}", "{{ ''.__class__.__mro__ }}")}, "mjml_body", "sandbox violation"),
        (
            {"subject": "{{ first_name }}", "variables": {**SIMPLE_VARIABLES, "first_name": "A\r\nBcc: x@y.z"}},
            "subject",
            "header injection",
        ),
        ({"subject": "  "}, "subject", "subject is empty"),
        ({"variables": {**SIMPLE_VARIABLES, "sp_preheader": 1}}, "variables", "reserved"),
    ],
    ids=["jinja", "mjml", "undeclared", "sandbox", "header-injection", "empty-subject", "reserved-variable"],
)
def test_bad_content_names_the_problem_and_saves_nothing(variant: Variant, overrides: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(RenderError) as refused:
        make(variant, **overrides)
    assert refused.value.field == field
    assert message in str(refused.value)
    assert VariantVersion.objects.count() == 0


def test_undeclared_variable_reports_its_line(variant: Variant) -> None:
    body = SIMPLE_MJML.replace("{{ loop.index }}", "{{ loop.index }} {{ coupon }}")
    with pytest.raises(RenderError) as refused:
        make(variant, mjml_body=body)
    lines = SIMPLE_MJML.splitlines()
    assert refused.value.line == lines.index(next(line for line in lines if "loop.index" in line)) + 1


def test_ai_version_keeps_its_provenance(variant: Variant, version: VariantVersion) -> None:
    prompt = "Write a winter sale email for returning customers"
    ai = make(
        variant, origin=Origin.AI, generator="copybot", model_name="gpt-x-2026", prompt=prompt,
        generation_params={"temperature": 0.7}, parent=version,
    )
    assert ai.prompt_hash == hashlib.sha256(prompt.encode()).hexdigest()
    assert (ai.generator, ai.model_name, ai.parent_id, ai.generation_params) == ("copybot", "gpt-x-2026", version.pk, {"temperature": 0.7})


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"origin": Origin.AI, "model_name": "m", "prompt": "p"}, "generator"),
        ({"origin": Origin.AI, "generator": "g", "prompt": "p"}, "model_name"),
        ({"origin": Origin.AI, "generator": "g", "model_name": "m"}, "prompt"),
        ({"origin": Origin.AI, "generator": "g", "model_name": "m", "prompt": "p", "prompt_hash": "0" * 64}, "prompt_hash"),
        ({"origin": "robot"}, "origin"),
    ],
)
def test_incomplete_provenance_is_refused(variant: Variant, overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(services.RegistryError) as refused:
        make(variant, **overrides)
    assert refused.value.field == field
    assert VariantVersion.objects.count() == 0


def test_parent_must_belong_to_the_same_template(variant: Variant) -> None:
    other = services.variant_create(template=services.template_create(slug="other", name="Other"), slug="a")
    foreign = make(other)
    with pytest.raises(services.RegistryError, match="parent"):
        make(variant, parent=foreign)


def test_derive_makes_the_next_version_with_its_parent(version: VariantVersion) -> None:
    derived = services.version_derive(source=version, subject="Hey {{ first_name }}")
    assert (derived.number, derived.parent_id, derived.subject, derived.mjml_body) == (
        2, version.pk, "Hey {{ first_name }}", version.mjml_body
    )


def test_duplicate_slugs_are_clear_errors(template: Any, variant: Variant) -> None:
    with pytest.raises(services.RegistryError, match="already exists"):
        services.template_create(slug="welcome", name="Again")
    with pytest.raises(services.RegistryError, match="already has a variant 'a'"):
        services.variant_create(template=template, slug="a")


@pytest.mark.parametrize("slug", ["", "Has Space", "UPPER", "x" * 101, "../etc"])
def test_bad_slug_is_refused(slug: str) -> None:
    with pytest.raises(services.RegistryError, match="slug"):
        services.template_create(slug=slug, name="N")


@pytest.mark.django_db(transaction=True)
def test_concurrent_pushes_get_distinct_numbers(variant: Variant) -> None:
    errors: list[BaseException] = []

    def push() -> None:
        try:
            make(variant)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=push) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(VariantVersion.objects.filter(variant=variant).values_list("number", flat=True)) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("field", "value"),
    [("variables", {"first_name": "A\x00", "offer_url": "u", "items": []}), ("generation_params", {"t": float("inf")})],
)
def test_values_postgres_cannot_store_are_refused(variant: Variant, field: str, value: dict[str, Any]) -> None:
    overrides: dict[str, Any] = {field: value}
    if field == "variables":
        overrides["subject"] = "Hi"
        overrides["mjml_body"] = "<mjml><mj-body></mj-body></mjml>"
    with pytest.raises(services.RegistryError) as refused:
        make(variant, **overrides)
    assert refused.value.field == field
    assert VariantVersion.objects.count() == 0
