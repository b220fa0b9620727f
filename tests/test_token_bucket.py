"""The token bucket: at most burst + rate x elapsed, whatever the order of takes, reservations and spends."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deliverability.models import TokenBucket
from deliverability.services import (
    Reservation,
    token_bucket_peek,
    token_bucket_refund,
    token_bucket_release,
    token_bucket_reserve,
    token_bucket_spend,
    token_bucket_take,
)

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


# --- reservations ---------------------------------------------------------------------------


def reserve(wanted: int, *, now: float, key: str = "k", rate: float = 10, burst: int = 10, ttl: float = 60) -> Reservation:
    return token_bucket_reserve(key=key, rate=rate, burst=burst, wanted=wanted, ttl=ttl, now=now)


def test_held_tokens_cannot_be_peeked_reserved_or_taken_by_anyone_else() -> None:
    held = reserve(7, now=0.0)
    assert held.tokens == 7
    assert token_bucket_peek(key="k", rate=10, burst=10, now=0.0) == 3
    assert reserve(5, now=0.0).tokens == 3
    assert token_bucket_take(key="k", rate=10, burst=10, wanted=5, now=0.0) == 0
    assert token_bucket_spend(reservation=held, tokens=7, now=0.0) == 7


def test_a_hold_is_spent_at_hand_over_so_the_refill_meanwhile_is_not_lost() -> None:
    """Spending, not reserving, is what the rate counts: 0.5 s after reserving 5 of 10, 5 are spent and 5 are left."""
    held = reserve(5, now=0.0)
    assert token_bucket_spend(reservation=held, tokens=5, now=0.5) == 5
    assert token_bucket_take(key="k", rate=10, burst=10, wanted=100, now=0.5) == 5


def test_what_a_batch_does_not_use_goes_back() -> None:
    held = reserve(8, now=0.0)
    held = token_bucket_release(reservation=held, keep=6)  # claimed 6 rows of 8
    assert held.tokens == 6 and token_bucket_peek(key="k", rate=10, burst=10, now=0.0) == 4
    assert token_bucket_spend(reservation=held, tokens=4, now=0.0) == 4  # 2 failed to render: their tokens end the hold unspent
    assert token_bucket_take(key="k", rate=10, burst=10, wanted=100, now=0.0) == 6
    token_bucket_release(reservation=held)  # after the spend: nothing left to give back, nothing changes
    assert token_bucket_peek(key="k", rate=10, burst=10, now=0.0) == 0


def test_a_dead_workers_hold_expires_and_its_tokens_come_back() -> None:
    dead = reserve(10, now=0.0, rate=0.0001, ttl=30)  # never spent nor released: its worker was killed
    assert reserve(10, now=29.0, rate=0.0001).tokens == 0
    alive = reserve(10, now=31.0, rate=0.0001)
    assert alive.tokens == 10
    assert token_bucket_spend(reservation=dead, tokens=10, now=32.0) == 0  # a batch that outlived its hold gets only free tokens
    assert token_bucket_spend(reservation=alive, tokens=10, now=32.0) == 10
    assert not TokenBucket.objects.filter(key__contains="/hold/").exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rate=st.floats(min_value=0.5, max_value=500),
    burst=st.integers(min_value=1, max_value=100),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=2), st.sampled_from(["reserve", "spend", "release", "take"]), st.integers(0, 300)),
        min_size=1, max_size=40,
    ),
)
def test_spends_and_takes_never_exceed_burst_plus_rate_and_a_live_hold_is_always_honoured(
    rate: float, burst: int, steps: list[tuple[float, str, int]]
) -> None:
    TokenBucket.objects.filter(key__startswith="prop").delete()
    now, granted, holds = 0.0, 0, []
    for gap, action, n in steps:
        now += gap
        if action == "reserve":
            holds.append(token_bucket_reserve(key="prop", rate=rate, burst=burst, wanted=n, ttl=1000, now=now))
            assert sum(h.tokens for h in holds) <= burst
        elif action == "take":
            granted += token_bucket_take(key="prop", rate=rate, burst=burst, wanted=n, now=now)
        elif holds and action == "spend":
            hold = holds.pop(n % len(holds))
            wanted = n % (hold.tokens + 1)
            assert token_bucket_spend(reservation=hold, tokens=wanted, now=now) == wanted
            granted += wanted
        elif holds:
            hold = holds.pop(n % len(holds))
            holds.append(token_bucket_release(reservation=hold, keep=n % (hold.tokens + 1)))
        assert granted <= burst + rate * now + 1e-6


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservers_never_hold_more_than_the_bucket() -> None:
    holds: list[Reservation] = []

    def hold() -> None:
        try:
            for _ in range(10):
                holds.append(token_bucket_reserve(key="shared", rate=0.0001, burst=50, wanted=4, ttl=60, now=1.0))
        finally:
            connection.close()

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(h.tokens for h in holds) == 50
    assert sum(token_bucket_spend(reservation=h, tokens=h.tokens, now=2.0) for h in holds) == 50
