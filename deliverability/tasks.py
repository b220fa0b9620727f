"""Celery tasks of deliverability: id-in wrappers over its services."""

from __future__ import annotations

from datetime import datetime

from celery import shared_task
from django.conf import settings

from deliverability.assessments import assessments_due, version_assess
from deliverability.services.detection import detector_run
from deliverability.services.warmup import warmup_review


@shared_task(name="deliverability.tasks.assess_version")
def assess_version(version_id: int) -> str:
    assessment = version_assess(version_id=version_id)
    return assessment.state if assessment else "gone"


@shared_task(name="deliverability.tasks.assess_due")
def assess_due() -> int:
    """Beat: retry versions spamd could not score, with the backoff their assessment set."""
    due = assessments_due()
    for version_id in due:
        version_assess(version_id=version_id)
    return len(due)


@shared_task(name="deliverability.tasks.detect")
def detect(now: str | None = None) -> int:
    """Beat, every minute: the anomaly detector over every domain; returns how many it paused.

    ``now`` (ISO 8601) is for replays and tests: the minutes before it count as complete.
    """
    if not settings.SENDPLANE_DETECTOR["ENABLED"]:
        return 0
    return len(detector_run(now=datetime.fromisoformat(now) if now else None).paused)


@shared_task(name="deliverability.tasks.warmup")
def warmup() -> dict[str, str]:
    """Beat, hourly: judge each warming domain's previous day once (advance, back off or hold its step)."""
    return warmup_review()


@shared_task(name="deliverability.tasks.bulk_senders")
def bulk_senders() -> list[str]:
    """Beat, hourly: record the organisational domains that reached Gmail's bulk-sender volume today or yesterday (for good)."""
    from deliverability.services.bulk_senders import bulk_senders_record

    return [row.org_domain for row in bulk_senders_record()]
