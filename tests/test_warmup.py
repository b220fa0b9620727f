"""Issue 16: warm-up follows reputation. The step advances only on a healthy, used day, backs off on a bad one, and caps
the day's volume. Counters are real DomainMinute rows in PostgreSQL; the worker sends to a real SMTP server on loopback."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from audit.models import AuditEntry
from deliverability.models import DomainMinute, PauseEvidence, SendingDomain
from deliverability.services import domain_create, domain_rate
from deliverability.services.warmup import daily_remaining, warmup_review
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import recipients

pytestmark = pytest.mark.django_db
TODAY = date(2026, 11, 20)


@pytest.fixture
def warming(db: Any) -> SendingDomain:
    return domain_create(
        domain="new.example.com", default_sender="news@new.example.com", rate_per_second=100,
        warmup_schedule=[1, 5, 20, 50], warmup_daily_caps=[500, 2000, 10000, 50000], warmup_started_on=TODAY - timedelta(days=5),
    )


def yesterday(domain: SendingDomain, **counts: int) -> None:
    """The previous UTC day's counters, spread over a few minutes."""
    start = datetime.combine(TODAY - timedelta(days=1), time(12), tzinfo=UTC)
    per = {name: value // 4 for name, value in counts.items()}
    DomainMinute.objects.bulk_create(DomainMinute(sending_domain=domain, minute=start + timedelta(minutes=m), **per) for m in range(4))


def step(domain: SendingDomain) -> int:
    domain.refresh_from_db()
    return domain.warmup_step


def test_a_healthy_used_day_advances_one_step_and_the_rate_follows(warming: SendingDomain) -> None:
    yesterday(warming, sent=400, bounced_hard=4, complained=0, deferred=8)  # 80% of the 500 cap, 1% bounces, 2% deferred
    assert warmup_review(today=TODAY) == {"new.example.com": "advance"}
    assert step(warming) == 1 and domain_rate(warming) == 5
    entry = AuditEntry.objects.get(action="domain.warmup")
    assert (entry.reason, entry.data["from_step"], entry.data["to_step"], entry.data["sent"]) == ("advance", 0, 1, 400)
    assert warmup_review(today=TODAY) == {}  # once a day


@pytest.mark.parametrize(
    ("counts", "why"),
    [
        ({"sent": 400, "deferred": 200}, "deferrals"),  # a provider pushing back
        ({"sent": 400, "complained": 4}, "complaints"),  # 1%
        ({"sent": 400, "bounced_hard": 40}, "bounces"),  # 10%
    ],
)
def test_an_unhealthy_day_backs_off_a_step(warming: SendingDomain, counts: dict[str, int], why: str) -> None:
    SendingDomain.objects.filter(pk=warming.pk).update(warmup_step=2)
    yesterday(warming, **counts)
    assert warmup_review(today=TODAY) == {"new.example.com": "back off"}, why
    assert step(warming) == 1


def test_a_detector_pause_that_day_backs_off(warming: SendingDomain) -> None:
    SendingDomain.objects.filter(pk=warming.pk).update(warmup_step=1)
    yesterday(warming, sent=1500)
    evidence = PauseEvidence.objects.create(
        sending_domain=warming, minute=datetime.combine(TODAY, time(), tzinfo=UTC), signal="bounce", rule="cusum",
        baseline=0.02, observed=0.3, statistic=20, threshold=12, volume=100, events=30,
    )
    PauseEvidence.objects.filter(pk=evidence.pk).update(created_at=datetime.combine(TODAY - timedelta(days=1), time(15), tzinfo=UTC))
    assert warmup_review(today=TODAY) == {"new.example.com": "back off"} and step(warming) == 0


def stream_yesterday(domain: SendingDomain, provider: str, **counts: int) -> None:
    start = datetime.combine(TODAY - timedelta(days=1), time(13), tzinfo=UTC)
    DomainMinute.objects.create(sending_domain=domain, provider=provider, minute=start, **counts)


def test_one_provider_deferring_the_new_domain_holds_it_back_though_the_sum_looks_healthy(warming: SendingDomain) -> None:
    SendingDomain.objects.filter(pk=warming.pk).update(warmup_step=2)
    stream_yesterday(warming, "", sent=6000, deferred=20)
    stream_yesterday(warming, "microsoft", sent=200, deferred=120)  # 37% of Microsoft's mail deferred; 2% of the day's
    assert warmup_review(today=TODAY) == {"new.example.com": "back off"} and step(warming) == 1
    entry = AuditEntry.objects.get(action="domain.warmup")
    assert entry.data["stream"] == "microsoft" and entry.data["deferral_rate"] < 0.05


def test_a_provider_with_too_little_mail_to_judge_does_not_decide(warming: SendingDomain) -> None:
    stream_yesterday(warming, "", sent=400, deferred=4)
    stream_yesterday(warming, "yahoo", sent=20, deferred=10)  # half deferred, but 20 messages say little
    assert warmup_review(today=TODAY) == {"new.example.com": "advance"}
    assert "stream" not in AuditEntry.objects.get(action="domain.warmup").data


def test_a_quiet_or_middling_day_holds(warming: SendingDomain) -> None:
    yesterday(warming, sent=100)  # under half the 500 cap: the step was not used
    assert warmup_review(today=TODAY) == {"new.example.com": "hold"} and step(warming) == 0


def test_the_worker_stops_at_the_day_s_cap(campaign: Any, smtp_sink: Any) -> None:
    SendingDomain.objects.filter(pk=campaign.sending_domain_id).update(
        warmup_schedule=[1000], warmup_daily_caps=[7], warmup_started_on=date.today() - timedelta(days=1),
    )
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(20))
    for _ in range(10):
        batch_send(domain_id=campaign.sending_domain_id)
    assert len(smtp_sink.pairs()) == 7
    assert daily_remaining(SendingDomain.objects.get(pk=campaign.sending_domain_id)) == 0
