"""Reputation history of a domain: counters per step with rates, the detector's pauses; API and admin chart."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from deliverability.models import DomainMinute, PauseEvidence
from deliverability.selectors import domain_reputation_history
from deliverability.services import domain_pause
from tests.conftest import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(sending_domain: Any) -> Any:
    """The last 30 minutes: 100 sent a minute, 2 bounces, and one minute with 40 and a complaint."""
    now = timezone.now().replace(second=0, microsecond=0)
    DomainMinute.objects.bulk_create(
        DomainMinute(
            sending_domain=sending_domain, minute=now - timedelta(minutes=m), sent=100, bounced_soft=2,
            bounced_hard=38 if m == 3 else 0, complained=1 if m == 3 else 0,
        )
        for m in range(1, 31)
    )
    evidence = PauseEvidence(
        minute=now - timedelta(minutes=3), signal="bounce", rule="cusum", baseline=0.02, observed=0.4,
        statistic=30.0, threshold=12.0, volume=100, events=40,
    )
    domain_pause(domain=sending_domain, reason=evidence.summary(), evidence=evidence)
    return sending_domain


def test_history_sums_counters_per_step_and_computes_rates(history: Any) -> None:
    end = timezone.now()
    points = domain_reputation_history(domain=history, start=end - timedelta(minutes=60), end=end, step_minutes=10)
    assert len(points) == 6
    assert sum(p.sent for p in points) == 3000 and sum(p.bounced for p in points) == 98
    worst = max(points, key=lambda p: p.bounce_rate or 0)
    assert worst.bounced_hard == 38 and worst.complained == 1
    assert worst.bounce_rate == pytest.approx(worst.bounced / worst.sent)
    empty = [p for p in points if p.sent == 0]
    assert empty and all(p.bounce_rate is None for p in empty)


@pytest.mark.parametrize("actor", ["marketer", "oncall", "admin_role"])
def test_every_role_reads_the_history_with_the_pause_evidence(history: Any, api_as: Any, actor: str, request: Any) -> None:
    response = api_as(request.getfixturevalue(actor)).get(f"/api/v1/domains/{history.domain}/reputation?hours=1&step_minutes=15")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["paused"] is True and body["paused_by"] == "detector" and body["step_minutes"] == 15
    assert sum(p["sent"] for p in body["points"]) == 3000
    [pause] = body["pauses"]
    assert (pause["signal"], pause["events"], pause["resumed_at"]) == ("bounce", 40, None)
    assert "bounce rate 40.00%" in pause["summary"]


def test_history_is_refused_to_outsiders_and_anonymous(history: Any, api_as: Any, outsider: Any) -> None:
    assert_error(api_as(outsider).get(f"/api/v1/domains/{history.domain}/reputation"), 403)
    assert_error(api_as(None).get(f"/api/v1/domains/{history.domain}/reputation"), 401)


@pytest.mark.parametrize(
    ("query", "field"), [("hours=0", "hours"), ("hours=abc", "hours"), ("step_minutes=0", "step_minutes"), ("color=red", "color")]
)
def test_bad_query_parameters_are_400(history: Any, api_as: Any, oncall: Any, query: str, field: str) -> None:
    assert_error(api_as(oncall).get(f"/api/v1/domains/{history.domain}/reputation?{query}"), 400, field)


def test_unknown_domain_is_404(api_as: Any, oncall: Any) -> None:
    body = assert_error(api_as(oncall).get("/api/v1/domains/nowhere.example/reputation"), 404)
    assert "nowhere.example" in body["error"]


def test_the_admin_domain_page_draws_the_chart_and_lists_the_evidence(history: Any, staff_client: Any, oncall: Any) -> None:
    page = staff_client(oncall).get(f"/admin/deliverability/sendingdomain/{history.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-src="/admin/deliverability/sendingdomain/{history.pk}/chart.json"' in html  # the chart, drawn from its data
    assert "bounce rate 40.00% over 100 messages" in html
    [mark] = staff_client(oncall).get(f"/admin/deliverability/sendingdomain/{history.pk}/chart.json?range=1h").json()["marks"]
    assert mark["actor"] == "detector" and mark["reason"].startswith("bounce rate 40.00% over 100 messages")
