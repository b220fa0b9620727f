"""Long jobs (dispatch.services.jobs): created whole or not at all, run in chunks, resumed after a runner dies,
idempotent, problems by line without an address in clear, an erasure that keeps no address, and the admin's
pages as the permission table says."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from celery import current_app
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.serializers.json import DjangoJSONEncoder
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from access.permissions import Capability
from audit.models import AuditEntry
from deliverability.models import SendingDomain, Suppression
from deliverability.services import suppression_add
from dispatch.admin_jobs import JobAdmin
from dispatch.models import Job, JobItem, JobKind, JobState
from dispatch.services import jobs
from dispatch.services.erasure import address_erase_everywhere
from templates_registry.models import VariantVersion
from tests.test_permission_table import LOGGED_IN, holds, make_user

pytestmark = pytest.mark.django_db


def addresses(n: int, *, prefix: str = "reader") -> list[str]:
    return [f"{prefix}{i}@example.org" for i in range(n)]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids the services asked a worker to run (nothing reaches the broker)."""
    asked: list[int] = []
    monkeypatch.setattr(jobs, "job_publish", lambda job_id, **_: asked.append(job_id))
    return asked


def text_of_job_rows(job: Job) -> str:
    """Every column of the job and its items, as text."""
    rows = [*Job.objects.filter(pk=job.pk).values(), *JobItem.objects.filter(job=job).values()]
    return json.dumps(rows, cls=DjangoJSONEncoder)


# --- creating: refused whole, or created with its problems ----------------------------------------------------


def test_import_reads_csv_lines_and_reports_each_bad_line_without_an_address(
    marketer: User, sending_domain: SendingDomain, published: list[int]
) -> None:
    text = "\n".join([
        "address,domain",  # a header
        "ana@example.org",
        "not an address",
        "bob@example.org,mail.example.com",
        "cy@example.org,a,b",  # three columns
        "",
        "# a comment",
        "dee@example.org,unknown.example.net",
        "ANA@example.org",  # a repeat, in another case
        "eve@exa mple.org",
    ])
    job = jobs.suppression_import_job_create(text=text, created_by=marketer)

    assert (job.kind, job.state, job.total, job.done) == (JobKind.SUPPRESSION_IMPORT, JobState.QUEUED, 2, 0)
    assert [p.split(":")[0] for p in job.problems] == ["line 3", "line 5", "line 8", "line 10"]
    assert job.problems[0].startswith("line 3: not an email address")
    assert job.problems[1] == "line 5: 3 columns, expected address,domain"
    assert job.problems[2] == "line 8: unknown.example.net is not one of our sending domains"
    assert job.problem_count == 4
    assert "1 repeated line left out" in job.summary and "4 lines refused" in job.summary
    assert not any(name in json.dumps(job.problems) for name in ("cy@", "dee@", "eve@", "example.org"))
    items = list(JobItem.objects.filter(job=job).values_list("line", "data"))
    assert items == [(2, {"address": "ana@example.org", "domain": None}), (4, {"address": "bob@example.org", "domain": sending_domain.pk})]
    assert published == [job.pk]
    entry = AuditEntry.objects.get(action="job.create")
    assert (entry.actor, entry.data["items"], entry.data["refused_lines"]) == (marketer, 2, 4)


def test_a_list_over_the_size_limit_is_refused_whole_and_creates_nothing(marketer: User, published: list[int]) -> None:
    line = b"someone@example.org\n"
    too_big = line * (jobs.MAX_INPUT_BYTES // len(line) + 1)
    with pytest.raises(jobs.JobInputTooLarge) as refused:
        jobs.suppression_import_job_create(text=too_big, created_by=marketer)
    assert refused.value.status == 413 and "at most 2 MB" in str(refused.value)
    assert (Job.objects.count(), JobItem.objects.count(), AuditEntry.objects.count(), published) == (0, 0, 0, [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "the list is empty"), ("nobody\nsomeone at example.org", "line 1: not an email address"), (b"\xff\xfe\x00", "not UTF-8")],
)
def test_a_list_with_nothing_to_do_is_refused_with_one_clear_error(marketer: User, text: Any, expected: str) -> None:
    with pytest.raises(jobs.JobError) as refused:
        jobs.suppression_import_job_create(text=text, created_by=marketer)
    assert expected in str(refused.value) and "\n" not in str(refused.value)
    assert Job.objects.count() == 0


# --- running: chunks, resume, idempotence ---------------------------------------------------------------------------


def test_an_import_runs_in_chunks_counting_each_done(marketer: User, published: list[int]) -> None:
    job = jobs.suppression_import_job_create(text="\n".join(addresses(25)), created_by=marketer)

    after_one = jobs.job_run(job_id=job.pk, chunk=10, chunks=1)
    assert after_one is not None
    assert (after_one.state, after_one.done, JobItem.objects.filter(job=job).count()) == (JobState.RUNNING, 10, 15)
    assert Suppression.objects.count() == 10
    assert after_one.lease_until is None  # handed back: the next run goes on at once

    finished = jobs.job_run(job_id=job.pk, chunk=10)
    assert finished is not None
    assert (finished.state, finished.done, finished.total) == (JobState.DONE, 25, 25)
    assert finished.counts == {"added": 25}
    assert finished.summary == "25 suppressed"
    assert finished.finished_at is not None and finished.claims == 2
    assert JobItem.objects.filter(job=job).count() == 0
    assert set(Suppression.objects.values_list("address", flat=True)) == set(addresses(25))
    assert Suppression.objects.filter(reason="manual", created_by=marketer, sending_domain=None).count() == 25


def test_a_runner_that_died_mid_chunk_is_resumed_from_what_is_left_and_repeats_nothing(
    marketer: User, published: list[int]
) -> None:
    job = jobs.suppression_import_job_create(text="\n".join(addresses(12)), created_by=marketer)
    jobs.job_run(job_id=job.pk, chunk=4, chunks=1)
    # The next runner claimed it, did three items of its chunk and died before counting them: the rows are there,
    # the items too, and its lease holds the job until it runs out.
    assert jobs._claim(job.pk, timezone.now()) is not None
    assert jobs.job_run(job_id=job.pk) is None
    claimed = Job.objects.get(pk=job.pk)
    for item in JobItem.objects.filter(job=job).order_by("position")[:3]:
        jobs._HANDLERS[JobKind.SUPPRESSION_IMPORT](claimed, item)
    assert (Suppression.objects.count(), JobItem.objects.filter(job=job).count(), claimed.done) == (7, 8, 4)

    later = timezone.now() + jobs.LEASE + timedelta(seconds=1)
    assert jobs.jobs_resume(now=later) == [job.pk]
    assert published == [job.pk, job.pk]
    resumed = jobs.job_run(job_id=job.pk, now=later)
    assert resumed is not None and resumed.state == JobState.DONE
    assert resumed.done == 12 and resumed.counts == {"added": 9, "already": 3}
    assert Suppression.objects.count() == 12  # one each: the repeated items changed nothing
    assert AuditEntry.objects.filter(action="suppression.add").count() == 12


def test_running_a_finished_job_again_changes_nothing(marketer: User, published: list[int]) -> None:
    job = jobs.suppression_import_job_create(text="\n".join(addresses(5)), created_by=marketer)
    jobs.job_run(job_id=job.pk)
    entries, rows = AuditEntry.objects.count(), Suppression.objects.count()

    assert jobs.job_run(job_id=job.pk, now=timezone.now() + timedelta(days=1)) is None
    assert jobs.jobs_resume(now=timezone.now() + timedelta(days=1)) == []
    assert (AuditEntry.objects.count(), Suppression.objects.count()) == (entries, rows)
    assert Job.objects.get(pk=job.pk).claims == 1


def test_of_two_runners_only_one_claims_the_job(marketer: User, published: list[int]) -> None:
    job = jobs.erasure_job_create(text="gone@example.org", created_by=marketer)
    now = timezone.now()
    assert jobs._claim(job.pk, now) is not None
    assert jobs._claim(job.pk, now) is None
    assert jobs._claim(job.pk, now + jobs.LEASE + timedelta(seconds=1)) is not None  # the first one's lease ran out


def test_a_job_whose_hint_was_lost_is_published_again_by_the_beat(marketer: User, published: list[int]) -> None:
    job = jobs.suppression_import_job_create(text="a@example.org", created_by=marketer)
    assert jobs.jobs_resume(now=timezone.now()) == []  # just created: its hint is on its way
    assert jobs.jobs_resume(now=timezone.now() + jobs.LEASE + timedelta(seconds=1)) == [job.pk]


def test_an_item_that_fails_unexpectedly_fails_the_job_and_drops_what_is_left(
    admin_role: User, published: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = jobs.erasure_job_create(text="\n".join(addresses(6, prefix="gone")), created_by=admin_role)
    real = jobs._HANDLERS[JobKind.ERASURE]
    calls: list[int] = []

    def flaky(job: Job, item: JobItem) -> jobs.Outcome:
        calls.append(item.position)
        if item.position == 3:
            raise RuntimeError("disk on fire")
        return real(job, item)

    monkeypatch.setitem(jobs._HANDLERS, JobKind.ERASURE, flaky)
    failed = jobs.job_run(job_id=job.pk, chunk=2)
    assert failed is not None and failed.state == JobState.FAILED
    assert failed.done == 2 and failed.summary == "Stopped after 2 of 6: RuntimeError: disk on fire; 4 not done (submit them again)"
    assert JobItem.objects.filter(job=job).count() == 0  # no address waits in clear for a run that will not come
    assert "gone" not in text_of_job_rows(failed)


# --- each kind ---------------------------------------------------------------------------------------------------


def test_an_erasure_job_erases_each_address_and_keeps_none_afterwards(
    admin_role: User, sending_domain: SendingDomain, published: list[int]
) -> None:
    suppression_add(address="Gone@Example.org", reason="hard_bounce", sending_domain=sending_domain, source="550 <gone@example.org>")
    job = jobs.erasure_job_create(text="gone@example.org\nnever-seen@example.org\nnot an address", created_by=admin_role)
    assert "gone@example.org" in text_of_job_rows(job)  # kept only while it waits

    done = jobs.job_run(job_id=job.pk)
    assert done is not None and done.state == JobState.DONE
    assert done.counts == {"erased": 2}
    assert done.summary == "2 erased; 1 problem"
    assert done.problems == ["line 3: not an email address (An email address must have an @-sign.)"]
    kept = text_of_job_rows(done)
    assert "gone@example.org" not in kept.lower() and "never-seen" not in kept
    assert list(Suppression.objects.values_list("address", flat=True)) == ["", "", ""]  # erased, still suppressed by hash
    assert AuditEntry.objects.filter(action="address.erase", actor=admin_role).count() == 2
    assert not any("gone@" in json.dumps(e.data) + e.target_label + e.reason for e in AuditEntry.objects.all())


def test_an_import_after_an_erase_does_not_bring_the_address_back(
    marketer: User, sending_domain: SendingDomain, published: list[int]
) -> None:
    address_erase_everywhere(address="gone@example.org")
    job = jobs.suppression_import_job_create(text="gone@example.org,mail.example.com\nnew@example.org", created_by=marketer)
    done = jobs.job_run(job_id=job.pk)
    assert done is not None and done.counts == {"erased_before": 1, "added": 1}
    assert done.problems == ["line 1: erased on request before; already suppressed everywhere"]
    assert not Suppression.objects.filter(address__iexact="gone@example.org").exists()


def test_a_rescore_job_scores_each_version_with_the_real_spamd(version: VariantVersion, marketer: User, published: list[int]) -> None:
    job = jobs.rescore_job_create(version_ids=[version.pk, version.pk, 987654], created_by=marketer)
    assert (job.total, job.problems) == (1, ["version 987654: not found"])
    done = jobs.job_run(job_id=job.pk)
    assert done is not None and done.state == JobState.DONE and done.counts == {"scored": 1}, done.problems
    version.refresh_from_db()
    assert version.assessment.state == "scored"


def test_more_versions_than_a_job_takes_are_refused(marketer: User) -> None:
    with pytest.raises(jobs.JobError, match="at most 10,000"):
        jobs.rescore_job_create(version_ids=range(1, jobs.MAX_VERSIONS + 2), created_by=marketer)
    assert Job.objects.count() == 0


@pytest.fixture
def eager() -> Iterator[None]:
    before = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = before


def test_with_eager_celery_the_job_runs_once_created(
    marketer: User, eager: None, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        job = jobs.suppression_import_job_create(text="\n".join(addresses(3)), created_by=marketer)
    job.refresh_from_db()
    assert (job.state, job.done, Suppression.objects.count()) == (JobState.DONE, 3, 3)


# --- the admin --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", LOGGED_IN)
def test_the_job_pages_follow_the_table(actor: str, staff_client: Callable[[Any], Client], marketer: User, published: list[int]) -> None:
    client = staff_client(make_user(actor))
    job = jobs.suppression_import_job_create(text="a@example.org", created_by=marketer)
    pages = {
        reverse("admin:dispatch_job_suppression_import"): JobAdmin.import_capability,
        reverse("admin:dispatch_job_erasure"): JobAdmin.erase_capability,
        reverse("admin:dispatch_job_change", args=[job.pk]): Capability.READ,
        reverse("admin:dispatch_job_progress", args=[job.pk]): Capability.READ,
        reverse("admin:dispatch_job_changelist"): Capability.READ,
    }
    for url, capability in pages.items():
        status = client.get(url).status_code
        assert status == (200 if holds(actor, capability) else 403), (url, actor, status)
    status = client.post(reverse("admin:dispatch_job_rescore"), {"version": ["1"]}).status_code
    assert status == (302 if holds(actor, JobAdmin.rescore_capability) else 403), (actor, status)
    assert (JobAdmin.import_capability, JobAdmin.erase_capability, JobAdmin.rescore_capability) == (
        Capability.SUPPRESSIONS_ADD, Capability.ADDRESSES_ERASE, Capability.TEMPLATES_APPROVE,
    )


def test_the_import_page_takes_a_csv_file_and_shows_the_job(
    marketer: User, staff_client: Callable[[Any], Client], published: list[int]
) -> None:
    client = staff_client(marketer)
    upload = SimpleUploadedFile("list.csv", "\n".join(["address", *addresses(30), "oops"]).encode(), content_type="text/csv")
    response = client.post(reverse("admin:dispatch_job_suppression_import"), {"file": upload, "sending_domain": ""}, follow=True)

    job = Job.objects.get()
    assert response.redirect_chain == [(reverse("admin:dispatch_job_change", args=[job.pk]), 302)]
    page = response.content.decode()
    assert '<progress id="job-progress" max="30" value="0"' in page
    assert '<label for="job-progress">Suppression import</label>' in page
    assert "0 of 30" in page and "line 32: not an email address" in page
    progress = client.get(reverse("admin:dispatch_job_progress", args=[job.pk])).json()
    assert (progress["count"], progress["state"], progress["running"], progress["problem_count"]) == ("0 of 30", "queued", True, 1)


def test_the_import_page_refuses_a_file_over_the_limit_with_nothing_created(
    marketer: User, staff_client: Callable[[Any], Client], published: list[int]
) -> None:
    client = staff_client(marketer)
    upload = SimpleUploadedFile("big.csv", b"a@example.org\n" * (jobs.MAX_INPUT_BYTES // 14 + 1), content_type="text/csv")
    response = client.post(reverse("admin:dispatch_job_suppression_import"), {"file": upload})
    assert response.status_code == 200
    assert "Nothing was started." in response.content.decode() and "at most 2 MB" in response.content.decode()
    assert Job.objects.count() == 0 and published == []


def test_the_erase_page_needs_the_confirmation(admin_role: User, staff_client: Callable[[Any], Client], published: list[int]) -> None:
    client = staff_client(admin_role)
    url = reverse("admin:dispatch_job_erasure")
    refused = client.post(url, {"addresses": "gone@example.org"})
    assert refused.status_code == 200 and Job.objects.count() == 0
    started = client.post(url, {"addresses": "gone@example.org", "confirm": "on"})
    assert started.status_code == 302 and Job.objects.get().kind == JobKind.ERASURE


def test_the_versions_action_confirms_then_posts_to_the_jobs_page(
    version: VariantVersion, marketer: User, staff_client: Callable[[Any], Client], published: list[int]
) -> None:
    client = staff_client(marketer)
    changelist = reverse("admin:templates_registry_variantversion_changelist")
    confirm = client.post(changelist, {"action": "rescore_selected", "_selected_action": [str(version.pk)]})
    page = confirm.content.decode()
    assert confirm.status_code == 200 and f'action="{reverse("admin:dispatch_job_rescore")}"' in page
    assert f'name="version" value="{version.pk}"' in page and "Re-score 1 version" in page
    started = client.post(reverse("admin:dispatch_job_rescore"), {"version": [str(version.pk)]})
    job = Job.objects.get()
    assert started.status_code == 302 and started["Location"] == reverse("admin:dispatch_job_change", args=[job.pk])
    assert (job.kind, job.total, published) == (JobKind.RESCORE, 1, [job.pk])


def test_an_erase_takes_the_person_out_of_a_running_jobs_waiting_input(
    marketer: User, sending_domain: SendingDomain, published: list[int]
) -> None:
    job = jobs.suppression_import_job_create(text="Ana@Example.org\nben@example.org", created_by=marketer)
    address_erase_everywhere(address="ana@example.org")  # while the job waits
    assert "ana@" not in json.dumps(list(JobItem.objects.values_list("data", flat=True))).lower()
    done = jobs.job_run(job_id=job.pk)
    assert done is not None and done.state == JobState.DONE
    assert list(Suppression.objects.exclude(address="").values_list("address", flat=True)) == ["ben@example.org"]
