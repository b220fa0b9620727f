"""Counter adds made in one order at the end of the transaction: two transactions adding to the same rows in opposite
orders no longer deadlock (PostgreSQL would fail one of them: a 500 on a trigger, a batch recorded again)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connections, transaction

from controlplane.deferred_adds import deferred_adds
from deliverability.models import DomainMinute
from deliverability.services import counters_add_streams, domain_create

MINUTE = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def opposite_orders(domain_id: int, *, deferred: bool) -> list[BaseException]:
    """Two transactions: one adds to gmail's row then other's, the other the reverse, each holding its first row
    while the other takes its own first."""
    both_first = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def add(provider: str) -> None:
        counters_add_streams(domain_id=domain_id, at=MINUTE, by_provider={provider: {"sent": 1}})

    def run(first: str, second: str) -> None:
        try:
            with transaction.atomic(), (deferred_adds() if deferred else _nothing()):
                add(first)
                both_first.wait()
                add(second)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=order) for order in (("gmail", ""), ("", "gmail"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


class _nothing:  # noqa: N801 - a context manager that does nothing, read like deferred_adds()
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


@pytest.fixture
def domain_id(transactional_db: Any) -> int:
    domain = domain_create(domain="mail.example.com", default_sender="news@mail.example.com")
    for provider in ("gmail", ""):  # the rows exist: each add locks one
        counters_add_streams(domain_id=domain.pk, at=MINUTE, by_provider={provider: {"sent": 1}})
    return int(domain.pk)


def totals(domain_id: int) -> dict[str, int]:
    return dict(DomainMinute.objects.filter(sending_domain_id=domain_id).values_list("provider", "sent"))


@pytest.mark.django_db(transaction=True)
def test_adds_in_opposite_orders_deadlock_when_made_at_once(domain_id: int) -> None:
    """The control: what the deferral prevents (if this stops failing, the next test proves nothing)."""
    errors = opposite_orders(domain_id, deferred=False)
    assert any("deadlock" in str(e).lower() for e in errors), errors


@pytest.mark.django_db(transaction=True)
def test_deferred_adds_in_opposite_orders_both_commit(domain_id: int) -> None:
    assert opposite_orders(domain_id, deferred=True) == []
    assert totals(domain_id) == {"gmail": 3, "": 3}


@pytest.mark.django_db(transaction=True)
def test_deferred_adds_are_summed_and_dropped_with_a_rolled_back_transaction(domain_id: int) -> None:
    boom: Callable[[], None] = lambda: (_ for _ in ()).throw(RuntimeError("boom"))  # noqa: E731
    with pytest.raises(RuntimeError), transaction.atomic(), deferred_adds():
        counters_add_streams(domain_id=domain_id, at=MINUTE, by_provider={"gmail": {"sent": 5}})
        boom()
    with transaction.atomic(), deferred_adds():
        counters_add_streams(domain_id=domain_id, at=MINUTE, by_provider={"gmail": {"sent": 2}})
        with deferred_adds():  # nested: the outermost writes
            counters_add_streams(domain_id=domain_id, at=MINUTE, by_provider={"gmail": {"sent": 3}, "yahoo": {"sent": 1}})
        assert totals(domain_id) == {"gmail": 1, "": 1}  # nothing written before the end
    assert totals(domain_id) == {"gmail": 6, "": 1, "yahoo": 1}
