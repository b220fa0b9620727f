"""Writes to the template registry. Views, admin, tasks and commands call these."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from audit.services import audit_record
from controlplane.errors import ServiceError
from controlplane.json_values import json_problem
from templates_registry.models import (
    AssessmentState,
    Origin,
    Template,
    Variant,
    VariantVersion,
    VersionAssessment,
    VersionStatus,
)
from templates_registry.rendering import RenderError, VersionContent, validate_content
from templates_registry.selectors import version_latest_approved  # the one rule for "live", which dispatch reads too

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class RegistryError(ServiceError):
    """Bad input to the registry: one line naming the problem and, where known, the field."""


def content_hash(content: VersionContent) -> str:
    """Identity of what a recipient would receive: all sources and the sample values."""
    payload = {**content.sources(), "variables": content.variables}
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def template_create(
    *,
    slug: str,
    name: str,
    description: str = "",
    spam_threshold: Any = None,
    four_eyes: bool = True,
    created_by: Any = None,
) -> Template:
    _check_slug(slug, "slug")
    if not name.strip():
        raise RegistryError("must not be empty", field="name")
    _check_bool(four_eyes, "four_eyes")
    template = Template(slug=slug, name=name.strip(), description=description, four_eyes=four_eyes)
    if spam_threshold is not None:
        template.spam_threshold = _threshold(spam_threshold)
    try:
        with transaction.atomic():
            template.save()
            data = {"slug": template.slug, "spam_threshold": float(template.spam_threshold), "four_eyes": template.four_eyes}
            audit_record(action="template.create", target=template, actor=created_by, data=data)
    except IntegrityError:
        raise RegistryError(f"a template {slug!r} already exists", field="slug") from None
    return template


def template_set_four_eyes(*, template: Template, four_eyes: bool, actor: Any = None) -> Template:
    """Turn four-eyes approval on or off for ``template``; setting what it has changes nothing and writes no entry."""
    _check_bool(four_eyes, "four_eyes")
    with transaction.atomic():
        locked = Template.objects.select_for_update().get(pk=template.pk)
        if locked.four_eyes != four_eyes:
            audit_record(action="template.four_eyes", target=locked, actor=actor, data={"before": locked.four_eyes, "after": four_eyes})
            locked.four_eyes = four_eyes
            locked.save(update_fields=["four_eyes", "updated_at"])
    template.four_eyes = four_eyes
    return template


def _check_bool(value: Any, field: str) -> None:
    if not isinstance(value, bool):
        raise RegistryError("must be true or false", field=field)


def variant_create(*, template: Template, slug: str, weight: int = 1, created_by: Any = None) -> Variant:
    _check_slug(slug, "slug")
    _check_weight(weight)
    try:
        with transaction.atomic():
            variant = Variant.objects.create(template=template, slug=slug, weight=weight)
            audit_record(action="variant.create", target=variant, actor=created_by, data={"template": template.pk, "weight": weight})
            return variant
    except IntegrityError:
        raise RegistryError(f"template {template.slug!r} already has a variant {slug!r}", field="slug") from None


def variant_set_weight(*, variant: Variant, weight: int, actor: Any = None) -> Variant:
    """Change how often the A/B rotation picks ``variant``; setting the weight it has changes nothing."""
    _check_weight(weight)
    with transaction.atomic():
        locked = Variant.objects.select_for_update().select_related("template").get(pk=variant.pk)
        if locked.weight != weight:
            audit_record(action="variant.set_weight", target=locked, actor=actor, data={"before": locked.weight, "after": weight})
            locked.weight = weight
            locked.save(update_fields=["weight"])
    variant.weight = weight
    return variant


def _check_weight(weight: Any) -> None:
    if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 10_000:
        raise RegistryError("must be a whole number from 0 to 10000", field="weight")


def version_create(
    *,
    variant: Variant,
    mjml_body: str,
    subject: str,
    sender_name: str = "",
    preheader: str = "",
    text_body: str = "",
    variables: dict[str, Any] | None = None,
    origin: str = Origin.HUMAN,
    generator: str = "",
    model_name: str = "",
    prompt: str = "",
    prompt_hash: str = "",
    generation_params: dict[str, Any] | None = None,
    parent: VariantVersion | None = None,
    created_by: Any = None,
) -> VariantVersion:
    """Validate, render with the sample values, then write a new numbered version.

    Nothing is written unless the whole version renders in the sandbox: MJML and
    Jinja syntax, declared variables, sandbox limits and header injection.
    """
    content = VersionContent(
        mjml_body=mjml_body,
        subject=subject,
        sender_name=sender_name,
        preheader=preheader,
        text_body=text_body,
        variables=variables if variables is not None else {},
    )
    _check_json("variables", content.variables)
    provenance = _provenance(origin, generator, model_name, prompt, prompt_hash, generation_params or {})
    _check_json("generation_params", provenance["generation_params"])
    if parent is not None and parent.variant.template_id != variant.template_id:
        raise RegistryError("must be a version of the same template", field="parent")
    validate_content(content)
    version = _insert_version(variant, content, provenance, parent, created_by)
    _publish_assessment(version)
    return version


def version_derive(*, source: VariantVersion, created_by: Any = None, **changes: Any) -> VariantVersion:
    """A new version of the same variant, starting from ``source`` (its parent)."""
    fields = {
        name: getattr(source, name)
        for name in ("mjml_body", "subject", "sender_name", "preheader", "text_body", "variables")
    }
    unknown = set(changes) - set(fields) - {"origin", "generator", "model_name", "prompt", "prompt_hash", "generation_params"}
    if unknown:
        raise RegistryError(f"unknown field {sorted(unknown)[0]!r}")
    return version_create(variant=source.variant, parent=source, created_by=created_by, **{**fields, **changes})


ASSESS_TASK = "deliverability.tasks.assess_version"
RETRY_BASE_SECONDS = 30
RETRY_MAX_SECONDS = 30 * 60


def version_approvable(*, version: VariantVersion, approver: Any = None) -> str | None:
    """Why ``version`` cannot be approved (by ``approver``, when given), or None when it can.

    The gate: it renders with its sample values, passed every blocking pre-send
    check, and was scored by spamd under its template's threshold. Not scored
    (spamd down) is never a pass. Four-eyes: on a template with ``four_eyes``,
    the version's creator (a person, or the user of the AI generator's token
    that pushed it) cannot approve it; a version with no recorded creator, or
    an approval with no user, is not held by that rule.
    """
    problem = _status_problem(version)
    if problem:
        return problem
    if _own_version(version, approver) and version.variant.template.four_eyes:
        return f"{approver.get_username()} created it; four-eyes approval needs another person"
    return _content_problem(version)


def _status_problem(version: VariantVersion) -> str | None:
    if version.status == VersionStatus.RETIRED:
        return "a retired version cannot be approved again; roll the variant back to it instead"
    if version.status == VersionStatus.REJECTED:
        return "a rejected version cannot be approved"
    return None


def _own_version(version: VariantVersion, approver: Any) -> bool:
    return bool(
        version.created_by_id is not None
        and getattr(approver, "is_authenticated", False)
        and approver.pk == version.created_by_id
    )


def _content_problem(version: VariantVersion) -> str | None:
    """The gate's reading of the content itself: render, pre-send checks, spam score under the threshold."""
    try:
        validate_content(version.content())
    except RenderError as exc:
        return f"it does not render: {exc}"
    assessment = VersionAssessment.objects.filter(version=version).first()
    if assessment is None or assessment.state == AssessmentState.PENDING:
        return "it has not been scored yet"
    if assessment.state == AssessmentState.NOT_SCORED:
        return f"it is not scored: {assessment.not_scored_reason}"
    failed = assessment.blocking_failures
    if failed:
        return f"pre-send check {failed[0]['name']} failed: {failed[0]['message']}"
    threshold = float(version.variant.template.spam_threshold)
    if assessment.score is None or assessment.score >= threshold:
        return f"its spam score {assessment.score} is not under the template's threshold {threshold:g}"
    return None


def version_approve(*, version: VariantVersion, approved_by: Any) -> VariantVersion:
    """Approve a version for sending, recording who and when; refused with the gate's reason."""
    reason = version_approvable(version=version, approver=approved_by)
    if reason:
        raise RegistryError(f"cannot approve {version}: {reason}", field="status")
    with transaction.atomic():
        # The variant first, as version_retire and version_rollback lock it: which version is live changes under it.
        Variant.objects.select_for_update().get(pk=version.variant_id)
        locked = VariantVersion.objects.select_for_update().select_related("variant__template").get(pk=version.pk)
        reason = _status_problem(locked)  # retired or rejected since the gate read it
        if reason:
            raise RegistryError(f"cannot approve {locked}: {reason}", field="status")
        if locked.status != VersionStatus.APPROVED:
            was = locked.status
            locked.status = VersionStatus.APPROVED
            locked.status_changed_at = locked.approved_at = timezone.now()
            locked.approved_by = approved_by if getattr(approved_by, "is_authenticated", False) else None
            locked.save(update_fields=["status", "status_changed_at", "approved_by", "approved_at"])
            audit_record(action="version.approve", target=locked, actor=approved_by, data=_approval_data(locked, was))
    return locked


# --- Retire and roll back -----------------------------------------------------------------
#
# The live version of a variant, the one a new trigger sends, is its newest approved version
# (selectors.version_latest_approved, which dispatch reads). Retiring the live version makes the
# next newest approved one live (or takes the variant out of rotation when none is left); rolling
# back retires every approved version newer than the target and approves the target again, so the
# target is the newest approved one. Neither writes a new version. Messages already queued keep the
# version they were triggered with (Message.version): its content was approved when they were
# accepted; pausing the campaign is how to stop them.

REASON_MAX = 1000


@dataclass(frozen=True)
class Rollback:
    live: VariantVersion  # the version new triggers send now
    retired: list[VariantVersion]  # the versions that were live or newer, now retired, newest first


def version_retire(*, version: VariantVersion, actor: Any, reason: str) -> VariantVersion:
    """An approved version stops being sendable: new triggers never pick it. Refused, changing nothing, otherwise."""
    reason = _reason(reason)
    with transaction.atomic():
        variant = Variant.objects.select_for_update().get(pk=version.variant_id)
        locked = VariantVersion.objects.select_for_update().select_related("variant__template").get(pk=version.pk)
        if locked.status != VersionStatus.APPROVED:
            raise RegistryError(f"cannot retire {locked}: it is {locked.status}; only an approved version can be retired", field="status")
        was_live = _live_number(variant) == locked.number
        _retire(locked, timezone.now())
        data = {"number": locked.number, "was_live": was_live, "live_now": _live_number(variant)}
        audit_record(action="version.retire", target=locked, actor=actor, reason=reason, data=data)
    return locked


def version_rollback(*, variant: Variant, to_version: VariantVersion, actor: Any, reason: str) -> Rollback:
    """Make ``to_version``, approved once, the variant's live version again, in one transaction; no new version, no edit.

    Every approved version newer than it is retired; a retired ``to_version`` is approved again, keeping who
    approved it first (its content passed four-eyes then: the rollback is not a new approval). It must still pass
    the gate's reading of its content (renders, checks, score under today's threshold).
    """
    reason = _reason(reason)
    problem = _rollback_problem(variant, to_version) or _content_problem(to_version)
    if problem:
        raise RegistryError(f"cannot roll back {variant} to v{to_version.number}: {problem}", field="to_version")
    with transaction.atomic():
        locked_variant = Variant.objects.select_for_update().select_related("template").get(pk=variant.pk)
        target = VariantVersion.objects.select_for_update().select_related("variant__template").get(pk=to_version.pk)
        problem = _rollback_problem(locked_variant, target)  # again under the lock: a retire or approve may have won
        if problem:
            raise RegistryError(f"cannot roll back {variant} to v{target.number}: {problem}", field="to_version")
        return _roll_back(locked_variant, target, actor, reason)


def _rollback_problem(variant: Variant, target: VariantVersion) -> str | None:
    if target.variant_id != variant.pk:
        return f"{target} is a version of another variant"
    if target.status == VersionStatus.REJECTED:
        return "it was rejected"
    if target.status not in (VersionStatus.APPROVED, VersionStatus.RETIRED) or target.approved_at is None:
        return f"it was never approved (it is {target.status})"
    if _live_number(variant) == target.number:
        return "it is already the live version"
    return None


def _roll_back(variant: Variant, target: VariantVersion, actor: Any, reason: str) -> Rollback:
    now = timezone.now()
    live_before = _live_number(variant)
    newer = list(
        VariantVersion.objects.select_for_update()
        .filter(variant=variant, status=VersionStatus.APPROVED, number__gt=target.number)
        .order_by("-number")
    )
    for version in newer:
        _retire(version, now)
        data = {"number": version.number, "was_live": version.number == live_before, "rollback_to": target.number}
        audit_record(action="version.retire", target=version, actor=actor, reason=reason, data=data)
    was = target.status
    if was != VersionStatus.APPROVED:
        target.status, target.status_changed_at = VersionStatus.APPROVED, now
        target.save(update_fields=["status", "status_changed_at"])
    summary = {"variant": str(variant), "from": live_before, "to": target.number, "retired": [v.number for v in newer], "was": was}
    audit_record(action="version.rollback", target=target, actor=actor, reason=reason, data=summary)
    return Rollback(live=target, retired=newer)


def _retire(version: VariantVersion, now: Any) -> None:
    # approved_by and approved_at stay: who approved the content once is history, and a rollback may need it.
    version.status, version.status_changed_at = VersionStatus.RETIRED, now
    version.save(update_fields=["status", "status_changed_at"])


def _live_number(variant: Variant) -> int | None:
    live = version_latest_approved(variant=variant)
    return live.number if live is not None else None


def _reason(reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise RegistryError("say why (it is kept in the audit trail)", field="reason")
    if len(reason) > REASON_MAX:
        raise RegistryError(f"at most {REASON_MAX} characters", field="reason")
    return reason.strip()


def _approval_data(version: VariantVersion, was: str) -> dict[str, Any]:
    """What the gate passed: the score against the template's threshold (the gate read them just before)."""
    score = VersionAssessment.objects.filter(version=version).values_list("score", flat=True).first()
    threshold = float(version.variant.template.spam_threshold)
    return {"number": version.number, "was": was, "spam_score": score, "threshold": threshold, "content_hash": version.content_hash}


def assessment_record(
    *, version: VariantVersion, checks: list[dict], report: dict | None, reason: str = "", from_cache: bool = False
) -> VersionAssessment:
    """Store a sandbox run: checks plus a spamd report, or the reason it could not be scored."""
    now = timezone.now()
    with transaction.atomic():
        assessment, _ = VersionAssessment.objects.select_for_update().get_or_create(
            version=version, defaults={"content_hash": version.content_hash}
        )
        assessment.checks = checks
        if report is not None:
            _scored(assessment, report, now, from_cache)
        else:
            _not_scored(assessment, reason, now)
        assessment.save()
        if report is not None:
            _mark_scored(version, assessment, now)
    return assessment


SANDBOX = "spam-sandbox"  # the actor label of the sandbox's automatic status change


def _mark_scored(version: VariantVersion, assessment: VersionAssessment, now: Any) -> None:
    """draft -> scored, once: a rescore of a version already past draft changes no status and writes no entry."""
    if VariantVersion.objects.filter(pk=version.pk, status=VersionStatus.DRAFT).update(status=VersionStatus.SCORED, status_changed_at=now):
        data = {"number": version.number, "spam_score": assessment.score, "from_cache": assessment.from_cache}
        audit_record(action="version.score", target=version, actor_label=SANDBOX, data=data)


def _scored(assessment: VersionAssessment, report: dict, now: Any, from_cache: bool) -> None:
    assessment.state = AssessmentState.SCORED
    assessment.score, assessment.spamd_threshold = report["score"], report["threshold"]
    assessment.rules, assessment.spamd_version = report["rules"], report["spamd_version"]
    assessment.duration_ms, assessment.from_cache, assessment.scored_at = report["duration_ms"], from_cache, now
    assessment.not_scored_reason, assessment.next_attempt_at = "", None


def _not_scored(assessment: VersionAssessment, reason: str, now: Any) -> None:
    assessment.state = AssessmentState.NOT_SCORED
    assessment.not_scored_reason = reason[:1000]
    assessment.attempts += 1
    wait = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (assessment.attempts - 1))
    assessment.next_attempt_at = now + timedelta(seconds=wait)


def _publish_assessment(version: VariantVersion) -> None:
    """Ask the sandbox to score a new version once it is committed (by task name: nothing here imports it)."""
    from celery import current_app

    transaction.on_commit(lambda: current_app.send_task(ASSESS_TASK, args=[version.pk]))


def _insert_version(
    variant: Variant, content: VersionContent, provenance: dict[str, Any], parent: VariantVersion | None, created_by: Any
) -> VariantVersion:
    with transaction.atomic():
        # The variant row lock serializes numbering: two generators pushing at once get n and n+1.
        Variant.objects.select_for_update().get(pk=variant.pk)
        last = VariantVersion.objects.filter(variant=variant).aggregate(n=Max("number"))["n"] or 0
        version = VariantVersion.objects.create(
            variant=variant,
            number=last + 1,
            mjml_body=content.mjml_body,
            subject=content.subject,
            sender_name=content.sender_name,
            preheader=content.preheader,
            text_body=content.text_body,
            variables=dict(content.variables),
            content_hash=content_hash(content),
            parent=parent,
            created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
            **provenance,
        )
        _audit_version_create(version, created_by)
        return version


def _audit_version_create(version: VariantVersion, created_by: Any) -> None:
    """Provenance without the prompt itself (its hash names it); a generator pushing without a user is the actor."""
    data = {
        "number": version.number,
        "content_hash": version.content_hash,
        "origin": version.origin,
        "parent": version.parent.number if version.parent else None,
    }
    data |= {name: getattr(version, name) for name in ("generator", "model_name", "prompt_hash") if getattr(version, name)}
    label = f"generator:{version.generator}" if version.generator else ""
    audit_record(action="version.create", target=version, actor=created_by, actor_label=label, data=data)


def _provenance(
    origin: str, generator: str, model_name: str, prompt: str, prompt_hash: str, params: dict[str, Any]
) -> dict[str, Any]:
    if origin not in Origin.values:
        raise RegistryError(f"must be one of {', '.join(Origin.values)}", field="origin")
    if not isinstance(params, dict):
        raise RegistryError("must be an object", field="generation_params")
    if origin == Origin.AI:
        if not generator.strip():
            raise RegistryError("is required for AI-made versions", field="generator")
        if not model_name.strip():
            raise RegistryError("is required for AI-made versions", field="model_name")
        if not prompt and not prompt_hash:
            raise RegistryError("an AI-made version needs its prompt or prompt_hash", field="prompt")
    computed = hashlib.sha256(prompt.encode("utf-8")).hexdigest() if prompt else ""
    if prompt_hash and not _HEX64.match(prompt_hash):
        raise RegistryError("must be a lowercase hex SHA-256", field="prompt_hash")
    if prompt_hash and computed and prompt_hash != computed:
        raise RegistryError("does not match the SHA-256 of prompt", field="prompt_hash")
    return {
        "origin": origin,
        "generator": generator.strip(),
        "model_name": model_name.strip(),
        "prompt": prompt,
        "prompt_hash": prompt_hash or computed,
        "generation_params": params,
    }


def _check_json(field: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise RegistryError("must be a JSON object", field=field)
    problem = json_problem(value)
    if problem:
        raise RegistryError(problem, field=field)


def _check_slug(slug: str, field: str) -> None:
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise RegistryError("must be lowercase letters, digits, - or _ (at most 100)", field=field)


def _threshold(value: Any) -> Decimal:
    try:
        threshold = Decimal(str(value))
    except InvalidOperation:
        raise RegistryError("must be a number", field="spam_threshold") from None
    if not Decimal("-100") < threshold < Decimal("1000"):
        raise RegistryError("must be between -100 and 1000", field="spam_threshold")
    return threshold


__all__ = [
    "RegistryError",
    "RenderError",
    "content_hash",
    "template_create",
    "template_set_four_eyes",
    "variant_create",
    "variant_set_weight",
    "version_create",
    "assessment_record",
    "version_approvable",
    "version_approve",
    "version_derive",
    "version_retire",
    "version_rollback",
    "Rollback",
]
