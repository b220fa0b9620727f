"""Issue 16, "two keys": an operator overrides a detector pause for a bounded time; when it lapses, the detector's view returns.

Against the real PostgreSQL: counters are written minute by minute relative
to now, the minute pass (``detector_run``) is driven with explicit times, and
the override goes through the service, the API and the admin like on-call's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEntry
from deliverability.models import DomainMinute, PauseEvidence, SendingDomain
from deliverability.services import domain_create, domain_pause, domain_resume
from deliverability.services.batch_watch import batch_watch
from deliverability.services.counters import minute_of
from deliverability.services.detection import detector_run
from tests.conftest import assert_error

pytestmark = pytest.mark.django_db
START = minute_of(timezone.now()) - timedelta(minutes=200)


def minutes(domain: SendingDomain, first: int, last: int, *, sent: int = 100, bounced: int = 1) -> None:
    """Minutes START+first .. START+last-1, each with these counts."""
    rows = [DomainMinute(sending_domain=domain, minute=at(m), sent=sent, bounced_soft=bounced) for m in range(first, last)]
    DomainMinute.objects.bulk_create(rows)


def at(minute: int) -> datetime:
    return START + timedelta(minutes=minute)


@pytest.fixture
def paused(db: Any) -> SendingDomain:
    """A domain the detector paused at a list import (minute 120 on), its evidence open."""
    domain = domain_create(domain="d.example.com", default_sender="news@d.example.com")
    minutes(domain, 0, 120)
    minutes(domain, 120, 130, bounced=30)
    detector_run(now=at(130))
    domain.refresh_from_db()
    assert domain.paused and domain.paused_by == "detector"
    return domain


def override(domain: SendingDomain, oncall: Any, minutes_: int = 30) -> SendingDomain:
    domain_resume(domain=domain, actor=oncall, override_minutes=minutes_, reason="the list was cleaned; watching it")
    domain.refresh_from_db()
    return domain


def test_an_override_resumes_without_making_the_detector_forget(paused: SendingDomain, oncall: Any) -> None:
    epoch = paused.detector_epoch
    domain = override(paused, oncall)
    assert not domain.paused and domain.detector_epoch == epoch and domain.override_until is not None
    entry = AuditEntry.objects.filter(action="domain.override").get()
    assert (entry.actor, entry.reason, entry.data["minutes"]) == (oncall, "the list was cleaned; watching it", 30)


def test_the_detector_does_not_pause_during_the_override_and_pauses_again_when_it_lapses(paused: SendingDomain, oncall: Any) -> None:
    domain = override(paused, oncall, minutes_=30)
    lapse = domain.override_until
    assert lapse is not None
    still_bad = (lapse - START).total_seconds() // 60 + 5
    minutes(domain, 130, int(still_bad), bounced=30)  # the incident goes on through the override and after it
    detector_run(now=lapse - timedelta(minutes=1))
    domain.refresh_from_db()
    assert not domain.paused and PauseEvidence.objects.count() == 1  # held off: no pause, no new evidence
    assert batch_watch(domain) is None  # nor between minutes
    detector_run(now=lapse + timedelta(minutes=3))
    domain.refresh_from_db()
    assert domain.paused and domain.paused_by == "detector" and domain.override_until is None
    assert PauseEvidence.objects.count() == 2
    assert AuditEntry.objects.filter(action="domain.override_lapse", target_id=str(domain.pk)).count() == 1


def test_when_the_incident_ended_during_the_override_the_lapse_changes_nothing(paused: SendingDomain, oncall: Any) -> None:
    domain = override(paused, oncall, minutes_=60)
    lapse = domain.override_until
    assert lapse is not None
    minutes(domain, 130, int((lapse - START).total_seconds() // 60) + 10)  # back to the usual 1%
    detector_run(now=lapse + timedelta(minutes=5))
    domain.refresh_from_db()
    assert not domain.paused and domain.override_until is None and PauseEvidence.objects.count() == 1


def test_only_a_detector_pause_is_overridden_and_only_for_a_bounded_time_with_a_reason(paused: SendingDomain, oncall: Any) -> None:
    with pytest.raises(ValueError, match="reason"):
        domain_resume(domain=paused, actor=oncall, override_minutes=30, reason=" ")
    with pytest.raises(ValueError, match="override_minutes"):
        domain_resume(domain=paused, actor=oncall, override_minutes=10_000, reason="x")
    other = domain_create(domain="o.example.com", default_sender="news@o.example.com")
    domain_pause(domain=other, reason="by hand", actor=oncall)
    with pytest.raises(ValueError, match="not paused by the detector"):
        domain_resume(domain=other, actor=oncall, override_minutes=30, reason="x")
    assert SendingDomain.objects.filter(paused=True).count() == 2


def test_the_api_overrides_and_refuses_with_one_line(paused: SendingDomain, oncall: Any, marketer: Any, api_as: Any) -> None:
    url = f"/api/v1/domains/{paused.domain}/resume"
    assert_error(api_as(oncall).post(url, {"override_minutes": 30}, format="json"), 400, "reason")
    assert_error(api_as(marketer).post(url, {"override_minutes": 30, "reason": "x"}, format="json"), 403)
    response = api_as(oncall).post(url, {"override_minutes": 30, "reason": "cleaned"}, format="json")
    assert response.status_code == 200, response.content
    paused.refresh_from_db()
    assert not paused.paused and paused.override_until is not None


def test_a_plain_resume_ends_an_override(paused: SendingDomain, oncall: Any) -> None:
    domain = override(paused, oncall)
    domain_pause(domain=domain, reason="by hand again", actor=oncall)
    domain_resume(domain=domain, actor=oncall)
    domain.refresh_from_db()
    assert domain.override_until is None and not domain.paused
