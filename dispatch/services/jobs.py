"""Long work shown with its progress: re-scoring many versions, a large import of suppressions, an erasure.

A job is created whole or not at all: its input is read and checked first (a
list over ``MAX_INPUT_BYTES`` is refused whole, a list with no good line is
refused with the first problems; a bad line among good ones is kept as a
problem of the job, by its line number). Each item waits as a ``JobItem``.

A runner (the Celery task ``dispatch.tasks.job_run``, or the beat's
``jobs_resume`` for a runner that died) claims the job by a conditional update
that takes a lease, then works in chunks: it calls each item's own service
outside any transaction of its own (spamd is a network call; an erasure takes
its own locks), then, in one short transaction, deletes those items, counts
them done and renews the lease. A runner killed mid-chunk leaves the chunk's
items in place: the next run does them again, which changes nothing, since
every item's service is idempotent (``version_assess``, ``suppression_add``,
``address_erase_everywhere``). The job keeps only what is left to do: a
finished (or failed) job has no items, so no erasure's address outlives it.
"""

from __future__ import annotations

import csv
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from kombu.exceptions import KombuError

from audit.services import audit_record
from controlplane.addresses import address_hash, address_key, address_problem, addresses_redacted
from controlplane.correlation import task_headers
from controlplane.errors import ServiceError
from deliverability.assessments import version_assess
from deliverability.models import SendingDomain, Suppression, SuppressionReason
from deliverability.services import suppression_add
from dispatch.models import Job, JobItem, JobKind, JobState
from dispatch.services.erasure import address_erase_everywhere
from templates_registry.models import AssessmentState, VariantVersion

logger = logging.getLogger("sendplane.dispatch")

JOB_RUN = "dispatch.tasks.job_run"
MAX_INPUT_BYTES = 2 * 1024 * 1024  # about 60,000 addresses; under Django's in-memory upload size
MAX_VERSIONS = 10_000
MAX_PROBLEMS = 100  # kept on the job; problem_count has them all
CHUNK = {JobKind.RESCORE: 10, JobKind.SUPPRESSION_IMPORT: 500, JobKind.ERASURE: 20}
CHUNK_SECONDS = 2.0  # a chunk ends early past this, so progress moves and the lease stays short
LEASE = timedelta(seconds=60)  # renewed after every chunk; a job whose lease ran out is resumed by the beat
_HEADER_NAMES = {"address", "email", "e-mail", "email address"}


class JobError(ServiceError):
    """Input a job refuses before it exists."""


class JobInputTooLarge(JobError):
    status = 413


# --- creating a job ---------------------------------------------------------------------------------------------


@dataclass
class _Input:
    """Items read from a list, and what was wrong with the other lines."""

    items: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (line, data)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, what is wrong with it)
    duplicates: int = 0


def suppression_import_job_create(
    *, text: str | bytes, created_by: Any, sending_domain: SendingDomain | None = None
) -> Job:
    """A job that suppresses each address of a CSV list (``address[,domain]`` a line; reason manual).

    A line without a domain suppresses for ``sending_domain`` (None: every domain); a line naming one
    suppresses for that sending domain, which must exist.
    """
    domains = {d.domain.lower(): d.pk for d in SendingDomain.objects.all()}
    read = _read_list(_text_of(text), columns=("address", "domain"))
    parsed = _Input(problems=read.problems, duplicates=read.duplicates)
    seen: set[tuple[str, int | None]] = set()
    for line, data in read.items:
        named = data.get("domain", "").lower().rstrip(".")
        domain_id = domains.get(named) if named else (sending_domain.pk if sending_domain else None)
        if named and domain_id is None:
            parsed.problems.append((line, f"{named} is not one of our sending domains"))
            continue
        if (address_key(data["address"]), domain_id) in seen:
            parsed.duplicates += 1
            continue
        seen.add((address_key(data["address"]), domain_id))
        parsed.items.append((line, {"address": data["address"], "domain": domain_id}))
    scope = sending_domain.domain if sending_domain else "all domains"
    summary = f"Suppress {len(parsed.items):,} addresses ({scope} unless a line names one)"
    return _job_create(JobKind.SUPPRESSION_IMPORT, parsed, created_by, summary)


def erasure_job_create(*, text: str | bytes, created_by: Any) -> Job:
    """A job that erases each address of the list (one a line) everywhere (``address_erase_everywhere``)."""
    read = _read_list(_text_of(text), columns=("address",))
    parsed = _Input(problems=read.problems, duplicates=read.duplicates)
    seen: set[str] = set()
    for line, data in read.items:
        if address_key(data["address"]) in seen:
            parsed.duplicates += 1
            continue
        seen.add(address_key(data["address"]))
        parsed.items.append((line, {"address": data["address"]}))
    return _job_create(JobKind.ERASURE, parsed, created_by, f"Erase {len(parsed.items):,} addresses")


def rescore_job_create(*, version_ids: Iterable[int], created_by: Any) -> Job:
    """A job that checks and scores each version again (the spam sandbox, ``version_assess``)."""
    wanted = list(dict.fromkeys(int(pk) for pk in version_ids))
    if len(wanted) > MAX_VERSIONS:
        raise JobError(f"{len(wanted):,} versions selected, at most {MAX_VERSIONS:,} a job", field="versions")
    found = set(VariantVersion.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    parsed = _Input(
        items=[(0, {"version": pk}) for pk in wanted if pk in found],
        problems=[(0, f"version {pk}: not found") for pk in wanted if pk not in found],
    )
    return _job_create(JobKind.RESCORE, parsed, created_by, f"Re-score {len(parsed.items):,} versions")


def _text_of(text: str | bytes) -> str:
    size = len(text.encode("utf-8")) if isinstance(text, str) else len(text)
    if size > MAX_INPUT_BYTES:
        raise JobInputTooLarge(
            f"the list is {size / 1_048_576:.1f} MB, at most {MAX_INPUT_BYTES / 1_048_576:g} MB: split it into several", field="list"
        )
    if isinstance(text, str):
        return text
    try:
        return text.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JobError(f"the file is not UTF-8 text (byte {exc.start + 1})", field="list") from None


def _read_list(text: str, *, columns: Sequence[str]) -> _Input:
    """Lines of CSV (``columns``, the later ones optional); blank lines, ``#`` comments and a header are skipped."""
    read = _Input()
    rows = csv.reader(text.splitlines())
    header_seen = False
    for line, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if not header_seen and cells[0].lower() in _HEADER_NAMES:
            header_seen = True
            continue
        header_seen = True
        if len(cells) > len(columns):
            read.problems.append((line, f"{len(cells)} columns, expected {','.join(columns)}"))
            continue
        problem = address_problem(cells[0])
        if problem is not None:
            read.problems.append((line, f"not an email address ({problem.removeprefix('invalid address: ')})"))
            continue
        read.items.append((line, dict(zip(columns, cells, strict=False))))  # as given: each service normalises it
    return read


def _job_create(kind: JobKind, parsed: _Input, created_by: Any, summary: str) -> Job:
    problems = [_one_line(f"line {line}: {text}" if line else text) for line, text in sorted(parsed.problems)]
    if not parsed.items:
        first = "; ".join(problems[:3]) or "the list is empty"
        raise JobError(f"nothing to do: {first}", field="list")
    if parsed.duplicates:
        summary += f"; {_count(parsed.duplicates, 'repeated line')} left out"
    if problems:
        summary += f"; {_count(len(problems), 'line' if kind != JobKind.RESCORE else 'version')} refused (see problems)"
    with transaction.atomic():
        job = Job.objects.create(
            kind=kind, total=len(parsed.items), summary=summary[:300], problems=problems[:MAX_PROBLEMS],
            problem_count=len(problems), created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
        )
        JobItem.objects.bulk_create(
            (JobItem(job=job, position=n, line=line, data=data) for n, (line, data) in enumerate(parsed.items)), batch_size=2000
        )
        audit_record(
            action="job.create", target=job, actor=created_by,
            data={"kind": kind.value, "items": job.total, "refused_lines": len(problems), "repeated_lines": parsed.duplicates},
        )
        job_publish(job.pk)
    return job


def _one_line(text: str) -> str:
    """A problem as kept and shown: one line, no address in clear, bounded."""
    return str(addresses_redacted(" ".join(text.split())))[:300]


# --- running it -------------------------------------------------------------------------------------------------


def job_publish(job_id: int, *, correlation_id: str | None = None) -> None:
    """Ask a worker to run the job once the transaction commits (inline, when Celery runs tasks eagerly).

    A lost hint only delays the job: ``jobs_resume`` (beat) publishes again for a job nobody runs.
    """
    headers = task_headers(correlation_id)

    def publish() -> None:
        from dispatch.tasks import job_run as job_run_task  # dispatch.tasks imports this module

        try:
            job_run_task.apply_async(args=[job_id], headers=headers)
        except (KombuError, OSError) as exc:
            logger.warning("broker unreachable, job %s left to the beat's resume: %s", job_id, exc)

    transaction.on_commit(publish)


def job_run(*, job_id: int, chunk: int | None = None, chunks: int | None = None, now: datetime | None = None) -> Job | None:
    """Run the job's items to the end (or ``chunks`` chunks of at most ``chunk`` items); None if another runner
    holds it, or it is finished or gone. An item's unexpected error fails the job (its remaining items dropped);
    a lost database connection does not: the lease runs out and the beat resumes the job."""
    runner = _claim(job_id, now or timezone.now())
    if runner is None:
        return None
    job = Job.objects.get(pk=job_id)
    size = chunk or CHUNK[JobKind(job.kind)]
    for _ in range(chunks) if chunks is not None else itertools.count():
        try:
            more = _chunk_run(job, runner, size)
        except (OperationalError, InterfaceError):
            raise  # the database went away: nothing to record now; the lease runs out and the beat resumes the job
        except Exception as exc:
            _fail(job, runner, exc)
            logger.exception("job %s failed", job_id)
            break
        if not more:
            break
    else:  # stopped at ``chunks`` with items left: hand the job back, so the next run need not wait for the lease
        Job.objects.filter(pk=job_id, runner=runner).update(runner=None, lease_until=None)
    job.refresh_from_db()
    return job


def jobs_resume(*, now: datetime | None = None) -> list[int]:
    """Publish a run for each unfinished job nobody runs: its runner's lease ran out (it died), or it is still
    queued a lease after it was created (its hint was lost). Returns their ids."""
    now = now or timezone.now()
    stale = Job.objects.filter(state__in=[JobState.QUEUED, JobState.RUNNING]).filter(
        Q(lease_until__lt=now) | Q(lease_until__isnull=True, created_at__lt=now - LEASE)
    )
    ids = list(stale.order_by("created_at").values_list("pk", flat=True)[:100])
    for job_id in ids:
        job_publish(job_id)
    return ids


def _claim(job_id: int, now: datetime) -> uuid.UUID | None:
    """Take the job for this run: a conditional update, so of two runners only one gets it."""
    runner = uuid.uuid4()
    taken = Job.objects.filter(pk=job_id, state__in=[JobState.QUEUED, JobState.RUNNING]).filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    ).update(
        state=JobState.RUNNING, runner=runner, lease_until=now + LEASE, started_at=Coalesce("started_at", now), claims=F("claims") + 1
    )
    return runner if taken else None


@dataclass(frozen=True)
class Outcome:
    name: str  # counted in Job.counts
    problem: str = ""


def _chunk_run(job: Job, runner: uuid.UUID, size: int) -> bool:
    """One chunk: each item's service, then the bookkeeping in one short transaction. False: nothing left (or not ours)."""
    items = list(JobItem.objects.filter(job_id=job.pk).order_by("position")[:size])
    if not items:
        _finish(job, runner)
        return False
    handle = _HANDLERS[JobKind(job.kind)]
    done: list[tuple[JobItem, Outcome]] = []
    deadline = time.monotonic() + CHUNK_SECONDS
    for item in items:
        done.append((item, handle(job, item)))
        if time.monotonic() > deadline:
            break
    return _record(job, runner, done)


def _record(job: Job, runner: uuid.UUID, done: list[tuple[JobItem, Outcome]]) -> bool:
    with transaction.atomic():
        locked = Job.objects.select_for_update().filter(pk=job.pk, runner=runner).first()
        if locked is None:
            return False  # another runner took over after our lease ran out; what we did, it does again harmlessly
        JobItem.objects.filter(pk__in=[item.pk for item, _ in done]).delete()
        counts = dict(locked.counts)
        for _, outcome in done:
            counts[outcome.name] = counts.get(outcome.name, 0) + 1
        problems = [_one_line(o.problem) for _, o in done if o.problem]
        locked.done = min(locked.total, locked.done + len(done))
        locked.counts = counts
        locked.problems = [*locked.problems, *problems][:MAX_PROBLEMS]
        locked.problem_count += len(problems)
        locked.lease_until = timezone.now() + LEASE
        locked.save(update_fields=["done", "counts", "problems", "problem_count", "lease_until"])
    return True


def _finish(job: Job, runner: uuid.UUID) -> None:
    with transaction.atomic():
        locked = Job.objects.select_for_update().filter(pk=job.pk, runner=runner, state=JobState.RUNNING).first()
        if locked is None or JobItem.objects.filter(job_id=job.pk).exists():
            return
        locked.state, locked.finished_at, locked.runner, locked.lease_until = JobState.DONE, timezone.now(), None, None
        locked.summary = _summary(locked)[:300]
        locked.save(update_fields=["state", "finished_at", "runner", "lease_until", "summary"])
        audit_record(action="job.finish", target=locked, actor=locked.created_by, data={"state": locked.state, **locked.counts})


def _fail(job: Job, runner: uuid.UUID, exc: BaseException) -> None:
    """Stop the job; the items left are dropped (an erasure's addresses must not stay), and counted in the summary."""
    with transaction.atomic():
        locked = Job.objects.select_for_update().filter(pk=job.pk, runner=runner).first()
        if locked is None:
            return
        left, _ = JobItem.objects.filter(job_id=job.pk).delete()
        reason = _one_line(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        locked.state, locked.finished_at, locked.runner, locked.lease_until = JobState.FAILED, timezone.now(), None, None
        locked.summary = f"Stopped after {locked.done:,} of {locked.total:,}: {reason}; {left:,} not done (submit them again)"[:300]
        locked.save(update_fields=["state", "finished_at", "runner", "lease_until", "summary"])
        audit_record(action="job.finish", target=locked, actor=locked.created_by, data={"state": locked.state, "left": left})


# --- each kind's item, through its own service ---------------------------------------------------------------------


def _rescore(job: Job, item: JobItem) -> Outcome:
    version_id = item.data["version"]
    assessment = version_assess(version_id=version_id)
    if assessment is None:
        return Outcome("gone", f"version {version_id}: no longer exists")
    if assessment.state != AssessmentState.SCORED:
        return Outcome("not_scored", f"version {version_id} ({assessment.version}): not scored: {assessment.not_scored_reason}")
    return Outcome("scored")


def _suppress(job: Job, item: JobItem) -> Outcome:
    address, domain_id = item.data["address"], item.data.get("domain")
    if Suppression.objects.filter(address_hash=address_hash(address), address="").exists():
        # Erased on request (dispatch.services.erasure): suppressed everywhere by hash; a new row would hold it in clear.
        return Outcome("erased_before", f"line {item.line}: erased on request before; already suppressed everywhere")
    domain = SendingDomain.objects.filter(pk=domain_id).first() if domain_id else None
    if domain_id and domain is None:
        return Outcome("refused", f"line {item.line}: its sending domain was deleted meanwhile")
    who = job.created_by.get_username() if job.created_by else "system"
    try:
        _, created = suppression_add(
            address=address, reason=SuppressionReason.MANUAL, sending_domain=domain, source=f"import: {who} (job {job.pk})",
            created_by=job.created_by,
        )
    except ServiceError as exc:
        return Outcome("refused", f"line {item.line}: {exc}")
    return Outcome("added" if created else "already")


def _erase(job: Job, item: JobItem) -> Outcome:
    try:
        address_erase_everywhere(address=item.data["address"], requested_by=job.created_by)
    except ServiceError as exc:
        return Outcome("refused", f"line {item.line}: {exc}")
    return Outcome("erased")  # even an address found nowhere: it is suppressed by hash from now on


_HANDLERS: dict[JobKind, Callable[[Job, JobItem], Outcome]] = {
    JobKind.RESCORE: _rescore,
    JobKind.SUPPRESSION_IMPORT: _suppress,
    JobKind.ERASURE: _erase,
}

# How each outcome reads in the summary of a finished job, in this order.
_OUTCOMES = {
    JobKind.RESCORE: (("scored", "scored"), ("not_scored", "not scored"), ("gone", "gone")),
    JobKind.SUPPRESSION_IMPORT: (
        ("added", "suppressed"), ("already", "already suppressed"), ("erased_before", "erased before"), ("refused", "refused"),
    ),
    JobKind.ERASURE: (("erased", "erased"), ("refused", "refused")),
}


def _summary(job: Job) -> str:
    parts = [f"{job.counts[name]:,} {label}" for name, label in _OUTCOMES[JobKind(job.kind)] if job.counts.get(name)]
    text = ", ".join(parts) or "nothing to do"
    if job.problem_count:
        text += f"; {_count(job.problem_count, 'problem')}"
    return text


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
