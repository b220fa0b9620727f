"""Reads from the template registry."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from django.db.models import Count, QuerySet

from templates_registry.models import Template, Variant, VariantVersion, VersionStatus
from templates_registry.preview import Preview, PreviewError, RecipientContext, preview_of, recipient_lookup
from templates_registry.rendering import RenderedMessage, compile_version

_DIFF_FIELDS = ("subject", "sender_name", "preheader", "mjml_body", "text_body")


def template_list() -> QuerySet[Template]:
    return Template.objects.annotate(variant_count=Count("variants")).order_by("slug")


def variant_list(*, template: Template) -> QuerySet[Variant]:
    return Variant.objects.filter(template=template).annotate(version_count=Count("versions"))


def version_list(*, variant: Variant) -> QuerySet[VariantVersion]:
    return VariantVersion.objects.filter(variant=variant).order_by("-number")


def version_latest_approved(*, variant: Variant) -> VariantVersion | None:
    """The variant's live version, the one a new trigger sends: its newest approved one (None: out of rotation).

    The one rule for "live": dispatch's trigger reads it here, and services.version_retire and
    version_rollback keep it true by retiring (a rollback retires every approved version newer than its target).
    """
    return (
        VariantVersion.objects.filter(variant=variant, status=VersionStatus.APPROVED).order_by("-number").first()
    )


def version_render(*, version: VariantVersion, context: Mapping[str, Any] | None = None) -> RenderedMessage:
    """Render through the same compile-once path dispatch uses; sample values by default.

    Raises RenderError (one line) when the context does not fit the template.
    """
    return compile_version(version.content()).render(version.variables if context is None else context)


def version_preview(*, version: VariantVersion, context: Mapping[str, Any] | None = None) -> Preview:
    """``version_render`` as the admin's preview shows it: where Gmail clips it, light and dark copies (preview.py)."""
    return preview_of(version_render(version=version, context=context))


def version_recipient_context(*, version: VariantVersion, reference: str) -> RecipientContext:
    """The context a real message of ``version`` was sent with, named by its uuid or its recipient's address.

    Personal data: callers check the reader may see it (the admin asks for ``campaigns.write``). Dispatch answers
    through the lookup it registered (preview.recipient_lookup_register); an erased message comes back with ``{}``.
    Raises PreviewError (one line) when there is no such message of this version.
    """
    reference = reference.strip()
    lookup = recipient_lookup()
    if not reference:
        raise PreviewError("enter a message's UUID or its recipient's address", field="recipient")
    if lookup is None:
        raise PreviewError("no message store is installed to look recipients up in", field="recipient")
    found = lookup(version=version, reference=reference)
    if found is None:
        raise PreviewError(f"no message of {version} has that UUID or recipient address", field="recipient")
    if found.version_id != version.pk:
        other = VariantVersion.objects.filter(pk=found.version_id).select_related("variant__template").first()
        raise PreviewError(f"message {found.message} was sent with {other or 'another version'}, not {version}", field="recipient")
    return found


def version_diff(*, old: VariantVersion, new: VariantVersion) -> list[tuple[str, list[str]]]:
    """Unified diffs, field by field, of two versions' sources (only fields that differ)."""
    diffs = []
    for name in (*_DIFF_FIELDS, "variables"):
        before, after = _as_lines(getattr(old, name)), _as_lines(getattr(new, name))
        if before != after:
            lines = difflib.unified_diff(before, after, f"v{old.number}", f"v{new.number}", lineterm="")
            diffs.append((name, list(lines)))
    return diffs


def _as_lines(value: Any) -> list[str]:
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    return str(value).splitlines()
