"""Operators settle unknown rows: list, mark sent, or requeue; nothing else changes."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from dispatch.models import Message, MessageStatus
from dispatch.services.sweeper import leases_expire
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import message_claim
from tests.conftest import recipients

pytestmark = pytest.mark.django_db


@pytest.fixture
def unknown(campaign: Any) -> list[Message]:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(3))
    message_claim(domain=campaign.sending_domain, limit=2)
    leases_expire(now=timezone.now() + timedelta(hours=1))
    return list(Message.objects.filter(status=MessageStatus.UNKNOWN).order_by("id"))


def test_listing_shows_message_ids_and_reasons(campaign: Any, unknown: list[Message]) -> None:
    out = StringIO()
    call_command("resolve_unknown", str(campaign.pk), stdout=out)
    assert unknown[0].message_id() in out.getvalue() and "lease expired" in out.getvalue()
    assert "2 unknown message(s)" in out.getvalue()


def test_requeue_one_sends_it_again_and_leaves_the_other(campaign: Any, unknown: list[Message]) -> None:
    call_command("resolve_unknown", str(campaign.pk), "--requeue", "--message", str(unknown[0].uuid), stdout=StringIO())
    statuses = dict(Message.objects.filter(pk__in=[m.pk for m in unknown]).values_list("pk", "status"))
    assert statuses == {unknown[0].pk: MessageStatus.QUEUED, unknown[1].pk: MessageStatus.UNKNOWN}


def test_mark_all_sent(campaign: Any, unknown: list[Message]) -> None:
    call_command("resolve_unknown", str(campaign.pk), "--sent", stdout=StringIO())
    assert Message.objects.filter(status=MessageStatus.SENT).count() == 2
    assert Message.objects.filter(status=MessageStatus.QUEUED).count() == 1  # the never-claimed one is untouched
