"""Pause and resume from the admin: a reason first, the same services and rules as the API, audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from audit.models import AuditEntry
from deliverability.models import PauseEvidence, SendingDomain, SendingSwitch
from deliverability.services import domain_pause, sending_switch
from dispatch.models import Campaign, CampaignStatus

pytestmark = pytest.mark.django_db
DOMAINS = "/admin/deliverability/sendingdomain/"
CAMPAIGNS = "/admin/dispatch/campaign/"
SWITCH = "/admin/deliverability/sendingswitch/"


def act(client: Any, url: str, action: str, pk: int, **form: Any) -> Any:
    """Choose the action on the changelist (the intermediate page), then apply it with ``form``."""
    first = client.post(url, {"action": action, ACTION_CHECKBOX_NAME: [pk]})
    if not form:
        return first
    return client.post(url, {"action": action, ACTION_CHECKBOX_NAME: [pk], "apply": "1", **form}, follow=True)


def test_oncall_pauses_a_domain_with_a_reason_and_it_is_audited(campaign: Any, staff_client: Any, oncall: Any) -> None:
    client = staff_client(oncall)
    page = act(client, DOMAINS, "pause", campaign.sending_domain_id)
    assert page.status_code == 200 and b'name="reason"' in page.content and b"Pause the selected domains" in page.content
    done = act(client, DOMAINS, "pause", campaign.sending_domain_id, reason="blocklisted, ticket OPS-7")
    assert b"Mail.example.com paused." in done.content  # the admin capitalizes messages
    domain = SendingDomain.objects.get(pk=campaign.sending_domain_id)
    assert (domain.paused, domain.paused_by, domain.paused_reason) == (True, oncall.username, "blocklisted, ticket OPS-7")
    assert AuditEntry.objects.filter(action="domain.pause", actor=oncall).count() == 1


def test_a_pause_without_a_reason_asks_again_and_changes_nothing(campaign: Any, staff_client: Any, oncall: Any) -> None:
    response = act(staff_client(oncall), DOMAINS, "pause", campaign.sending_domain_id, reason="")
    assert b"This field is required" in response.content
    assert not SendingDomain.objects.get(pk=campaign.sending_domain_id).paused


def test_a_marketer_has_no_pause_or_resume_action(campaign: Any, staff_client: Any, marketer: Any) -> None:
    client = staff_client(marketer)
    page = client.get(DOMAINS)
    assert page.status_code == 200 and b'value="pause"' not in page.content and b'value="resume"' not in page.content
    domain_pause(domain=campaign.sending_domain, reason="test")
    act(client, DOMAINS, "resume", campaign.sending_domain_id, reason="let me", force="on")
    assert SendingDomain.objects.get(pk=campaign.sending_domain_id).paused


def test_a_detector_pause_is_not_resumed_without_force(campaign: Any, staff_client: Any, oncall: Any) -> None:
    evidence = PauseEvidence(
        minute=campaign.created_at, signal="bounce", rule="cusum", baseline=0.01, observed=0.3, statistic=20.0,
        threshold=12.0, volume=200, events=60,
    )
    domain_pause(domain=campaign.sending_domain, reason=evidence.summary(), evidence=evidence)
    client = staff_client(oncall)
    refused = act(client, DOMAINS, "resume", campaign.sending_domain_id, reason="looks fine")
    assert b"paused by the detector" in refused.content
    assert SendingDomain.objects.get(pk=campaign.sending_domain_id).paused
    act(client, DOMAINS, "resume", campaign.sending_domain_id, reason="list cleaned", force="on", ramp_minutes="45")
    domain = SendingDomain.objects.get(pk=campaign.sending_domain_id)
    assert not domain.paused and domain.ramp_minutes == 45


def test_campaigns_pause_and_resume_from_the_admin(campaign: Any, staff_client: Any, admin_role: Any) -> None:
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.RUNNING)
    client = staff_client(admin_role)
    act(client, CAMPAIGNS, "pause", campaign.pk, reason="wrong segment")
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.PAUSED
    act(client, CAMPAIGNS, "resume", campaign.pk, reason="segment fixed")
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.RUNNING
    assert [e.action for e in AuditEntry.objects.filter(target_type="dispatch.campaign").order_by("id")][-2:] == [
        "campaign.pause", "campaign.resume",
    ]


def test_the_global_switch_stops_and_restarts_everything(staff_client: Any, oncall: Any) -> None:
    client = staff_client(oncall)
    switch = sending_switch()
    assert client.get(SWITCH).status_code == 200
    act(client, SWITCH, "pause_all", switch.pk, reason="provider outage")
    assert SendingSwitch.objects.get().paused
    act(client, SWITCH, "resume_all", switch.pk, reason="over")
    assert not SendingSwitch.objects.get().paused
    assert [e.action for e in AuditEntry.objects.order_by("id")][-2:] == ["sending.pause_all", "sending.resume_all"]


def test_oncall_overrides_a_detector_pause_for_a_while_from_the_admin(campaign: Any, staff_client: Any, oncall: Any) -> None:
    """Issue 16's second key: the detector keeps its view (no epoch bump) and it returns when the override lapses."""
    evidence = PauseEvidence(
        minute=campaign.created_at, signal="bounce", rule="batch", baseline=0.05, observed=0.34, statistic=15.0,
        threshold=14.0, volume=50, events=17, replies=["550 5.1.1 No such user"],
    )
    domain_pause(domain=campaign.sending_domain, reason=evidence.summary(), evidence=evidence)
    epoch = SendingDomain.objects.get(pk=campaign.sending_domain_id).detector_epoch
    done = act(staff_client(oncall), DOMAINS, "resume", campaign.sending_domain_id, reason="list cleaned", override_minutes="45")
    assert b"the detector overridden until" in done.content
    domain = SendingDomain.objects.get(pk=campaign.sending_domain_id)
    assert not domain.paused and domain.detector_epoch == epoch and domain.override_until is not None
    assert AuditEntry.objects.filter(action="domain.override", actor=oncall).count() == 1
