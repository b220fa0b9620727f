"""Launching a campaign in one step (the admin's form): create it and accept its first recipients, or neither."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from deliverability.models import DEFAULT_PURPOSE, SendingDomain
from dispatch.models import Campaign
from dispatch.services.campaigns import campaign_create
from dispatch.services.triggers import trigger_accept
from templates_registry.models import Template, VariantVersion, VersionStatus


def template_sample_context(*, template: Template) -> dict[str, Any]:
    """The sample values of the template's newest approved version ({} when none is approved)."""
    newest = (
        VariantVersion.objects.filter(variant__template=template, status=VersionStatus.APPROVED)
        .order_by("-approved_at", "-pk")
        .only("variables")
        .first()
    )
    return dict(newest.variables) if newest is not None and isinstance(newest.variables, dict) else {}


@dataclass(frozen=True)
class Launch:
    campaign: Campaign
    response: dict[str, Any]  # trigger_accept's: accepted, suppressed, rejected, and the reasons


def campaign_launch(
    *,
    name: str,
    template: Template,
    sending_domain: SendingDomain,
    recipients: list[dict[str, Any]],
    purpose: str = DEFAULT_PURPOSE,
    created_by: Any = None,
) -> Launch:
    """Create the campaign and accept its recipients, or neither. Raises CampaignError, TriggerError."""
    samples = template_sample_context(template=template)
    filled = [{**recipient, "context": {**samples, **recipient.get("context", {})}} for recipient in recipients]
    # One transaction: without it a refused trigger would leave an empty campaign behind.
    # The send hints trigger_accept publishes go out on its commit.
    with transaction.atomic():
        campaign = campaign_create(
            name=name, template=template, sending_domain=sending_domain, purpose=purpose, created_by=created_by
        )
        response, _ = trigger_accept(
            campaign=campaign, idempotency_key=f"admin-launch-{uuid.uuid4().hex}", recipients=filled, created_by=created_by
        )
    return Launch(campaign, response)
