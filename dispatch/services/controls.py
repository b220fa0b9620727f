"""On-call controls: pause and resume a campaign, a domain or everything, and say what was in flight.

Each pause takes the lock its scope's hand-over guard holds (deliverability.services.handover),
so when it returns the batches that were handing messages over have finished their chunk and every
later chunk sees the pause: nothing of that scope reaches SMTP after the call returns. Rows that
were claimed but not yet handed over go back to the queue; ``in_flight`` counts them at return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from audit.services import audit_record
from controlplane.locking import lock_no_key
from deliverability.models import SendingDomain
from deliverability.services import domain_pause, domain_resume, sending_pause_all, sending_resume_all
from deliverability.services.handover import hand_overs_wait
from dispatch.models import Campaign, CampaignStatus, Message, MessageStatus
from dispatch.services.campaigns import CampaignError
from dispatch.services.hints import publish_send_batches


@dataclass(frozen=True)
class ControlResult:
    scope: str  # "domain", "campaign" or "all"
    target: str  # the domain name, the campaign id, or "all"
    paused: bool
    changed: bool  # False: it already was in the asked state; nothing was written
    reason: str
    in_flight: int  # messages of the scope claimed by a worker when the call returned

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _in_flight(rows: QuerySet[Message]) -> int:
    return rows.filter(status=MessageStatus.SENDING).count()


# --- domains ------------------------------------------------------------------------------


def domain_pause_now(*, domain: SendingDomain, reason: str, actor: Any) -> ControlResult:
    outcome = domain_pause(domain=domain, reason=reason, actor=actor)
    in_flight = _in_flight(Message.objects.filter(sending_domain=domain))
    return ControlResult("domain", domain.domain, True, outcome.changed, outcome.domain.paused_reason, in_flight)


def domain_resume_now(
    *, domain: SendingDomain, actor: Any, ramp_minutes: int | None = None, force: bool = False, reason: str = "",
    override_minutes: int | None = None,
) -> ControlResult:
    outcome = domain_resume(
        domain=domain, actor=actor, ramp_minutes=ramp_minutes, force=force, reason=reason, override_minutes=override_minutes
    )
    if outcome.changed:
        publish_send_batches([domain.pk])  # wake the domain now rather than on the sweeper's next beat
    return ControlResult("domain", domain.domain, False, outcome.changed, reason, _in_flight(Message.objects.filter(sending_domain=domain)))


# --- everything ----------------------------------------------------------------------------


def pause_all_now(*, reason: str, actor: Any) -> ControlResult:
    switch, changed = sending_pause_all(reason=reason, actor=actor)
    return ControlResult("all", "all", True, changed, switch.paused_reason, _in_flight(Message.objects.all()))


def resume_all_now(*, actor: Any, reason: str = "") -> ControlResult:
    _, changed = sending_resume_all(actor=actor, reason=reason)
    if changed:
        publish_send_batches(SendingDomain.objects.filter(paused=False).values_list("id", flat=True))
    return ControlResult("all", "all", False, changed, reason, _in_flight(Message.objects.all()))


# --- campaigns -----------------------------------------------------------------------------


def campaign_pause(*, campaign: Campaign, reason: str, actor: Any) -> ControlResult:
    """Stop one campaign; its queued messages wait. Only a running (or not yet started) campaign pauses."""
    if not reason.strip():
        raise CampaignError("a reason is required", field="reason")
    with transaction.atomic():
        # NO KEY UPDATE: the flag is written without blocking hand-overs in progress (see hand_overs_wait).
        locked = Campaign.objects.select_for_update(**lock_no_key()).get(pk=campaign.pk)
        changed = locked.status != CampaignStatus.PAUSED
        if changed:
            if locked.status not in (CampaignStatus.RUNNING, CampaignStatus.DRAFT):
                raise CampaignError(f"campaign {locked.pk} is {locked.status}; only a running campaign can be paused", field="status")
            data = {"was": locked.status}
            locked.status = CampaignStatus.PAUSED
            locked.save(update_fields=["status"])
            audit_record(action="campaign.pause", target=locked, actor=actor, reason=reason.strip(), data=data)
    hand_overs_wait(Campaign, locked.pk)
    in_flight = _in_flight(Message.objects.filter(campaign=locked))
    return ControlResult("campaign", str(locked.pk), True, changed, reason.strip(), in_flight)


def campaign_resume(*, campaign: Campaign, actor: Any, reason: str = "") -> ControlResult:
    """Let a paused campaign send again (its domain's own pause, if any, still holds)."""
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        changed = locked.status == CampaignStatus.PAUSED
        if changed:
            locked.status = CampaignStatus.RUNNING
            locked.save(update_fields=["status"])
            audit_record(action="campaign.resume", target=locked, actor=actor, reason=reason)
            publish_send_batches([locked.sending_domain_id])
        elif locked.status != CampaignStatus.RUNNING:
            raise CampaignError(f"campaign {locked.pk} is {locked.status}; only a paused campaign can be resumed", field="status")
    return ControlResult("campaign", str(locked.pk), False, changed, reason, _in_flight(Message.objects.filter(campaign=locked)))
