"""The spam sandbox: render a version with its sample values into the exact MIME message
dispatch would send (no real recipient), run the pre-send checks and score it with spamd.

Identical content (same content hash) is scored once; spamd down records
"not scored" with the reason and the beat retries with backoff.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from controlplane import metrics
from deliverability.dkim_signing import dkim_sign
from deliverability.models import SendingDomain
from deliverability.spam import SpamdUnavailable, spam_score
from templates_registry.checks import run_checks
from templates_registry.models import AssessmentState, VariantVersion, VersionAssessment
from templates_registry.rendering import RenderError, compile_version
from templates_registry.rendering.mime import build_mime, encode_headers, standard_headers
from templates_registry.services import assessment_record

SANDBOX_RECIPIENT = "recipient@example.com"


def version_assess(*, version_id: int, sending_domain: SendingDomain | None = None) -> VersionAssessment | None:
    """Check and score one version; None when it no longer exists."""
    version = VariantVersion.objects.select_related("variant__template").filter(pk=version_id).first()
    if version is None:
        return None
    try:
        rendered = compile_version(version.content()).render(version.variables)
    except RenderError as exc:
        check = {"name": "renders", "passed": False, "blocking": True, "message": str(exc)}
        return assessment_record(version=version, checks=[check], report=None, reason=f"does not render: {exc}")
    marketing = version.variant.template.kind != "transactional"
    checks = [c.as_dict() for c in run_checks(rendered, text_was_given=bool(version.text_body), marketing=marketing)]
    cached = _cached_report(version)
    if cached is not None:
        return assessment_record(version=version, checks=checks, report=cached, from_cache=True)
    try:
        report = spam_score(sandbox_message(version, rendered, sending_domain)).as_dict()
    except SpamdUnavailable as exc:
        return assessment_record(version=version, checks=checks, report=None, reason=str(exc))
    metrics.spam_scored(report)
    return assessment_record(version=version, checks=checks, report=report)


def sandbox_message(version: VariantVersion, rendered: object, domain: SendingDomain | None) -> bytes:
    """The message dispatch would send for this version, to a placeholder recipient."""
    domain_name = domain.domain if domain else "sandbox.sendplane.invalid"
    sender = domain.default_sender if domain else f"news@{domain_name}"
    token = f"{version.content_hash[:32]}.{'0' * 16}"
    headers = standard_headers(
        sender_name=rendered.sender_name,  # type: ignore[attr-defined]
        sender_address=sender,
        recipient=SANDBOX_RECIPIENT,
        subject=rendered.subject,  # type: ignore[attr-defined]
        message_id=f"<sandbox-{version.content_hash[:24]}@{domain_name}>",
        unsubscribe=(f"{settings.SENDPLANE_PUBLIC_URL}/u/{token}", f"mailto:unsubscribe+{token}@{domain_name}"),
    )
    raw = build_mime(
        headers=encode_headers(headers), text=rendered.text, html=rendered.html,  # type: ignore[attr-defined]
        text_parts=rendered.text_parts, html_parts=rendered.html_parts,  # type: ignore[attr-defined]
    )
    if domain and domain.dkim_selector and domain.dkim_key_path:
        raw = dkim_sign(raw, domain=domain.domain, selector=domain.dkim_selector, key_path=domain.dkim_key_path)
    return raw


def _cached_report(version: VariantVersion) -> dict | None:
    """The report of another version with the same content hash, already scored."""
    twin = (
        VersionAssessment.objects.filter(content_hash=version.content_hash, state=AssessmentState.SCORED)
        .exclude(version=version)
        .first()
    )
    if twin is None:
        return None
    fields = ("score", "spamd_version", "duration_ms", "rules")
    return {**{f: getattr(twin, f) for f in fields}, "threshold": twin.spamd_threshold}


def assessments_due(*, limit: int = 50) -> list[int]:
    """Versions to (re)score: not scored with their retry time passed, or never assessed at all."""
    now = timezone.now()
    retry = VersionAssessment.objects.filter(state=AssessmentState.NOT_SCORED, next_attempt_at__lte=now)
    never = VariantVersion.objects.filter(assessment__isnull=True, status__in=["draft"])
    ids = list(retry.values_list("version_id", flat=True)[:limit])
    return ids + list(never.values_list("id", flat=True)[: max(0, limit - len(ids))])
