"""The sweeper (beat, every second): wakes due work and settles expired leases.

It re-publishes a send hint for every sending domain that has due rows,
so a lost broker message, a postponed batch or a resumed domain all get
picked up without anyone sleeping or scheduling a broker ETA.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from dispatch.models import WAITING, CampaignStatus, Message, MessageStatus
from dispatch.services.hints import publish_send_batches


@dataclass
class SweepResult:
    published: int
    expired: int


def sweep(*, now: datetime | None = None) -> SweepResult:
    now = now or timezone.now()
    expired = leases_expire(now=now)
    domains = due_domains(now=now)
    publish_send_batches(domains)
    return SweepResult(published=len(domains), expired=expired)


def leases_expire(*, now: datetime) -> int:
    """Rows still ``sending`` after their lease: an SMTP 250 may have happened, so never re-send."""
    return Message.objects.filter(status=MessageStatus.SENDING, lease_expires_at__lt=now).update(
        status=MessageStatus.UNKNOWN, lease_expires_at=None, last_reply="lease expired while sending; see ops runbook"
    )


def due_domains(*, now: datetime) -> list[int]:
    due = Message.objects.filter(status__in=WAITING, not_before__lte=now, campaign__status=CampaignStatus.RUNNING)
    due = due.filter(~Q(sending_domain__paused=True))
    return sorted(set(due.values_list("sending_domain_id", flat=True).distinct()))
