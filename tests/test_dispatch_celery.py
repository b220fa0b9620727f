"""Dispatch with real Celery worker processes, the real broker, PostgreSQL and an SMTP server.

The workers are separate ``celery worker`` processes started by the test
(tests/celery_workers.py) on a RabbitMQ virtual host of their own. They read
and write the committed test database (hence ``transaction=True``), take
tokens from the shared bucket, and speak SMTP to a sink on loopback that
records when each message arrived. The test process plays beat: every tick it
runs the sweeper service while it polls the database until every row is
terminal (bounded waits; the assertions never depend on a sleep).
"""

from __future__ import annotations

import bisect
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from celery import current_app
from django.conf import settings
from django.db import connection

from controlplane.celery import app as celery_app
from deliverability.services import domain_create
from dispatch.models import TERMINAL, Campaign, Message, MessageStatus
from dispatch.services.campaigns import campaign_create
from dispatch.services.hints import SEND_BATCH
from dispatch.services.sweeper import sweep
from dispatch.services.triggers import trigger_accept
from tests.celery_workers import WorkerFleet, app_broker, broker_reachable, database_url, private_broker, purge, worker_env
from tests.conftest import recipients
from tests.smtp_sink import SmtpSink

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TICK = 0.5  # the sweeper's period here (beat runs it every SENDPLANE_DISPATCH_SWEEP_SECONDS)


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    base = os.environ.get("CELERY_BROKER_URL") or settings.CELERY_BROKER_URL
    if not urlsplit(base).scheme.startswith("amqp"):
        pytest.skip(f"needs the RabbitMQ broker (ops/test sets CELERY_BROKER_URL); got {base!r}")
    if not broker_reachable(base):
        pytest.fail(f"RabbitMQ is not reachable at {base}")
    with private_broker(base) as url:
        yield url


@pytest.fixture
def broker(broker_url: str) -> Iterator[str]:
    """This process publishes its hints to the test run's broker; the queue starts and ends empty."""
    with app_broker(celery_app, broker_url):
        purge(celery_app)
        yield broker_url
        purge(celery_app)


@pytest.fixture
def fleet(transactional_db: Any, broker: str, tmp_path: Path) -> Iterator[Callable[..., WorkerFleet]]:
    """Makes worker fleets on the committed test database; every worker is gone at teardown, pass or fail."""
    if connection.vendor != "postgresql":
        pytest.skip("worker processes need a database server (ops/test uses PostgreSQL)")
    fleets: list[WorkerFleet] = []

    def make(email_port: int, log_format: str = "plain", **dispatch: Any) -> WorkerFleet:
        env = worker_env(
            database_url=database_url(connection.settings_dict),
            broker_url=broker,
            secret_key=settings.SECRET_KEY,
            email_port=email_port,
            log_format=log_format,
            **dispatch,
        )
        fleets.append(WorkerFleet(env, tmp_path))
        return fleets[-1]

    try:
        yield make
    finally:
        for made in fleets:
            made.close()


@pytest.fixture
def fast_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def slow_sink() -> Iterator[SmtpSink]:
    with SmtpSink(delay_seconds=0.05) as sink:
        yield sink


# --- helpers ---------------------------------------------------------------------------


def status_counts(campaign: Campaign) -> dict[str, int]:
    return dict(Counter(Message.objects.filter(campaign=campaign).values_list("status", flat=True)))


def tick(domain_id: int, extra_hints: int = 0) -> None:
    """What beat does every period (the sweeper), plus optional duplicate hints, which must be harmless."""
    sweep()
    for _ in range(extra_hints):
        current_app.send_task(SEND_BATCH, args=[domain_id, ""])


def wait_until(
    done: Callable[[], bool], *, timeout: float, every: Callable[[], None], what: str, fleet: WorkerFleet, campaign: Campaign
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout}s; statuses {status_counts(campaign)}\n{fleet.logs()}")
        every()
        time.sleep(TICK)


def all_terminal(campaign: Campaign) -> Callable[[], bool]:
    return lambda: not Message.objects.filter(campaign=campaign).exclude(status__in=TERMINAL).exists()


def busiest_window(times: list[float], width: float = 1.0) -> tuple[int, float]:
    """The most arrivals in any window [t, t + width) that starts at an arrival, and that t."""
    times = sorted(times)
    counts = [(bisect.bisect_left(times, t + width) - i, t) for i, t in enumerate(times)]
    return max(counts, key=lambda c: (c[0], -c[1]), default=(0, 0.0))


_TASK = r"Task dispatch\.tasks\.send_batch\[[^\]]+\]"


def sent_by_worker(fleet: WorkerFleet) -> dict[str, int]:
    """Messages each worker reported sent, from its task-succeeded log lines."""
    out = {}
    for worker in fleet.workers:
        results = re.findall(_TASK + r" succeeded in [0-9.]+s: (\{[^}]*\})", worker.log())
        out[worker.name] = sum(int(n) for result in results for n in re.findall(r"'sent': (\d+)", result))
    return out


def mid_task(log: str) -> bool:
    """The worker has received a send_batch task it has not finished."""
    return len(re.findall(_TASK + " received", log)) > len(re.findall(_TASK + " (?:succeeded|failed|raised|retry)", log))


# --- 1. one bucket across four worker processes ----------------------------------------------

RATE, BURST, N_RATE = 20, 5, 240


def test_bucket_never_exceeds_rate_plus_burst_across_four_worker_processes(
    approved_version: Any, marketer: Any, fast_sink: SmtpSink, fleet: Callable[..., WorkerFleet]
) -> None:
    domain = domain_create(domain="rate.example.com", default_sender="news@rate.example.com", rate_per_second=RATE, burst=BURST)
    campaign = campaign_create(name="Rate", template=approved_version.variant.template, sending_domain=domain, created_by=marketer)
    workers = fleet(fast_sink.port)
    workers.start_many([f"rate{i}" for i in range(4)], pool="prefork", concurrency=1)

    response, _ = trigger_accept(campaign=campaign, idempotency_key="rate", recipients=recipients(N_RATE))
    assert response["accepted"] == N_RATE
    # Hints for one (domain, provider) come from every trigger, the sweeper and each batch's
    # follow-up; one extra per worker per tick keeps all four taking from the bucket at once.
    expected_seconds = (N_RATE - BURST) / RATE
    wait_until(
        all_terminal(campaign), timeout=3 * expected_seconds + 10, every=lambda: tick(domain.pk, extra_hints=4),
        what="every message terminal", fleet=workers, campaign=campaign,
    )  # fmt: skip

    received = fast_sink.received
    pairs = [(r.message_id, r.recipient) for r in received]
    times = sorted(r.at for r in received)
    (peak, peak_at), span = busiest_window(times), times[-1] - times[0]
    per_worker = sent_by_worker(workers)
    print(
        f"\n[rate] N={N_RATE} rate={RATE}/s burst={BURST}: busiest 1 s window {peak} (limit {RATE + BURST}) "
        f"starting +{peak_at - times[0]:.2f}s; span {span:.2f}s (floor {expected_seconds * 0.8:.2f}s); sent per worker {per_worker}"
    )

    assert status_counts(campaign) == {MessageStatus.SENT: N_RATE}
    assert len(pairs) == len(set(pairs)) == N_RATE, "a message reached the SMTP server twice"
    rows = Message.objects.filter(campaign=campaign).select_related("sending_domain")
    assert set(pairs) == {(m.message_id(), m.recipient) for m in rows}
    assert peak <= RATE + BURST, f"{peak} messages reached the SMTP server within one second"
    assert span >= expected_seconds * 0.8, f"{N_RATE} messages in {span:.2f}s: the rate was not applied"
    assert sum(1 for n in per_worker.values() if n) >= 3, f"the sending was not shared between processes: {per_worker}"


# --- 2. kill -9 mid-batch ------------------------------------------------------------------------

BATCH, LEASE, N_KILL = 10, 3, 100


def test_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice(
    campaign: Any, slow_sink: SmtpSink, fleet: Callable[..., WorkerFleet]
) -> None:
    # One SMTP session per worker: the batch hands its messages over one after another, so it has a middle to be killed in.
    workers = fleet(slow_sink.port, batch_size=BATCH, lease_seconds=LEASE, smtp_connections=1)
    first, second = workers.start_many(["kill-a", "kill-b"], pool="solo")  # solo: the worker process is the one sending
    domain_id = campaign.sending_domain_id

    def every() -> None:
        tick(domain_id)

    response, _ = trigger_accept(campaign=campaign, idempotency_key="kill", recipients=recipients(N_KILL))
    assert response["accepted"] == N_KILL
    wait_until(lambda: len(slow_sink.received) >= 2 * BATCH, timeout=30, every=every, what="some sent", fleet=workers, campaign=campaign)

    # kill -9 a worker while it is inside a send_batch task (received, not finished), a little way in:
    # one batch spends >= BATCH x 0.05 s at this SMTP server.
    deadline = time.monotonic() + 15
    while (victim := next((w for w in (first, second) if mid_task(w.log())), None)) is None:
        assert time.monotonic() < deadline, f"no worker was ever seen mid-batch\n{workers.logs()}"
        time.sleep(0.02)
    time.sleep(0.1)
    victim.kill9()
    assert victim.proc.returncode == -9
    at_kill = len(slow_sink.received)
    sending_at_kill = Message.objects.filter(campaign=campaign, status=MessageStatus.SENDING).count()

    workers.start("kill-c", pool="solo")  # the replacement; the survivor and the sweeper carry on meanwhile
    wait_until(all_terminal(campaign), timeout=45, every=every, what="every message terminal", fleet=workers, campaign=campaign)

    rows = list(Message.objects.filter(campaign=campaign).select_related("sending_domain"))
    by_status = Counter(m.status for m in rows)
    received = Counter(slow_sink.pairs())
    sent = {(m.message_id(), m.recipient) for m in rows if m.status == MessageStatus.SENT}
    unknown = [m for m in rows if m.status == MessageStatus.UNKNOWN]
    unknown_pairs = {(m.message_id(), m.recipient) for m in unknown}
    print(
        f"\n[kill] N={N_KILL} batch={BATCH} lease={LEASE}s: killed {victim.name} with {at_kill} received and "
        f"{sending_at_kill} rows sending; final {dict(by_status)}; unknown rows the sink had received: "
        f"{len(unknown_pairs & set(received))}/{len(unknown)}; sent per worker {sent_by_worker(workers)}"
    )

    assert len(rows) == N_KILL and set(by_status) <= {MessageStatus.SENT, MessageStatus.UNKNOWN}, dict(by_status)
    assert 1 <= len(unknown) <= BATCH, f"{len(unknown)} unknown: the kill strands exactly the victim's one batch"
    assert all("lease expired" in m.last_reply for m in unknown), [m.last_reply for m in unknown]
    assert [pair for pair, n in received.items() if n > 1] == [], "a message reached the SMTP server twice"
    assert sent <= set(received), "a row marked sent never reached the SMTP server"
    assert set(received) <= sent | unknown_pairs, "the SMTP server got a message whose row is neither sent nor unknown"
