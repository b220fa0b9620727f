"""Per (sending domain, minute) counters: adds never lost across connections, read back as arrays."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from django.db import connection, connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deliverability.errors import DeliverabilityError
from deliverability.models import DomainMinute
from deliverability.selectors import domain_minute_series
from deliverability.services import counters_add, domain_create

START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def domains(db: Any) -> list[Any]:
    return [domain_create(domain=f"d{i}.example.com", default_sender=f"news@d{i}.example.com") for i in range(3)]


def test_adds_in_one_minute_land_in_one_row(domains: list[Any]) -> None:
    counters_add(domain_id=domains[0].pk, at=START + timedelta(seconds=5), sent=10)
    counters_add(domain_id=domains[0].pk, at=START + timedelta(seconds=59), sent=5, bounced_hard=2)
    row = DomainMinute.objects.get()
    assert (row.minute, row.sent, row.bounced_hard, row.complained) == (START, 15, 2, 0)


def test_an_unknown_counter_is_refused_and_writes_nothing(domains: list[Any]) -> None:
    with pytest.raises(DeliverabilityError, match="unknown counter 'opened'"):
        counters_add(domain_id=domains[0].pk, at=START, sent=1, opened=1)
    assert not DomainMinute.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_adds_from_many_connections_lose_nothing(domains: list[Any]) -> None:
    """Eight threads, each its own PostgreSQL connection, add to the same row at once."""
    domain_id, threads, per_thread = domains[0].pk, 8, 50
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(per_thread):
                counters_add(domain_id=domain_id, at=START, sent=1, complained=1)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    row = DomainMinute.objects.get()
    assert (row.sent, row.complained) == (threads * per_thread, threads * per_thread)


def test_the_series_is_a_dense_domain_by_minute_array_with_zeros_where_nothing_happened(domains: list[Any]) -> None:
    counters_add(domain_id=domains[0].pk, at=START, sent=7)
    counters_add(domain_id=domains[2].pk, at=START + timedelta(minutes=3), sent=4, bounced_soft=1)
    counters_add(domain_id=domains[1].pk, at=START + timedelta(minutes=10), sent=99)  # outside the window
    series = domain_minute_series(start=START, end=START + timedelta(minutes=5))
    assert series.domain_ids == [d.pk for d in domains]
    assert series.minutes[0] == np.datetime64("2026-11-22T12:00") and len(series.minutes) == 5
    assert series.counts["sent"].tolist() == [[7, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 4, 0]]
    assert series.counts["bounced_soft"][2, 3] == 1 and series.counts["bounced_soft"].sum() == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(adds=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9), st.integers(1, 5)), max_size=30))
def test_the_series_equals_the_sum_of_what_was_added(domains: list[Any], adds: list[tuple[int, int, int]]) -> None:
    DomainMinute.objects.all().delete()
    expected = np.zeros((3, 10), dtype=np.int64)
    for d, minute, n in adds:
        counters_add(domain_id=domains[d].pk, at=START + timedelta(minutes=minute, seconds=30), delivered=n)
        expected[d, minute] += n
    series = domain_minute_series(start=START, end=START + timedelta(minutes=10), domain_ids=[d.pk for d in domains])
    assert np.array_equal(series.counts["delivered"], expected)
    assert connection.vendor == "postgresql"  # these tests run against the real database
