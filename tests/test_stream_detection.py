"""The minute pass per provider stream: one provider's shift pauses its stream, a domain-wide shift the domain.

Counters are written as the workers and the feedback path write them (per
domain, provider group and minute); the detector runs over streams and
domains as the beat task runs it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from django.db import connection

from audit.models import AuditEntry
from deliverability.models import DomainMinute, EventType, PauseEvidence, ProviderStream, SendingDomain
from deliverability.selectors import domain_minute_series, stream_minute_series
from deliverability.services import Feedback, counters_add_streams, domain_create, event_record
from deliverability.services.detection import detector_run
from deliverability.services.streams import stream_resume
from tests.conftest import assert_error

pytestmark = pytest.mark.django_db
END = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)  # the first minute not yet complete
SHARES = {"gmail": 50, "microsoft": 30, "yahoo": 10, "": 10}  # messages a minute per stream


@pytest.fixture
def domain(db: Any) -> SendingDomain:
    return domain_create(domain="news.example.com", default_sender="hello@news.example.com")


def traffic(domain: SendingDomain, *, minutes: int = 180, until: datetime = END, shares: dict[str, int] = SHARES) -> None:
    """Healthy minutes: 2% soft bounces on every stream."""
    DomainMinute.objects.bulk_create(
        DomainMinute(sending_domain=domain, provider=provider, minute=until - timedelta(minutes=m + 1), sent=n, bounced_soft=n // 50)
        for provider, n in shares.items()
        for m in range(minutes)
    )


def shift(domain: SendingDomain, providers: list[str], *, last: int = 10, column: str = "bounced_reputation", share: float = 0.3) -> None:
    """The last minutes of these streams refuse ``share`` of their mail."""
    for provider in providers:
        rows = DomainMinute.objects.filter(sending_domain=domain, provider=provider, minute__gte=END - timedelta(minutes=last))
        for row in rows:
            setattr(row, column, int(row.sent * share))
            row.save()


def streams(domain: SendingDomain) -> dict[str, ProviderStream]:
    return {s.provider: s for s in ProviderStream.objects.filter(sending_domain=domain)}


def test_one_providers_shift_pauses_its_stream_only_and_the_domain_sends_on(domain: SendingDomain) -> None:
    traffic(domain)
    shift(domain, ["gmail"])
    result = detector_run(now=END)
    domain.refresh_from_db()
    assert not domain.paused
    by_provider = streams(domain)
    assert set(by_provider) == set(SHARES)  # a stream's row exists once it has counters
    assert [p for p, s in by_provider.items() if s.paused] == ["gmail"]
    gmail = by_provider["gmail"]
    assert gmail.paused_by == "detector" and gmail.paused_reason.startswith("detector at gmail: reputation rate")
    [evidence] = result.paused
    assert (evidence.provider, evidence.signal, evidence.sending_domain_id) == ("gmail", "reputation", domain.pk)
    assert evidence.observed > 0.2 and evidence.baseline < 0.05
    assert AuditEntry.objects.filter(action="stream.pause", target_id=str(domain.pk)).count() == 1
    assert not AuditEntry.objects.filter(action="domain.pause").exists()


def test_the_domain_judges_what_its_other_streams_send_after_one_is_paused(domain: SendingDomain) -> None:
    """The paused stream's counters (DSNs still arriving for it) never pause the domain a second time."""
    traffic(domain)
    shift(domain, ["gmail"], last=40)
    detector_run(now=END - timedelta(minutes=30))
    assert streams(domain)["gmail"].paused
    detector_run(now=END)
    domain.refresh_from_db()
    assert not domain.paused and PauseEvidence.objects.count() == 1


def test_a_domain_wide_shift_pauses_the_domain_not_its_streams(domain: SendingDomain) -> None:
    traffic(domain)
    shift(domain, list(SHARES))
    result = detector_run(now=END)
    domain.refresh_from_db()
    assert domain.paused and domain.paused_by == "detector"
    [evidence] = result.paused
    assert evidence.provider is None and evidence.signal == "reputation"
    assert not any(s.paused for s in streams(domain).values())  # the domain's pause is the one to read and resume
    assert AuditEntry.objects.filter(action="domain.pause").count() == 1


def test_two_streams_shifting_in_the_same_minute_are_a_domain_wide_shift(domain: SendingDomain) -> None:
    traffic(domain)
    shift(domain, ["gmail", "microsoft"])
    result = detector_run(now=END)
    domain.refresh_from_db()
    [evidence] = result.paused
    assert domain.paused and evidence.provider is None
    if evidence.rule == "streams":  # decided by the streams before the domain's own sum
        assert "gmail" in evidence.replies[0] and "microsoft" in evidence.replies[0]
        assert evidence.volume > 0 and evidence.events > 0


def test_a_domain_with_one_stream_is_paused_as_a_domain(domain: SendingDomain) -> None:
    traffic(domain, shares={"": 100})
    shift(domain, [""], column="bounced_hard")
    result = detector_run(now=END)
    domain.refresh_from_db()
    [evidence] = result.paused
    assert domain.paused and evidence.provider is None and evidence.rule == "cusum"
    assert not streams(domain)[""].paused


def test_a_resumed_stream_ramps_and_the_detector_forgets_its_past(domain: SendingDomain, oncall: Any) -> None:
    traffic(domain)
    shift(domain, ["gmail"])
    detector_run(now=END - timedelta(minutes=3))
    gmail = streams(domain)["gmail"]
    assert gmail.paused
    stream_resume(domain=domain, provider="gmail", actor=oncall, reason="provider unblocked us, ticket 12")
    gmail.refresh_from_db()
    assert not gmail.paused and gmail.rate_factor == 0.25 and gmail.detector_epoch == 1
    first = PauseEvidence.objects.get()
    assert first.resumed_at is not None
    assert AuditEntry.objects.filter(action="stream.resume", reason="provider unblocked us, ticket 12").count() == 1
    # The shift goes on: the stream is judged again, cold (its decided state would decide nothing more), and paused
    # again on the minutes since the resume alone, against a cold baseline instead of the one it had learned.
    detector_run(now=END)
    gmail.refresh_from_db()
    assert gmail.paused
    second = PauseEvidence.objects.exclude(pk=first.pk).get()
    assert second.provider == "gmail" and second.minute >= END - timedelta(minutes=3) and second.baseline > first.baseline


def test_an_operators_override_of_the_domain_holds_its_streams_too(domain: SendingDomain) -> None:
    traffic(domain)
    shift(domain, ["gmail"], last=40)
    lapse = END - timedelta(minutes=5)
    SendingDomain.objects.filter(pk=domain.pk).update(override_from=END - timedelta(minutes=50), override_until=lapse)
    detector_run(now=lapse - timedelta(minutes=1))
    assert not streams(domain)["gmail"].paused and not PauseEvidence.objects.exists()  # held off while the override holds
    detector_run(now=END)
    gmail = streams(domain)["gmail"]
    assert gmail.paused and PauseEvidence.objects.get().minute >= lapse - timedelta(minutes=1)  # the detector's view returns when it lapses


def test_counters_land_per_stream_and_the_domain_reads_their_sum(domain: SendingDomain) -> None:
    at = END - timedelta(minutes=1)
    counters_add_streams(domain_id=domain.pk, at=at, by_provider={"gmail": {"sent": 7}, "": {"sent": 3}, "yahoo": {}})
    counters_add_streams(domain_id=domain.pk, at=at, by_provider={"gmail": {"sent": 1, "bounced_hard": 2}})
    rows = {r.provider: (r.sent, r.bounced_hard) for r in DomainMinute.objects.all()}
    assert rows == {"gmail": (8, 2), "": (3, 0)}
    series = domain_minute_series(start=at, end=END, domain_ids=[domain.pk])
    assert series.counts["sent"].tolist() == [[11]] and series.counts["bounced_hard"].tolist() == [[2]]
    per_stream = stream_minute_series(start=at, end=END)
    assert per_stream.streams == [(domain.pk, ""), (domain.pk, "gmail")]
    assert np.array_equal(per_stream.counts["sent"], [[3], [8]])
    assert connection.vendor == "postgresql"


def test_a_verified_event_counts_on_its_messages_stream(domain: SendingDomain) -> None:
    event_record(Feedback(
        event_type=EventType.COMPLAINED, recipient="someone@acme-corp.example", source="webhook:test", dedupe="c-1",
        sending_domain=domain, provider="microsoft", verified=True,
    ))
    event_record(Feedback(
        event_type=EventType.COMPLAINED, recipient="other@gmail.com", source="webhook:test", dedupe="c-2",
        sending_domain=domain, verified=True,  # no message's provider given: the address's group
    ))
    assert {r.provider: r.complained for r in DomainMinute.objects.all()} == {"microsoft": 1, "gmail": 1}


def test_the_api_lists_each_stream_with_its_last_hour_and_the_detectors_evidence(domain: SendingDomain, api_as: Any, oncall: Any) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    traffic(domain, until=now)
    DomainMinute.objects.filter(sending_domain=domain, provider="gmail", minute__gte=now - timedelta(minutes=10)).update(
        bounced_reputation=15
    )
    detector_run(now=now)
    listed = api_as(oncall).get(f"/api/v1/domains/{domain.domain}/streams").json()
    by_provider = {s["provider"]: s for s in listed}
    assert set(by_provider) == {"gmail", "microsoft", "yahoo", "other"}
    gmail = by_provider["gmail"]
    assert gmail["paused"] and gmail["paused_by"] == "detector" and "reputation rate" in gmail["paused_reason"]
    assert gmail["last_hour"]["sent"] == 60 * 50 and gmail["last_hour"]["reputation"] == 150
    assert by_provider["microsoft"]["last_hour"] == {
        "sent": 60 * 30, "bounced": 0, "reputation": 0, "complained": 0, "bounce_rate": 0.0, "complaint_rate": 0.0,
    }
    reputation = api_as(oncall).get(f"/api/v1/domains/{domain.domain}/reputation").json()
    assert [p["provider"] for p in reputation["pauses"]] == ["gmail"]


def test_the_reputation_history_draws_one_stream_when_asked(domain: SendingDomain, api_as: Any, oncall: Any) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    traffic(domain, minutes=30, until=now)
    url = f"/api/v1/domains/{domain.domain}/reputation?hours=1&step_minutes=60"
    whole, gmail, other = (api_as(oncall).get(url + suffix).json() for suffix in ("", "&provider=gmail", "&provider=other"))
    assert (whole["provider"], gmail["provider"], other["provider"]) == (None, "gmail", "other")
    assert sum(p["sent"] for p in whole["points"]) == 30 * 100
    assert sum(p["sent"] for p in gmail["points"]) == 30 * 50 and sum(p["bounced"] for p in gmail["points"]) == 30
    assert sum(p["sent"] for p in other["points"]) == 30 * 10
    assert_error(api_as(oncall).get(url + "&provider=hotmail"), 400, field="provider")


def test_a_small_domains_stream_is_paused_alone_though_the_others_sent_nothing_that_minute(domain: SendingDomain) -> None:
    """A small domain sends to one provider one minute and another the next: the others are still sending if they had
    mail within the hour (stream_detector.RECENT_MINUTES), so one provider's block stays that provider's."""
    DomainMinute.objects.bulk_create(
        DomainMinute(sending_domain=domain, provider=provider, minute=END - timedelta(minutes=m + 1), sent=n, bounced_soft=0)
        for m in range(180)
        for provider, n in (("gmail", 40), ("microsoft", 20 if m % 7 == 3 else 0), ("", 10 if m % 11 == 5 else 0))
        if n
    )
    shift(domain, ["gmail"])
    result = detector_run(now=END)
    domain.refresh_from_db()
    assert not domain.paused
    assert [(e.provider, e.signal) for e in result.paused] == [("gmail", "reputation")]
