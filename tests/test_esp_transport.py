"""The ESP transport: a chunk's messages on many API calls at once, through anymail's real Postmark backend.

The receiving side is a real HTTP server on loopback speaking Postmark's API
(``tests/esp_sink.py``): slow like an ESP, able to refuse in each way Postmark does.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest

from deliverability.models import SendingDomain
from dispatch.models import Message, MessageStatus
from dispatch.services.delivery import ESP_METADATA_KEY, SENT, Outcome, Prepared, open_transport
from dispatch.services.esp import BackendTransport, esp_pools_close
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import _send_chunk, batch_send
from tests.conftest import SIMPLE_VARIABLES, recipients
from tests.esp_sink import TOKEN, EspSink

pytestmark = pytest.mark.django_db
FAR = float("inf")


@pytest.fixture
def postmark(settings: Any) -> Callable[..., Any]:
    """Start a Postmark-speaking sink and point anymail's postmark backend at it; this process's ESP pool ends with the test."""

    @contextmanager
    def start(delay_seconds: float = 0.0, *, anymail: dict[str, Any] | None = None, **options: Any) -> Iterator[EspSink]:
        with EspSink(delay_seconds, **options) as sink:
            settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
            settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": TOKEN, "POSTMARK_API_URL": sink.url} | (anymail or {})
            try:
                yield sink
            finally:
                esp_pools_close(wait_calls=True)  # calls still in flight end before the sink does

    return start


def _esp(settings: Any, concurrency: int) -> None:
    settings.SENDPLANE_ESP = {**settings.SENDPLANE_ESP, "CONCURRENCY": concurrency}


def _prepared(campaign: Any, addresses: list[str]) -> tuple[BackendTransport, list[Prepared]]:
    """The messages as the worker would hand them to the transport (in the order given)."""
    people = [{"address": a, "context": SIMPLE_VARIABLES} for a in addresses]
    trigger_accept(campaign=campaign, idempotency_key=f"k{len(addresses)}-{addresses[0]}", recipients=people)
    transport = open_transport()
    assert isinstance(transport, BackendTransport)
    domain = SendingDomain.objects.get(pk=campaign.sending_domain_id)
    rows = {m.recipient: m for m in Message.objects.filter(campaign=campaign).select_related("version", "sending_domain")}
    prepared = [transport.prepare(rows[a], domain) for a in addresses]
    assert all(isinstance(p, Prepared) for p in prepared)
    return transport, [p for p in prepared if isinstance(p, Prepared)]


def _by_recipient(chunk: list[Prepared], outcomes: dict[int, Outcome]) -> dict[str, Outcome]:
    return {p.message.recipient: outcomes[p.message.pk] for p in chunk if p.message.pk in outcomes}


def test_a_chunk_goes_out_on_many_calls_at_once_each_with_its_outcome(campaign: Any, postmark: Any) -> None:
    with postmark(delay_seconds=0.1) as sink:
        transport, chunk = _prepared(campaign, [f"user{i}@example.org" for i in range(40)])
        outcomes: dict[int, Outcome] = {}
        transport.send_many(chunk, outcomes=outcomes, deadline=FAR)
    assert set(_by_recipient(chunk, outcomes).values()) == {SENT} and len(outcomes) == 40
    assert sorted(c.recipient for c in sink.calls()) == sorted(p.message.recipient for p in chunk)
    assert sink.most_in_flight > 1, "one call at a time"


def test_each_refusal_the_esp_can_give_maps_to_its_outcome(campaign: Any, postmark: Any) -> None:
    with postmark() as sink:
        addresses = ["ok@example.org", "invalid@example.org", "inactive@example.org", "error@example.org"]
        transport, chunk = _prepared(campaign, addresses + ["throttled@example.org", "dropped@example.org"])
        outcomes: dict[int, Outcome] = {}
        transport.send_many(chunk, outcomes=outcomes, deadline=FAR)
    got = {address.partition("@")[0]: (o.status, o.reply.partition(":")[0]) for address, o in _by_recipient(chunk, outcomes).items()}
    assert got == {
        "ok": (MessageStatus.SENT, ""),
        "invalid": (MessageStatus.FAILED, "AnymailRecipientsRefused"),  # 422, ErrorCode 300: the address is refused for good
        "inactive": (MessageStatus.FAILED, "AnymailRecipientsRefused"),  # 422, ErrorCode 406: suppressed at the ESP
        "error": (MessageStatus.DEFERRED, "AnymailRequestsAPIError"),  # 500: the ESP's trouble, retried with backoff
        "throttled": (MessageStatus.DEFERRED, "AnymailRequestsAPIError"),  # 429
        "dropped": (MessageStatus.DEFERRED, "AnymailRequestsAPIError"),  # no answer at all: requests' ConnectionError
    }
    assert len(sink.calls()) == 6


def test_a_refused_recipient_fails_even_when_anymail_is_told_to_ignore_recipient_status(campaign: Any, postmark: Any) -> None:
    with postmark(anymail={"IGNORE_RECIPIENT_STATUS": True}):
        transport, chunk = _prepared(campaign, ["invalid@example.org", "ok@example.org"])
        outcomes: dict[int, Outcome] = {}
        transport.send_many(chunk, outcomes=outcomes, deadline=FAR)
    assert _by_recipient(chunk, outcomes) == {
        "invalid@example.org": Outcome(MessageStatus.FAILED, None, "ESP status ['invalid']"),
        "ok@example.org": SENT,
    }


def test_the_metadata_webhooks_match_on_reaches_the_api_with_the_messages_own_headers(campaign: Any, postmark: Any) -> None:
    with postmark() as sink:
        transport, chunk = _prepared(campaign, ["user0@example.org", "user1@example.org"])
        transport.send_many(chunk, outcomes={}, deadline=FAR)
    bodies = {c.recipient: c.body for c in sink.calls()}
    for prepared in chunk:
        body = bodies[prepared.message.recipient]
        assert body["Metadata"] == {ESP_METADATA_KEY: prepared.message.uuid.hex}
        headers = {h["Name"]: h["Value"] for h in body["Headers"]}
        assert headers["Message-ID"] == prepared.message.message_id()
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" and prepared.message.uuid.hex in headers["Return-Path"]
    assert len({h for b in bodies.values() for h in (x["Value"] for x in b["Headers"] if x["Name"] == "List-Unsubscribe")}) == 2


def test_no_call_starts_after_the_deadline_but_the_first(campaign: Any, postmark: Any) -> None:
    with postmark() as sink:
        transport, chunk = _prepared(campaign, [f"user{i}@example.org" for i in range(5)])
        outcomes: dict[int, Outcome] = {}
        transport.send_many(chunk, outcomes=outcomes, deadline=0.0)  # long past
    assert list(outcomes) == [chunk[0].message.pk]  # the rest have none: they go back to the queue
    assert [c.recipient for c in sink.calls()] == ["user0@example.org"]


def test_calls_in_flight_at_the_deadline_end_with_their_outcome_and_no_later_one_starts(
    campaign: Any, postmark: Any, settings: Any
) -> None:
    _esp(settings, 2)
    with postmark() as sink:
        transport, chunk = _prepared(campaign, [f"user{i}@example.org" for i in range(6)])
        deadline = time.monotonic() + 1.0  # ample for the first two calls to start
        sink.hold_until = deadline  # the ESP answers the first two only once the deadline has passed
        outcomes: dict[int, Outcome] = {}
        transport.send_many(chunk, outcomes=outcomes, deadline=deadline)
    assert _by_recipient(chunk, outcomes) == {"user0@example.org": SENT, "user1@example.org": SENT}
    assert sorted(c.recipient for c in sink.calls()) == ["user0@example.org", "user1@example.org"]


def test_a_worker_stopped_mid_call_starts_nothing_more_and_what_was_in_flight_is_unknown(
    campaign: Any, postmark: Any, settings: Any
) -> None:
    _esp(settings, 2)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit("warm shutdown")

    previous = signal.signal(signal.SIGUSR1, stop)
    try:
        # The first request to arrive stops the worker (its main thread), before any call is answered.
        with postmark(delay_seconds=0.2, on_request=lambda: os.kill(os.getpid(), signal.SIGUSR1)) as sink:
            transport, [*chunk, probe] = _prepared(campaign, [f"user{i}@example.org" for i in range(6)] + ["probe@example.org"])
            outcomes: dict[int, Outcome] = {}
            with pytest.raises(SystemExit):
                _send_chunk(transport, chunk, outcomes, FAR)
            sink.on_request = None
            # The pool's queue is first in, first out: once a later call has returned, every queued one was taken.
            assert transport.send(probe) == SENT
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert {o.status for o in outcomes.values()} == {MessageStatus.UNKNOWN} and len(outcomes) == 6
    started = {c.recipient for c in sink.calls()} - {probe.message.recipient}
    assert started <= {"user0@example.org", "user1@example.org"}, "calls started after the worker was stopped"


def test_each_thread_keeps_its_connection_across_batches(campaign: Any, postmark: Any, settings: Any) -> None:
    _esp(settings, 1)
    with postmark() as sink:
        transport, chunk = _prepared(campaign, [f"user{i}@example.org" for i in range(4)])
        transport.send_many(chunk[:2], outcomes={}, deadline=FAR)
        transport.send_many(chunk[2:], outcomes={}, deadline=FAR)
    assert len(sink.calls()) == 4 and len({c.peer for c in sink.calls()}) == 1


def test_a_batch_goes_through_the_worker_to_the_esp_and_each_row_records_its_outcome(
    campaign: Any, postmark: Any, settings: Any
) -> None:
    with postmark(delay_seconds=0.05) as sink:
        people = recipients(10) + [{"address": a, "context": SIMPLE_VARIABLES} for a in ("invalid@example.org", "error@example.org")]
        trigger_accept(campaign=campaign, idempotency_key="e2e", recipients=people)
        result = batch_send(domain_id=campaign.sending_domain_id)
    assert result.counts == {MessageStatus.SENT: 10, MessageStatus.FAILED: 1, MessageStatus.DEFERRED: 1}
    rows = {m.recipient: m for m in Message.objects.filter(campaign=campaign)}
    assert rows["invalid@example.org"].status == MessageStatus.FAILED and rows["error@example.org"].status == MessageStatus.DEFERRED
    assert rows["error@example.org"].not_before > rows["error@example.org"].created_at  # retried later, with backoff
    assert {c.body["Metadata"][ESP_METADATA_KEY] for c in sink.calls()} == {m.uuid.hex for m in rows.values()}
    assert sink.most_in_flight > 1
