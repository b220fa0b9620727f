"""Pause and resume of a sending domain: locked, audited, idempotent; a detector pause needs force; resume ramps."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEntry
from deliverability.errors import DeliverabilityError
from deliverability.models import PauseEvidence, SendingDomain
from deliverability.services import ResumeRefused, domain_pause, domain_rate, domain_resume, ramp_factor

pytestmark = pytest.mark.django_db
# Fixtures write their own entries (domain.create, token.create); these tests look at pauses and resumes.
PAUSES = AuditEntry.objects.filter(action__in=["domain.pause", "domain.resume"])


def evidence() -> PauseEvidence:
    return PauseEvidence(
        minute=timezone.now().replace(second=0, microsecond=0), signal="bounce", rule="cusum", baseline=0.01,
        observed=0.2, statistic=14.2, threshold=10.0, volume=300, events=60,
    )


def test_a_pause_by_a_person_is_recorded_with_who_and_why(sending_domain: Any, oncall: Any) -> None:
    outcome = domain_pause(domain=sending_domain, reason="blocklisted at Spamhaus", actor=oncall)
    domain = SendingDomain.objects.get(pk=sending_domain.pk)
    assert outcome.changed and (domain.paused, domain.paused_by, domain.paused_reason) == (True, oncall.username, "blocklisted at Spamhaus")
    entry = PAUSES.get()
    assert (entry.action, entry.actor, entry.actor_label, entry.reason) == (
        "domain.pause", oncall, oncall.username, "blocklisted at Spamhaus"
    )
    assert (entry.target_type, entry.target_id) == ("deliverability.sendingdomain", str(sending_domain.pk))


def test_pausing_twice_changes_nothing_the_second_time(sending_domain: Any, oncall: Any) -> None:
    domain_pause(domain=sending_domain, reason="first", actor=oncall)
    again = domain_pause(domain=sending_domain, reason="second", actor=oncall)
    assert not again.changed and again.domain.paused_reason == "first"
    assert PAUSES.count() == 1


def test_a_pause_without_a_reason_is_refused_and_changes_nothing(sending_domain: Any, oncall: Any) -> None:
    with pytest.raises(DeliverabilityError, match="reason: a reason is required"):
        domain_pause(domain=sending_domain, reason="  ", actor=oncall)
    assert not SendingDomain.objects.get(pk=sending_domain.pk).paused and not PAUSES.exists()


def test_a_detector_pause_stores_its_evidence_and_resume_needs_force(sending_domain: Any, oncall: Any) -> None:
    proof = evidence()
    domain_pause(domain=sending_domain, reason=proof.summary(), evidence=proof)
    domain = SendingDomain.objects.get(pk=sending_domain.pk)
    assert domain.paused_by == "detector" and "bounce rate 20.00% over 300 messages vs baseline 1.00%" in domain.paused_reason
    assert PAUSES.get().data["evidence"] == proof.pk
    with pytest.raises(ResumeRefused, match="paused by the detector"):
        domain_resume(domain=domain, actor=oncall)
    assert SendingDomain.objects.get(pk=domain.pk).paused
    domain_resume(domain=domain, actor=oncall, force=True, reason="list cleaned")
    assert not SendingDomain.objects.get(pk=domain.pk).paused
    assert PauseEvidence.objects.get().resumed_at is not None
    resume = AuditEntry.objects.get(action="domain.resume")
    assert resume.data["force"] is True and resume.data["paused_by"] == "detector" and resume.reason == "list cleaned"


def test_resuming_a_running_domain_changes_nothing(sending_domain: Any, oncall: Any) -> None:
    assert not domain_resume(domain=sending_domain, actor=oncall).changed
    assert not PAUSES.exists()


def test_resume_ramps_the_rate_from_a_tenth_to_all_of_it(sending_domain: Any, oncall: Any) -> None:
    domain_pause(domain=sending_domain, reason="test", actor=oncall)
    domain = domain_resume(domain=sending_domain, actor=oncall, ramp_minutes=60).domain
    started = domain.ramp_started_at
    assert ramp_factor(domain, started) == 0.1
    assert ramp_factor(domain, started + timedelta(minutes=30)) == pytest.approx(0.5)
    assert ramp_factor(domain, started + timedelta(minutes=61)) == 1.0
    assert domain_rate(domain) == pytest.approx(domain.rate_per_second * 0.1, rel=0.05)


def test_a_negative_ramp_is_refused(sending_domain: Any, oncall: Any) -> None:
    domain_pause(domain=sending_domain, reason="test", actor=oncall)
    with pytest.raises(DeliverabilityError, match="ramp_minutes"):
        domain_resume(domain=sending_domain, actor=oncall, ramp_minutes=-5)
    assert SendingDomain.objects.get(pk=sending_domain.pk).paused
