"""Issue 16: a domain is paused on what its workers hear, within the batch, not a minute later.

Real PostgreSQL and a real SMTP server on loopback that refuses ``reject*``
recipients with "550 5.1.1 No such user". Batches are driven in-process; the
minute pass (``detector_run``) never runs in the first tests, so a pause can
only come from ``batch_watch``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from deliverability import detector
from deliverability.models import BatchWatch, PauseEvidence, SendingDomain
from deliverability.services import counters_add, domain_resume
from deliverability.services.detection import detector_run
from dispatch.models import Message, MessageStatus
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import SIMPLE_VARIABLES
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_batches(settings: Any) -> None:
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "BATCH_SIZE": 10}


def send(campaign: Any, addresses: list[str]) -> int:
    """Trigger and send until the domain runs out of work or is paused; returns the messages handed over."""
    people = [{"address": a, "context": SIMPLE_VARIABLES} for a in addresses]
    trigger_accept(campaign=campaign, idempotency_key=f"k{len(addresses)}-{addresses[0]}", recipients=people)
    for _ in range(1000):
        if not batch_send(domain_id=campaign.sending_domain_id).more:
            break
    return Message.objects.filter(status__in=[MessageStatus.SENT, MessageStatus.FAILED]).count()


def test_a_list_import_with_a_third_unknown_is_paused_within_the_batch(
    campaign: Any, smtp_sink: SmtpSink, small_batches: None, oncall: Any
) -> None:
    addresses = [f"reject{i}@example.org" if i % 3 == 0 else f"ok{i}@example.org" for i in range(600)]
    handed = send(campaign, addresses)
    domain = SendingDomain.objects.get(pk=campaign.sending_domain_id)
    evidence = PauseEvidence.objects.get()
    print(f"\npaused after {handed} messages handed over: {domain.paused_reason}")
    assert domain.paused and domain.paused_by == "detector" and evidence.rule == "batch"
    assert handed <= 120  # a cold domain: 40-80 at a third unknown (tests/test_detector_between_minutes.py), batches of 10
    assert evidence.replies and all("550 5.1.1 No such user" in reply for reply in evidence.replies)
    assert "550 5.1.1 No such user" in domain.paused_reason
    domain_resume(domain=domain, actor=oncall, force=True)  # a resume starts the domain cold: old counts never re-pause it
    detector_run()
    assert not BatchWatch.objects.filter(sending_domain=domain, cusum__gt=0).exists()


def test_a_healthy_send_with_the_usual_refusals_is_never_paused(campaign: Any, smtp_sink: SmtpSink, small_batches: None) -> None:
    addresses = [f"reject{i}@example.org" if i % 50 == 0 else f"ok{i}@example.org" for i in range(600)]  # 2% unknown
    assert send(campaign, addresses) == 600
    assert not SendingDomain.objects.get(pk=campaign.sending_domain_id).paused and not PauseEvidence.objects.exists()


def test_the_minute_pass_leaves_an_active_domain_s_learned_state_for_the_workers(sending_domain: SendingDomain) -> None:
    now = timezone.now()
    for minutes_ago in range(1, 61):  # an hour at 1%: the domain's own baseline replaces the cold one
        counters_add(domain_id=sending_domain.pk, at=now - timedelta(minutes=minutes_ago), sent=500, bounced_hard=5)
    detector_run(now=now)
    row = BatchWatch.objects.get(sending_domain=sending_domain)
    cold_p0, _ = detector.cold_bounce_watch()
    assert row.p0 < cold_p0 / 2 and row.epoch == sending_domain.detector_epoch and row.cusum == 0.0
    # What the worker then judges by: 10 unknown users in 60 are nothing for a cold domain, a shift for this one.
    statistic, decided = detector.bounce_between_minutes(cusum=row.cusum, p0=row.p0, p1=row.p1, exc_events=0, trials=60, events=10)
    cold = detector.bounce_between_minutes(cusum=0.0, p0=cold_p0, p1=detector.cold_bounce_watch()[1], exc_events=0, trials=60, events=10)
    assert decided and not cold[1]
