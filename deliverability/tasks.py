"""Celery tasks of deliverability: id-in wrappers over its services."""

from __future__ import annotations

from celery import shared_task

from deliverability.assessments import assessments_due, version_assess


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
