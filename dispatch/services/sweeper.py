"""The sweeper (beat, every second): wakes due work and settles expired leases.

It re-publishes a send hint for every sending domain that has due rows,
so a lost broker message, a postponed batch or a resumed domain all get
picked up without anyone sleeping or scheduling a broker ETA.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.locking import lock_skip_locked
from dispatch.models import WAITING, AttemptOutcome, CampaignStatus, Message, MessageAttempt, MessageStatus
from dispatch.services.hints import publish_send_batches

LEASE_EXPIRED = "lease expired while sending; see ops runbook"


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
    """Rows still ``sending`` after their lease: an SMTP 250 may have happened, so never re-send.

    Each is recorded as an ``unknown`` attempt (transport ``sweeper``) for its story (dispatch.story). Rows a
    worker's recording holds are skipped: they are getting their outcome (or the next beat takes them).
    """
    marked = timezone.now()  # when it was marked (``now`` is the clock leases are judged by)
    with transaction.atomic():
        expired = Message.objects.filter(status=MessageStatus.SENDING, lease_expires_at__lt=now)
        rows = list(expired.select_for_update(**lock_skip_locked()).values_list("pk", "attempts"))
        if not rows:
            return 0
        Message.objects.filter(pk__in=[pk for pk, _ in rows]).update(
            status=MessageStatus.UNKNOWN, lease_expires_at=None, last_reply=LEASE_EXPIRED
        )
        unknown = {"at": marked, "outcome": AttemptOutcome.UNKNOWN, "reply": LEASE_EXPIRED, "transport": "sweeper"}
        MessageAttempt.objects.bulk_create(MessageAttempt(message_id=pk, number=attempts, **unknown) for pk, attempts in rows)
    return len(rows)


def due_domains(*, now: datetime) -> list[int]:
    due = Message.objects.filter(status__in=WAITING, not_before__lte=now, campaign__status=CampaignStatus.RUNNING)
    due = due.filter(~Q(sending_domain__paused=True))
    return sorted(set(due.values_list("sending_domain_id", flat=True).distinct()))
