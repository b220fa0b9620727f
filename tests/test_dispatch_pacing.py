"""Pacing: warm-up schedules, per-provider buckets, and ESP transports via EMAIL_BACKEND."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from django.core import mail

from deliverability.models import SendingDomain
from deliverability.services import domain_rate
from dispatch.models import Message, MessageStatus
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import recipients

pytestmark = pytest.mark.django_db


def test_warmup_caps_the_rate_by_step_and_holds_the_last_entry() -> None:
    domain = SendingDomain(rate_per_second=50, warmup_schedule=[1, 5, 20], warmup_started_on=date(2026, 11, 1))
    rates = []
    for step in (0, 1, 2, 9):
        domain.warmup_step = step
        rates.append(domain_rate(domain))
    assert rates == [1, 5, 20, 20]
    domain.warmup_schedule, domain.warmup_step = [1, 500], 1
    assert domain_rate(domain) == 50  # never above the configured rate


def test_a_warming_domain_sends_only_its_days_burst(campaign: Any, smtp_sink: Any) -> None:
    SendingDomain.objects.filter(pk=campaign.sending_domain_id).update(
        rate_per_second=1000, burst=3, warmup_schedule=[0.001], warmup_started_on=date.today()
    )
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(10))
    for _ in range(5):
        batch_send(domain_id=campaign.sending_domain_id)
    assert len(smtp_sink.pairs()) == 3


def test_provider_bucket_paces_only_its_own_stream(campaign: Any, smtp_sink: Any) -> None:
    SendingDomain.objects.filter(pk=campaign.sending_domain_id).update(provider_rates={"gmail": 0.001})
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(5, domain="gmail.com") + recipients(5, prefix="o"))
    for _ in range(5):
        batch_send(domain_id=campaign.sending_domain_id)
    received = [r for _, r in smtp_sink.pairs()]
    assert sum(r.endswith("@gmail.com") for r in received) == 1  # the provider bucket's burst: ceil(0.001) = 1
    assert sum(r.endswith("@example.org") for r in received) == 5
    waiting = Message.objects.filter(provider="gmail", status=MessageStatus.QUEUED)
    assert waiting.count() == 4 and all(m.not_before > m.created_at for m in waiting)  # re-scheduled, not sent


def test_an_esp_backend_sends_through_django_anymail(campaign: Any, settings: Any) -> None:
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    settings.ANYMAIL = {}
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(3))
    batch_send(domain_id=campaign.sending_domain_id)
    assert Message.objects.filter(status=MessageStatus.SENT).count() == 3
    sent = mail.outbox
    assert len(sent) == 3 and all(m.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in sent)
    assert {m.alternatives[0][1] for m in sent} == {"text/html"}
