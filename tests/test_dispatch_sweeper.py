"""The sweeper: expired leases become unknown (never re-sent); due work is re-published."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from deliverability.services import domain_pause
from dispatch.models import Message, MessageStatus
from dispatch.services.sweeper import due_domains, leases_expire
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import message_claim
from tests.conftest import recipients

pytestmark = pytest.mark.django_db


def test_expired_lease_is_unknown_and_never_claimed_again(campaign: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(3))
    claimed = message_claim(domain=campaign.sending_domain, limit=2)
    later = timezone.now() + timedelta(hours=1)
    assert leases_expire(now=later) == 2
    assert Message.objects.filter(status=MessageStatus.UNKNOWN).count() == 2
    assert "lease expired" in Message.objects.get(pk=claimed[0].pk).last_reply
    again = message_claim(domain=campaign.sending_domain, limit=10, now=later)
    assert [m.pk for m in again] == list(Message.objects.filter(status=MessageStatus.SENDING).values_list("pk", flat=True))
    assert len(again) == 1


def test_due_domains_skip_paused_domains_and_future_rows(campaign: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(2))
    now = timezone.now()
    assert due_domains(now=now) == [campaign.sending_domain_id]
    Message.objects.update(not_before=now + timedelta(seconds=30))
    assert due_domains(now=now) == []
    Message.objects.update(not_before=now)
    domain_pause(domain=campaign.sending_domain, reason="test")
    assert due_domains(now=now) == []
