"""The token bucket: at most burst + rate x elapsed, whatever the order of takes."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deliverability.models import TokenBucket
from deliverability.services import token_bucket_refund, token_bucket_take

pytestmark = pytest.mark.django_db


def test_a_new_bucket_grants_its_burst_then_refills_at_the_rate() -> None:
    assert token_bucket_take(key="k", rate=10, burst=5, wanted=100, now=1000.0) == 5
    assert token_bucket_take(key="k", rate=10, burst=5, wanted=100, now=1000.0) == 0
    assert token_bucket_take(key="k", rate=10, burst=5, wanted=100, now=1000.3) == 3
    assert token_bucket_take(key="k", rate=10, burst=5, wanted=100, now=1010.0) == 5  # never above burst


def test_refund_gives_tokens_back_up_to_the_burst() -> None:
    token_bucket_take(key="k", rate=1, burst=5, wanted=5, now=0.0)
    token_bucket_refund(key="k", burst=5, tokens=3)
    assert token_bucket_take(key="k", rate=1, burst=5, wanted=10, now=0.0) == 3
    token_bucket_refund(key="k", burst=5, tokens=50)
    assert TokenBucket.objects.get(key="k").tokens == 5


def test_a_clock_running_backwards_grants_nothing_extra() -> None:
    token_bucket_take(key="k", rate=10, burst=5, wanted=5, now=100.0)
    assert token_bucket_take(key="k", rate=10, burst=5, wanted=5, now=90.0) == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rate=st.floats(min_value=0.5, max_value=500),
    burst=st.integers(min_value=1, max_value=100),
    steps=st.lists(st.tuples(st.floats(min_value=0, max_value=2), st.integers(min_value=0, max_value=300)), min_size=1, max_size=40),
)
def test_grants_never_exceed_burst_plus_rate_times_elapsed(rate: float, burst: int, steps: list[tuple[float, int]]) -> None:
    TokenBucket.objects.filter(key="prop").delete()
    now, start, granted = 0.0, 0.0, 0
    for gap, wanted in steps:
        now += gap
        got = token_bucket_take(key="prop", rate=rate, burst=burst, wanted=wanted, now=now)
        assert 0 <= got <= wanted
        granted += got
        assert granted <= burst + rate * (now - start) + 1e-6


@pytest.mark.django_db(transaction=True)
def test_concurrent_takers_share_one_budget() -> None:
    grants: list[int] = []

    def take() -> None:
        try:
            for _ in range(20):
                grants.append(token_bucket_take(key="shared", rate=0.0001, burst=50, wanted=3, now=1.0))
        finally:
            connection.close()

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(grants) == 50
