"""The SMTP session pool: a chunk on many sessions at once, sessions reused across batches and bounded."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from dispatch.models import Message, MessageStatus
from dispatch.services.smtp_pool import pools_close
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import recipients, relay_at
from tests.smtp_sink import SmtpSink, _free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def slow_sink(settings: Any) -> Iterator[SmtpSink]:
    """A receiver that waits 0.3 s after each message's data: sessions overlap only if the sender overlaps them."""
    with SmtpSink(delay_seconds=0.3) as sink, relay_at(settings, sink):
        yield sink


def _smtp(settings: Any, **values: Any) -> None:
    settings.SENDPLANE_SMTP = {**settings.SENDPLANE_SMTP, **values}
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "BATCH_SIZE": 10, "RECHECK_EVERY": 10}


def _send(campaign: Any, n: int, key: str) -> None:
    trigger_accept(campaign=campaign, idempotency_key=key, recipients=recipients(n, prefix=key))
    batch_send(domain_id=campaign.sending_domain_id)


def test_a_chunk_goes_out_on_several_sessions_at_once(campaign: Any, slow_sink: SmtpSink, settings: Any) -> None:
    _smtp(settings, CONNECTIONS=10)
    _send(campaign, 10, "wide")
    peers = {r.peer for r in slow_sink.received}
    assert len(slow_sink.received) == 10 and len(peers) > 1, "one session spoke the whole chunk"
    assert Message.objects.filter(campaign=campaign, status=MessageStatus.SENT).count() == 10


def test_one_connection_allowed_means_one_session_reused_across_batches(campaign: Any, slow_sink: SmtpSink, settings: Any) -> None:
    _smtp(settings, CONNECTIONS=1, DELIVERIES_PER_CONNECTION=100)
    _send(campaign, 3, "first")
    _send(campaign, 3, "second")
    assert len({r.peer for r in slow_sink.received}) == 1


def test_a_session_is_closed_after_its_deliveries(campaign: Any, slow_sink: SmtpSink, settings: Any) -> None:
    _smtp(settings, CONNECTIONS=1, DELIVERIES_PER_CONNECTION=3)
    _send(campaign, 7, "bounded")
    per_session = sorted(Counter(r.peer for r in slow_sink.received).values())
    assert per_session == [1, 3, 3]


def test_an_unreachable_relay_sends_the_batch_back_to_the_queue(campaign: Any, settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", _free_port()  # nothing listens there
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 2
    pools_close()
    trigger_accept(campaign=campaign, idempotency_key="down", recipients=recipients(4, prefix="down"))
    with pytest.raises(OSError):
        batch_send(domain_id=campaign.sending_domain_id)
    pools_close()
    rows = Message.objects.filter(campaign=campaign)
    assert {m.status for m in rows} == {MessageStatus.QUEUED} and {m.attempts for m in rows} == {0}


def test_a_kept_session_the_relay_closed_is_reopened_and_nothing_is_deferred(campaign: Any, slow_sink: SmtpSink, settings: Any) -> None:
    _smtp(settings, CONNECTIONS=1, DELIVERIES_PER_CONNECTION=100)
    _send(campaign, 2, "before")
    slow_sink.restart()  # the session this process kept is closed under it
    _send(campaign, 2, "after")
    rows = Message.objects.filter(campaign=campaign)
    assert {m.status for m in rows} == {MessageStatus.SENT} and {m.attempts for m in rows} == {1}
    assert len({r.peer for r in slow_sink.received}) == 2


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
def test_every_reply_means_the_same_with_or_without_pipelining(campaign: Any, settings: Any, pipelining: bool) -> None:
    """MAIL, RCPT and DATA in one write when the server offers PIPELINING: refusals still land where they belong."""
    people = [{"address": a, "context": r["context"]} for a, r in zip(
        ["ok1@example.org", "reject1@example.org", "tempfail1@example.org", "datafail1@example.org", "ok2@example.org"],
        recipients(5), strict=True,
    )]
    _smtp(settings, CONNECTIONS=1)  # one session speaks all five: each refusal must leave it ready for the next
    with SmtpSink(pipelining=pipelining) as sink, relay_at(settings, sink):
        trigger_accept(campaign=campaign, idempotency_key="replies", recipients=people)
        batch_send(domain_id=campaign.sending_domain_id)
        status = dict(Message.objects.filter(campaign=campaign).values_list("recipient", "status"))
        codes = dict(Message.objects.filter(campaign=campaign).values_list("recipient", "last_code"))
        assert sorted(r for _, r in sink.pairs()) == ["ok1@example.org", "ok2@example.org"]
    assert status == {
        "ok1@example.org": MessageStatus.SENT, "ok2@example.org": MessageStatus.SENT, "reject1@example.org": MessageStatus.FAILED,
        "tempfail1@example.org": MessageStatus.DEFERRED, "datafail1@example.org": MessageStatus.FAILED,
    }
    assert (codes["reject1@example.org"], codes["tempfail1@example.org"], codes["datafail1@example.org"]) == (550, 451, 552)


def test_a_domain_with_its_own_limits_gets_its_own_sessions(campaign: Any, slow_sink: SmtpSink, settings: Any) -> None:
    """The relay allows 10 sessions of 100 messages; the domain asks for 2 sessions of 3: the domain's limits hold."""
    _smtp(settings, CONNECTIONS=10, DELIVERIES_PER_CONNECTION=100)
    domain = campaign.sending_domain
    domain.smtp_connections, domain.smtp_deliveries_per_connection = 2, 3
    domain.save(update_fields=["smtp_connections", "smtp_deliveries_per_connection"])
    _send(campaign, 10, "own")
    per_session = Counter(r.peer for r in slow_sink.received)
    assert sum(per_session.values()) == 10
    assert max(per_session.values()) <= 3 and len(per_session) >= 4, per_session
    assert slow_sink.most_sessions_at_once <= 2, "the domain's connection limit was exceeded"


def test_a_domain_never_gets_more_sessions_than_the_relay_allows(campaign: Any, slow_sink: SmtpSink, settings: Any) -> None:
    _smtp(settings, CONNECTIONS=1, DELIVERIES_PER_CONNECTION=100)
    domain = campaign.sending_domain
    domain.smtp_connections = 50
    domain.save(update_fields=["smtp_connections"])
    _send(campaign, 4, "capped")
    assert len({r.peer for r in slow_sink.received}) == 1


def test_a_stop_while_a_chunk_is_in_flight_reaches_the_caller_and_nothing_more_starts(slow_sink: SmtpSink, settings: Any) -> None:
    """SystemExit in the waiting thread (a worker being stopped) is not one message's result: it propagates."""
    import signal
    import time

    from django.core.mail import get_connection

    from dispatch.services.smtp_pool import session_pool

    _smtp(settings, CONNECTIONS=1)
    pool = session_pool(get_connection())
    started: list[int] = []

    def work(session: Any, item: int) -> int:
        started.append(item)
        time.sleep(0.3)
        return item

    def stop(*_: Any) -> None:
        raise SystemExit(143)

    previous = signal.signal(signal.SIGALRM, stop)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(SystemExit):
            pool.map(work, list(range(5)))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(0.5)
    assert started == [0], "messages queued behind the stop were still handed over"


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_payload_not_known_to_be_dot_free_is_dot_stuffed(campaign: Any, settings: Any, pipelining: bool) -> None:
    """Lines starting with '.', one of them alone (which would end DATA early: SMTP smuggling), arrive as they were."""
    from django.core.mail import get_connection

    from dispatch.services.delivery import SENT, Prepared, _exchange
    from dispatch.services.smtp_pool import session_pool

    trigger_accept(campaign=campaign, idempotency_key="dots", recipients=recipients(1, prefix="dots"))
    message = Message.objects.select_related("sending_domain").get(campaign=campaign)  # the pool's threads have no test database
    raw = b"Message-ID: <dots@x>\r\nSubject: dots\r\n\r\n.first\r\n.\r\nMAIL FROM:<evil@x>\r\n..two\r\nend"
    with SmtpSink(pipelining=pipelining) as sink, relay_at(settings, sink):
        results = session_pool(get_connection()).map(_exchange, [Prepared(message, raw, message.recipient)])
    assert results == [SENT]
    assert sink.received[0].raw.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n") + b"\n"
