"""Load the example templates in ops/examples (used by the demo and by tests)."""

from __future__ import annotations

import json
from pathlib import Path

from templates_registry import services
from templates_registry.models import Template, Variant, VariantVersion

EXAMPLES = Path(__file__).resolve().parent.parent / "ops" / "examples"


def examples_load(*, directory: Path = EXAMPLES) -> list[VariantVersion]:
    """Create each example template, variant and first version once; returns their versions."""
    manifest = json.loads((directory / "examples.json").read_text(encoding="utf-8"))
    versions = []
    for spec in manifest["templates"]:
        template = Template.objects.filter(slug=spec["slug"]).first() or services.template_create(slug=spec["slug"], name=spec["name"])
        for variant_spec in spec["variants"]:
            versions.append(_variant_version(template, variant_spec, manifest["variables"], directory))
    return versions


def example_variables(*, directory: Path = EXAMPLES) -> dict:
    """The sample values the examples declare: a ready recipient context."""
    return json.loads((directory / "examples.json").read_text(encoding="utf-8"))["variables"]


def _variant_version(template: Template, spec: dict, variables: dict, directory: Path) -> VariantVersion:
    variant = Variant.objects.filter(template=template, slug=spec["slug"]).first()
    if variant is None:
        variant = services.variant_create(template=template, slug=spec["slug"], weight=spec["weight"])
    existing = variant.versions.order_by("-number").first()
    if existing is not None:
        return existing
    provenance = {k: spec[k] for k in ("origin", "generator", "model_name", "prompt", "generation_params") if k in spec}
    return services.version_create(
        variant=variant,
        mjml_body=(directory / spec["mjml_file"]).read_text(encoding="utf-8"),
        subject=spec["subject"],
        sender_name=spec.get("sender_name", ""),
        preheader=spec.get("preheader", ""),
        variables=variables,
        **provenance,
    )
