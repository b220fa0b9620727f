"""The reputation chart right after a send: the current minute's counters are on the axis (issue 15).

The axis used to end at the current minute, truncated, while the counter query
ran up to the current second: a row for the current minute fell one past the
axis (IndexError, a 500) exactly when on-call opens the chart during an incident.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from django.utils import timezone

from deliverability.models import DomainMinute
from deliverability.selectors import domain_minute_series, domain_reputation_history

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent_this_minute(sending_domain: Any) -> Any:
    now = timezone.now().replace(second=0, microsecond=0)
    DomainMinute.objects.create(sending_domain=sending_domain, minute=now, sent=50, bounced_hard=5, complained=1)
    DomainMinute.objects.create(sending_domain=sending_domain, minute=now - timedelta(minutes=1), sent=20)
    return sending_domain


def _mid_minute() -> Any:
    """A moment inside the current minute, never on its boundary (where the old axis happened to be right)."""
    return timezone.now().replace(second=30, microsecond=500)


def test_history_ending_mid_minute_includes_the_current_minute(sent_this_minute: Any) -> None:
    end = _mid_minute()
    points = domain_reputation_history(domain=sent_this_minute, start=end - timedelta(hours=1), end=end, step_minutes=1)
    assert points[-1].start == end.replace(second=0, microsecond=0)
    assert (points[-1].sent, points[-1].bounced_hard, points[-1].complained) == (50, 5, 1)
    assert sum(p.sent for p in points) == 70


def test_the_axis_keeps_its_length_and_ends_with_the_current_minute(sent_this_minute: Any) -> None:
    end = _mid_minute()
    series = domain_minute_series(start=end - timedelta(minutes=5), end=end, domain_ids=[sent_this_minute.pk])
    assert series.minutes[-1] == np.datetime64(end.replace(second=0, microsecond=0, tzinfo=None), "m")
    assert series.counts["sent"][0].tolist() == [0, 0, 0, 20, 50]


def test_minute_aligned_windows_are_unchanged(sent_this_minute: Any) -> None:
    """The detector and the cockpit pass whole minutes: [start, end) stays exactly that."""
    end = timezone.now().replace(second=0, microsecond=0)
    series = domain_minute_series(start=end - timedelta(minutes=3), end=end, domain_ids=[sent_this_minute.pk])
    assert len(series.minutes) == 3 and series.counts["sent"][0].tolist() == [0, 0, 20]


@pytest.mark.parametrize("step", [1, 7, 10, 60])
def test_the_api_answers_with_the_current_minute(sent_this_minute: Any, api_as: Any, oncall: Any, step: int) -> None:
    response = api_as(oncall).get(f"/api/v1/domains/{sent_this_minute.domain}/reputation?hours=1&step_minutes={step}")
    assert response.status_code == 200, response.content
    points = response.json()["points"]
    assert sum(p["sent"] for p in points) == 70
    assert points[-1]["sent"] >= 50 and points[-1]["complained"] == 1


@pytest.mark.parametrize("range_name", ["1h", "24h", "7d", "30d"])
def test_the_admin_chart_draws_the_current_minute(sent_this_minute: Any, staff_client: Any, oncall: Any, range_name: str) -> None:
    url = f"/admin/deliverability/sendingdomain/{sent_this_minute.pk}/chart.json?range={range_name}"
    data = staff_client(oncall).get(url).json()
    assert data["totals"]["sent"] == 70 and data["t"][-1] <= data["now"] - 60 < data["end"]
    assert data["sent_per_minute"][-1] > 0  # the current minute's 50 are in the last bucket, whatever its size
