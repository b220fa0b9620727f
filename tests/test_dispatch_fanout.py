"""A hot domain spreads over the fleet: a batch that got a whole batch asks for another at once, which reserves other tokens."""

from __future__ import annotations

from typing import Any

import pytest

from deliverability.models import SendingDomain
from dispatch.models import MessageStatus
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import recipients

pytestmark = pytest.mark.django_db


def _hints_published_by_one_batch(campaign: Any, capture: Any, n: int) -> int:
    trigger_accept(campaign=campaign, idempotency_key="hot", recipients=recipients(n))  # its own hint is not captured here
    with capture(execute=False) as callbacks:
        batch_send(domain_id=campaign.sending_domain_id)
    return len(callbacks)


@pytest.fixture
def small_batches(settings: Any) -> None:
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "BATCH_SIZE": 5, "RECHECK_EVERY": 5}


def test_a_hot_domain_with_tokens_and_backlog_for_another_batch_asks_for_one_at_once(
    campaign: Any, smtp_sink: Any, small_batches: None, django_capture_on_commit_callbacks: Any
) -> None:
    assert _hints_published_by_one_batch(campaign, django_capture_on_commit_callbacks, 12) == 1
    assert len(smtp_sink.pairs()) == 5  # and it sent its own batch meanwhile


def test_no_extra_batch_when_less_than_another_whole_batch_is_due(
    campaign: Any, smtp_sink: Any, small_batches: None, django_capture_on_commit_callbacks: Any
) -> None:
    assert _hints_published_by_one_batch(campaign, django_capture_on_commit_callbacks, 8) == 0


def test_a_domain_whose_bucket_cannot_grant_a_whole_batch_stays_on_one_chain(
    campaign: Any, smtp_sink: Any, small_batches: None, django_capture_on_commit_callbacks: Any
) -> None:
    SendingDomain.objects.filter(pk=campaign.sending_domain_id).update(rate_per_second=0.0001, burst=4)
    assert _hints_published_by_one_batch(campaign, django_capture_on_commit_callbacks, 40) == 0
    assert len(smtp_sink.pairs()) == 4


def test_a_rate_limited_domain_fans_out_as_far_as_its_bucket_grants_and_the_extra_batch_renders_nothing_in_vain(
    campaign: Any, smtp_sink: Any, small_batches: None, django_capture_on_commit_callbacks: Any
) -> None:
    """Burst 8, batches of 5: the first batch fans out; the one it asked for reserves the other 3 tokens, for 3 rows."""
    SendingDomain.objects.filter(pk=campaign.sending_domain_id).update(rate_per_second=0.0001, burst=8)
    assert _hints_published_by_one_batch(campaign, django_capture_on_commit_callbacks, 40) == 1
    second = batch_send(domain_id=campaign.sending_domain_id)
    assert (second.claimed, second.counts) == (3, {MessageStatus.SENT: 3})  # none released for lack of tokens
    assert len(smtp_sink.pairs()) == 8
    assert batch_send(domain_id=campaign.sending_domain_id).claimed == 0  # the bucket is empty: nothing claimed, nothing rendered
