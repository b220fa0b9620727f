"""Accept a campaign trigger: validate, drop suppressed, assign variants, insert the outbox rows."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_record
from controlplane.addresses import address_key, address_validated
from controlplane.correlation import correlation_id, correlation_new
from controlplane.errors import ServiceError
from controlplane.json_values import json_problem
from controlplane.locking import row_share_lock
from deliverability.models import TRANSACTIONAL
from deliverability.providers import providers_of
from deliverability.selectors import consent_refusals, suppressed_among
from deliverability.services.sender_rules import sender_rules_refusal
from dispatch.models import Campaign, CampaignStatus, Message, Trigger
from dispatch.services.campaigns import purpose_template_problem
from dispatch.services.hints import publish_send_batches
from dispatch.services.results import results_accepted
from templates_registry.checks import refuse_active_content
from templates_registry.models import Variant, VariantVersion
from templates_registry.rendering import CompiledVersion, RenderError, compile_version
from templates_registry.selectors import version_latest_approved

MAX_RECIPIENTS = 10_000
_REJECTIONS_SHOWN = 1000


class TriggerError(ServiceError):
    """The whole trigger is refused; nothing was inserted."""


class TriggerConflict(TriggerError):
    """The idempotency key was used before with another body."""

    status = 409


@dataclass(frozen=True)
class Arm:
    """A variant in rotation, with the approved version it sends (compiled once per trigger)."""

    variant: Variant
    version: VariantVersion
    weight: int
    compiled: CompiledVersion


def request_fingerprint(recipients: list[dict[str, Any]]) -> str:
    # ensure_ascii: a lone surrogate in a value must hash, not raise.
    canonical = json.dumps(recipients, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def trigger_accept(
    *, campaign: Campaign, idempotency_key: str, recipients: list[dict[str, Any]], created_by: Any = None
) -> tuple[dict[str, Any], bool]:
    """Returns (response, replayed). Raises TriggerError (400), TriggerConflict (409)."""
    fingerprint = request_fingerprint(recipients)
    replay = _replay(campaign, idempotency_key, fingerprint)
    if replay is not None:
        return replay, True
    if not recipients:
        raise TriggerError("recipients must not be empty")
    if len(recipients) > MAX_RECIPIENTS:
        raise TriggerError(f"at most {MAX_RECIPIENTS} recipients per trigger, got {len(recipients)}")
    if campaign.status in (CampaignStatus.CANCELLED, CampaignStatus.COMPLETED):
        raise TriggerError(f"campaign {campaign.pk} is {campaign.status}")
    _purpose_problem(campaign)
    arms = _arms(campaign)
    rows, suppressed, without_consent, rejections = _sort_recipients(campaign, arms, recipients)
    if not rows and not suppressed and not without_consent:
        raise TriggerError(f"every recipient was rejected; first: #{rejections[0]['index']} {rejections[0]['reason']}")
    response = {
        "accepted": len(rows),
        "suppressed": len(suppressed),
        "without_consent": len(without_consent),
        "rejected": len(rejections),
        "suppressed_recipients": suppressed[:_REJECTIONS_SHOWN],
        "without_consent_recipients": without_consent[:_REJECTIONS_SHOWN],
        "rejections": rejections[:_REJECTIONS_SHOWN],
    }
    try:
        return _insert(campaign, idempotency_key, fingerprint, response, rows, created_by), False
    except IntegrityError:
        # A concurrent request with the same key committed first: answer as a repeat.
        replay = _replay(campaign, idempotency_key, fingerprint)
        if replay is None:
            raise
        return replay, True


def _replay(campaign: Campaign, key: str, fingerprint: str) -> dict[str, Any] | None:
    existing = Trigger.objects.filter(campaign=campaign, idempotency_key__in=[key, erased_key(key)]).first()
    if existing is None:
        return None
    if existing.request_hash != fingerprint:
        raise TriggerConflict("this Idempotency-Key was already used with a different body")
    return existing.response


def _purpose_problem(campaign: Campaign) -> None:
    """Marketing mail needs a marketing template (only that one is checked for Sendplane's unsubscribe link) and,
    under the domain's "enforce" policy, a domain that passes the providers' required sender rules."""
    if campaign.purpose == TRANSACTIONAL:
        return
    problem = purpose_template_problem(campaign.purpose, campaign.template)
    if problem:
        raise TriggerError(f"campaign {campaign.pk}: {problem}")
    refusal = sender_rules_refusal(campaign.sending_domain)  # may ask DNS: before any transaction
    if refusal:
        raise TriggerError(refusal)


def _arms(campaign: Campaign) -> list[Arm]:
    arms = []
    for variant in Variant.objects.filter(template=campaign.template, weight__gt=0).order_by("pk"):
        version = version_latest_approved(variant=variant)
        if version is not None:
            arms.append(Arm(variant, version, variant.weight, compile_version(version.content())))
    if not arms:
        raise TriggerError(f"template {campaign.template.slug!r} has no approved version to send")
    return arms


def assign_arm(arms: list[Arm], campaign_id: int, address: str) -> Arm:
    """A stable, weighted choice: the same recipient of a campaign always gets the same variant."""
    digest = hashlib.sha256(f"{campaign_id}:{address}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(arm.weight for arm in arms)
    for arm in arms:
        point -= arm.weight
        if point < 0:
            return arm
    return arms[-1]


def _sort_recipients(
    campaign: Campaign, arms: list[Arm], recipients: list[dict[str, Any]]
) -> tuple[list[tuple[str, dict[str, Any], Arm]], list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Split into (rows to insert, suppressed addresses, recipients without consent, rejections), each with reasons."""
    rejections: list[dict[str, Any]] = []
    valid: list[tuple[int, str, dict[str, Any]]] = []
    seen: set[str] = set()
    for index, recipient in enumerate(recipients):
        address, problem = _address(recipient.get("address"))
        if problem is None and address_key(address) in seen:
            problem = "duplicate address in this trigger"
        context = recipient.get("context", {})
        problem = problem or _context_problem(context)
        if problem:
            rejections.append({"index": index, "address": _echo(recipient.get("address")), "reason": problem})
            continue
        seen.add(address_key(address))
        valid.append((index, address, context))
    blocked = suppressed_among(addresses=[a for _, a, _ in valid], sending_domain=campaign.sending_domain)
    unconsented = _consent_refusals(campaign, [a for _, a, _ in valid if a not in blocked])
    rows, suppressed, without_consent = [], [], []
    for index, address, context in valid:
        if address in blocked:
            suppressed.append(address)
            continue
        if address in unconsented:
            without_consent.append({"index": index, "address": address, "reason": unconsented[address]})
            continue
        arm = assign_arm(arms, campaign.pk, address_key(address))
        problem = _render_problem(arm, context)
        if problem:
            rejections.append({"index": index, "address": address, "reason": problem})
        else:
            rows.append((address, context, arm))
    return rows, suppressed, without_consent, rejections


def _consent_refusals(campaign: Campaign, addresses: list[str]) -> dict[str, str]:
    if campaign.purpose == TRANSACTIONAL or not addresses:
        return {}
    return consent_refusals(addresses=addresses, purpose=campaign.purpose, required=campaign.sending_domain.consent_required)


def _address(value: Any) -> tuple[str, str | None]:
    if not isinstance(value, str):
        return "", "address must be a string"
    if json_problem(value):
        return "", "address must not contain NUL or surrogate characters"
    return address_validated(value)


def _echo(value: Any) -> str:
    """The address as the response may repeat it: JSON-storable, bounded."""
    text = str(value)[:320]
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _context_problem(context: Any) -> str | None:
    if not isinstance(context, dict):
        return "context must be an object"
    problem = json_problem(context)
    return f"context {problem}" if problem else None


def _render_problem(arm: Arm, context: dict[str, Any]) -> str | None:
    """Render now, so a recipient whose context cannot fill the template is refused at the door: a subject or
    sender name that renders with a control character or too long too (``check_header``), not at the server."""
    try:
        refuse_active_content(arm.compiled.render(context))  # a value may be a javascript: or data: URL (issue 15)
    except RenderError as exc:
        return f"does not render: {exc}"
    return None


def _insert(
    campaign: Campaign,
    key: str,
    fingerprint: str,
    response: dict[str, Any],
    rows: list[tuple[str, dict[str, Any], Arm]],
    created_by: Any,
) -> dict[str, Any]:
    providers = providers_of(address for address, _, _ in rows)  # may ask DNS (MX): outside the transaction
    now = timezone.now()
    with transaction.atomic():
        _still_open(campaign)
        trigger = Trigger.objects.create(
            campaign=campaign,
            idempotency_key=key,
            request_hash=fingerprint,
            response={},
            created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
            correlation_id=correlation_id() or correlation_new(),  # the request's, else one for this trigger's lines
        )
        response = {"trigger": trigger.pk, **response}
        Trigger.objects.filter(pk=trigger.pk).update(response=response)
        queued = Message.objects.bulk_create(_messages(campaign, trigger, rows, providers, now), batch_size=1000)
        results_accepted(queued)
        started = Campaign.objects.filter(pk=campaign.pk, status=CampaignStatus.DRAFT).update(status=CampaignStatus.RUNNING)
        _audit_accept(campaign, trigger, response, bool(started), created_by)
        publish_send_batches([campaign.sending_domain_id], correlation_id=trigger.correlation_id)
    return response


def erased_key(key: str) -> str:
    """What a GDPR erase leaves of an Idempotency-Key that named the address: its hash, which a retry still finds."""
    return f"erased:sha256:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _still_open(campaign: Campaign) -> None:
    """Hold the campaign against a cancel or complete until these rows commit, and refuse if one came first.

    A cancel flips the status under ``FOR NO KEY UPDATE`` and then ends the rows
    waiting; rows a trigger committed after it would wait for ever (only
    running campaigns are claimed). ``FOR SHARE`` makes the two take turns
    while triggers of one campaign still run side by side. A draft's first
    trigger writes the row (draft -> running): it takes the write lock at
    once, as two share locks upgraded together would deadlock.
    """
    row_share_lock(Campaign, campaign.pk, exclusive=campaign.status == CampaignStatus.DRAFT)
    status = Campaign.objects.filter(pk=campaign.pk).values_list("status", flat=True).get()
    if status in (CampaignStatus.CANCELLED, CampaignStatus.COMPLETED):
        raise TriggerError(f"campaign {campaign.pk} is {status}")


def _audit_accept(campaign: Campaign, trigger: Trigger, response: dict[str, Any], started: bool, created_by: Any) -> None:
    """Counts only: the recipients are in the outbox (and go with an erase), never in the trail."""
    data = {name: response[name] for name in ("trigger", "accepted", "suppressed", "without_consent", "rejected")}
    data |= {"idempotency_key": trigger.idempotency_key, "started": started}
    audit_record(action="trigger.accept", target=campaign, actor=created_by, data=data)


def _messages(
    campaign: Campaign, trigger: Trigger, rows: list[tuple[str, dict[str, Any], Arm]], providers: list[str], now: datetime
) -> list[Message]:
    return [
        Message(
            campaign=campaign,
            trigger=trigger,
            sending_domain_id=campaign.sending_domain_id,
            provider=provider,
            version=arm.version,
            recipient=address,
            context=context,
            not_before=now,
            content_checked=True,  # _render_problem refused every recipient whose render had active content
        )
        for (address, context, arm), provider in zip(rows, providers, strict=True)
    ]
