"""Concurrent batches of one domain: each prepares only messages it holds tokens for, and the rate holds.

Four threads run batches of one domain at once, each with its own database
connection, as four worker processes would. The domain's rate is so low that
no token refills during the test: the bucket's burst is all there is to share.
A batch that rendered a message and then found no token for it would release
it (``tokens_denied``): that is the waste a reservation removes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.core.mail import get_connection
from django.db import connection

from deliverability.models import SendingDomain
from dispatch.models import Message, MessageStatus
from dispatch.services.delivery import Outcome, Prepared, SmtpTransport
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import BatchResult, batch_send
from tests.conftest import recipients

pytestmark = pytest.mark.django_db(transaction=True)

THREADS, BURST, BATCH, ROWS = 4, 12, 5, 40


class CountingTransport(SmtpTransport):
    """SMTP to the sink, counting the messages prepared (rendered, serialized, signed)."""

    def __init__(self, prepared: list[int]) -> None:
        super().__init__(get_connection())
        self.prepared = prepared

    def prepare(self, message: Any, domain: Any) -> Prepared | Outcome:
        ready = super().prepare(message, domain)
        if isinstance(ready, Prepared):
            self.prepared.append(message.pk)  # list.append is atomic under the GIL
        return ready


def _at_once(work: Callable[[], BatchResult], threads: int) -> list[BatchResult | BaseException]:
    """Run ``work`` on ``threads`` threads released together; each closes its own connection."""
    start, results = threading.Barrier(threads), []

    def run() -> None:
        try:
            start.wait()
            results.append(work())
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            results.append(exc)
        finally:
            connection.close()

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return results


@pytest.fixture
def held_to_its_burst(campaign: Any, settings: Any) -> Any:
    """BATCH_SIZE 5, burst 12, a rate that refills nothing while the test runs: 12 messages may go out, no more."""
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "BATCH_SIZE": BATCH, "RECHECK_EVERY": BATCH}
    SendingDomain.objects.filter(pk=campaign.sending_domain_id).update(rate_per_second=0.0001, burst=BURST)
    trigger_accept(campaign=campaign, idempotency_key="hot", recipients=recipients(ROWS))
    return campaign


def test_concurrent_batches_prepare_only_what_they_hold_tokens_for(held_to_its_burst: Any, smtp_sink: Any) -> None:
    prepared: list[int] = []
    domain_id = held_to_its_burst.sending_domain_id
    for _ in range(2):  # the second round finds the bucket empty: nothing is claimed, nothing rendered
        results = _at_once(lambda: batch_send(domain_id=domain_id, transport=CountingTransport(prepared)), THREADS)
        assert not [r for r in results if isinstance(r, BaseException)], results
    sent = smtp_sink.pairs()
    assert len(sent) == BURST, "the burst is every token there was: no more, and none lost"
    assert len(prepared) == len(sent), f"{len(prepared) - len(sent)} messages rendered and signed, then released for lack of tokens"
    assert Message.objects.filter(status=MessageStatus.QUEUED, attempts=0).count() == ROWS - BURST  # never claimed, or released uncounted


def test_a_batch_holds_no_more_rows_than_tokens_while_it_prepares(held_to_its_burst: Any, smtp_sink: Any) -> None:
    """Rows are claimed for reserved tokens only, so the rows ``sending`` at once never outnumber the burst."""
    seen: list[int] = []

    class Watching(CountingTransport):
        def open(self) -> None:
            seen.append(Message.objects.filter(status=MessageStatus.SENDING).count())
            super().open()

    domain_id = held_to_its_burst.sending_domain_id
    _at_once(lambda: batch_send(domain_id=domain_id, transport=Watching([])), THREADS)
    assert seen and max(seen) <= BURST


def test_concurrent_batches_of_a_hot_unlimited_domain_each_get_a_whole_batch(campaign: Any, smtp_sink: Any, settings: Any) -> None:
    """Reservations do not serialize a domain with tokens to spare: every batch reserves, claims and sends a whole batch."""
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "BATCH_SIZE": BATCH, "RECHECK_EVERY": BATCH}
    trigger_accept(campaign=campaign, idempotency_key="hot", recipients=recipients(ROWS))
    prepared: list[int] = []
    results = _at_once(lambda: batch_send(domain_id=campaign.sending_domain_id, transport=CountingTransport(prepared)), THREADS)
    whole = (BATCH, {MessageStatus.SENT: BATCH}, True)
    assert [(r.claimed, r.counts, r.more) if isinstance(r, BatchResult) else r for r in results] == [whole] * THREADS
    assert len(smtp_sink.pairs()) == len(prepared) == THREADS * BATCH
