"""Celery tasks: id-in wrappers over dispatch services. Running one twice changes nothing."""

from __future__ import annotations

from celery import shared_task

from dispatch.services import jobs as jobs_service
from dispatch.services.guardrails import guardrails_run
from dispatch.services.hints import SEND_BATCH, publish_send_batches
from dispatch.services.retention import retention_run
from dispatch.services.sweeper import sweep as sweep_service
from dispatch.services.worker import batch_send


@shared_task(name=SEND_BATCH)
def send_batch(domain_id: int) -> dict[str, int]:
    result = batch_send(domain_id=domain_id)
    if result.more:
        # Every token found a row: ask for the next batch at once (a hint, not a schedule).
        publish_send_batches([domain_id])
    return result.counts


@shared_task(name="dispatch.tasks.sweep")
def sweep() -> dict[str, int]:
    result = sweep_service()
    return {"published": result.published, "expired": result.expired}


@shared_task(name="dispatch.tasks.guardrails")
def guardrails() -> dict[str, int]:
    """Quarantine the variants that hurt more than their siblings (every minute)."""
    return {"quarantined": len(guardrails_run())}


@shared_task(name="dispatch.tasks.retention")
def retention() -> dict[str, int]:
    """Blank or delete recipient data past its retention, in bounded batches (every 10 minutes; the next tick goes on)."""
    return retention_run().as_dict()


@shared_task(name=jobs_service.JOB_RUN)
def job_run(job_id: int) -> str:
    """Run one long job (dispatch.services.jobs) to its end; while another run holds it, this one does nothing."""
    job = jobs_service.job_run(job_id=job_id)
    return job.state if job is not None else "taken, finished or gone"


@shared_task(name="dispatch.tasks.jobs_resume")
def jobs_resume() -> int:
    """Beat, every minute: publish a run for each job whose runner died (its lease ran out) or whose hint was lost."""
    return len(jobs_service.jobs_resume())
