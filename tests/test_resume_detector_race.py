"""A resume racing the detector's pause of the same domain: never a deadlock, always one consistent outcome.

The detector holds its one ``DetectorState`` row and then locks the domain row
(``domain_pause``); a resume locks only the domain row and bumps
``SendingDomain.detector_epoch``. Before issue 13 the resume also locked
``DetectorState`` (to reset it) while holding the domain row: opposite orders,
and PostgreSQL aborted one of the two with "deadlock detected" whenever the
resume took the row while the detector held its state.

Each round starts from a domain a person paused, with counters the detector
pauses it on, and runs the resume and a detector run in two threads, in one of
three orders. A gate (this test's transaction holding the domain row) makes
the first two exact: the threads queue on the row in the given order, each
observed waiting in ``pg_locks``, then the gate commits.

- ``resume first``: the old deadlock order (the resume gets the row while the
  detector holds its state and waits for the row);
- ``detector first``: the detector decides, finds the person's pause, then the resume;
- ``free``: both released together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.db import connection, connections, transaction

from deliverability import detector
from deliverability.models import DetectorState, DomainMinute, PauseEvidence, SendingDomain
from deliverability.services import domain_create
from deliverability.services.detection import detector_run
from deliverability.services.pause import domain_pause, domain_resume

pytestmark = pytest.mark.django_db(transaction=True)  # the threads see only what commits

END = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)  # the detector's first incomplete minute
ROUNDS = 100
ORDERS = ("resume first", "detector first", "free")
WAIT_SECONDS = 30  # far beyond PostgreSQL's deadlock_timeout (1 s): a deadlock surfaces as an error, not a hang


class Racer(threading.Thread):
    """One side of the race on its own database connection; records its backend pid and any exception."""

    def __init__(self, name: str, work: Callable[[], object], barrier: threading.Barrier | None) -> None:
        super().__init__(name=name, daemon=True)
        self.work, self.barrier = work, barrier
        self.pid: int | None = None
        self.connected = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.pid = cursor.fetchone()[0]
            self.connected.set()
            if self.barrier is not None:
                self.barrier.wait(WAIT_SECONDS)
            self.work()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc
        finally:
            self.connected.set()
            connections.close_all()

    def waiting_for_a_lock(self) -> bool:
        with connection.cursor() as cursor:  # the main thread's connection; pg_locks is read live, not snapshotted
            cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted)", [self.pid])
            return bool(cursor.fetchone()[0])


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.002)


@pytest.fixture
def domain(db: Any) -> SendingDomain:
    """Three quiet hours, then ten minutes of a list import: 30% hard bounces. The detector pauses it on these."""
    domain = domain_create(domain="race.example.com", default_sender="news@race.example.com")
    DomainMinute.objects.bulk_create(
        DomainMinute(sending_domain=domain, minute=END - timedelta(minutes=m + 1), sent=100, bounced_soft=1, bounced_hard=30 * (m < 10))
        for m in range(settings.SENDPLANE_DETECTOR["BACKFILL_MINUTES"])
    )
    return domain


def start_round(domain: SendingDomain, oncall: Any) -> None:
    """A person's pause on the domain, and a detector that has never run (it backfills and decides on the import)."""
    if SendingDomain.objects.get(pk=domain.pk).paused:
        domain_resume(domain=domain, actor=oncall, force=True, reason="next round")
    DetectorState.objects.all().delete()
    PauseEvidence.objects.all().delete()
    domain_pause(domain=domain, reason="held by hand while the list is checked", actor=oncall)


def race(domain: SendingDomain, oncall: Any, order: str) -> list[Racer]:
    barrier = threading.Barrier(2) if order == "free" else None
    resume = Racer("resume", lambda: domain_resume(domain=domain, actor=oncall, force=True, reason="list checked"), barrier)
    run = Racer("detector", lambda: detector_run(now=END), barrier)
    racers = [resume, run] if order != "detector first" else [run, resume]
    if barrier is not None:
        for racer in racers:
            racer.start()
    else:
        with transaction.atomic():  # the gate: hold the row until both wait for it, in order
            SendingDomain.objects.select_for_update().get(pk=domain.pk)
            for racer in racers:
                racer.start()
                wait_until(lambda racer=racer: racer.connected.is_set(), f"{racer.name} connected")
                wait_until(lambda racer=racer: racer.waiting_for_a_lock() or not racer.is_alive(), f"{racer.name} waits for the row")
    for racer in racers:
        racer.join(WAIT_SECONDS)
    return racers


def detector_entry(domain: SendingDomain) -> tuple[bool, int]:
    """(decided, minutes seen) of the domain in the saved detector state."""
    row = DetectorState.objects.get(name="default")
    ids = np.frombuffer(bytes(row.domain_ids), dtype=np.int64).tolist()
    state = detector.DetectorState.from_bytes(bytes(row.state))
    index = ids.index(domain.pk)
    return bool(state.paused[index]), int(state.minutes_seen[index])


def assert_consistent(domain: SendingDomain, order: str, round_: int) -> None:
    where = f"round {round_} ({order})"
    decided, _ = detector_entry(domain)
    assert decided, f"{where}: the detector did not decide to pause the domain"
    domain.refresh_from_db()
    live = list(PauseEvidence.objects.filter(sending_domain=domain, resumed_at__isnull=True))
    if domain.paused:  # the resume came first and the detector read the resumed domain: its pause stands
        assert domain.paused_by == "detector" and len(live) == 1, where
        assert order != "resume first", f"{where}: the detector read the domain before the resume, yet paused it"
    else:  # resumed: no pause of either kind survives, no evidence stays open
        assert (domain.paused_by, live) == ("", []), where
    # The next minute: a resumed domain starts cold (the state has forgotten it); a paused one stays decided.
    detector_run(now=END + timedelta(minutes=1))
    decided, seen = detector_entry(domain)
    backfill = settings.SENDPLANE_DETECTOR["BACKFILL_MINUTES"]
    assert (decided, seen) == ((True, backfill + 1) if domain.paused else (False, 1)), where
    assert SendingDomain.objects.get(pk=domain.pk).paused == domain.paused, f"{where}: the next run changed the outcome"


def test_a_resume_racing_a_detector_pause_never_deadlocks_and_ends_consistent(domain: SendingDomain, oncall: Any) -> None:
    outcomes: dict[str, set[bool]] = {order: set() for order in ORDERS}
    for round_ in range(ROUNDS):
        order = ORDERS[round_ % len(ORDERS)]
        start_round(domain, oncall)
        racers = race(domain, oncall, order)
        assert [r.name for r in racers if r.is_alive()] == [], f"round {round_} ({order}): still running"
        errors = {r.name: repr(r.error) for r in racers if r.error is not None}
        assert errors == {}, f"round {round_} ({order}): {errors}"
        assert_consistent(domain, order, round_)
        outcomes[order].add(SendingDomain.objects.get(pk=domain.pk).paused)
    # The gated orders always end resumed: the detector read the domain before the resume committed.
    assert outcomes["resume first"] == outcomes["detector first"] == {False}
