"""Long work with its progress in a real browser (issue 19): 2,000 suppressions imported through the admin's page,
the progress bar followed to its end while the keyboard focus stays put; an erasure; versions re-scored from
their list. Each page is checked with axe-core (no serious or critical violation).

The admin asks a worker to run each job (dispatch.services.jobs.job_publish); here the request is recorded
instead, and the test runs the job itself, off the browser's event loop, a chunk at a time, so the page is seen
between chunks without any waiting on time. Screenshots: var/test-artifacts/<test name>[-<step>].png.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from deliverability.models import SendingDomain, Suppression
from deliverability.services import suppression_add
from dispatch.models import Job, JobKind, JobState
from dispatch.services import jobs
from templates_registry.models import Template, VariantVersion
from tests.browser.conftest import axe_serious, login, off_the_loop

pytestmark = pytest.mark.django_db(transaction=True)
IMPORTED = 2000
JOB_PAGE = re.compile(r"/admin/dispatch/job/\d+/change/$")


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The jobs the admin asked a worker to run (the live server runs in this process)."""
    asked: list[int] = []
    monkeypatch.setattr(jobs, "job_publish", lambda job_id, **_: asked.append(job_id))
    return asked


def focused(page: Page) -> str:
    return str(page.evaluate("document.activeElement ? document.activeElement.id || document.activeElement.textContent : ''"))


def test_importing_2000_suppressions_shows_the_progress_to_the_end(
    page: Page, marketer: User, sending_domain: SendingDomain, published: list[int], artifacts: Path
) -> None:
    login(page, marketer)
    page.goto("/admin/deliverability/suppression/")
    page.get_by_role("link", name="Import suppressions").click()
    expect(page.locator("#content h1")).to_have_text("Import suppressions")
    assert axe_serious(page) == []

    lines = ["address,domain", *(f"reader{i}@example.org" for i in range(IMPORTED)), "not-an-address", "odd@example.org,a,b"]
    page.get_by_label("CSV file").set_input_files(
        {"name": "suppressions.csv", "mimeType": "text/csv", "buffer": "\n".join(lines).encode()}
    )
    expect(page.get_by_label("Or paste the list")).to_be_visible()
    page.screenshot(path=str(artifacts / "test_importing_2000_suppressions_shows_the_progress_to_the_end-form.png"), full_page=True)
    page.get_by_label("For lines that name no domain").select_option(label=sending_domain.domain)
    # From the last field, the keyboard reaches the button and starts the import.
    page.get_by_label("For lines that name no domain").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Import")).to_be_focused()
    page.keyboard.press("Enter")

    expect(page).to_have_url(JOB_PAGE)
    job = Job.objects.get()
    assert (job.kind, job.total, published) == (JobKind.SUPPRESSION_IMPORT, IMPORTED, [job.pk])
    expect(page.locator(".messagelist .success")).to_contain_text(f"Started {job}: Suppress 2,000 addresses ({sending_domain.domain}")
    bar = page.get_by_role("progressbar", name="Suppression import")
    expect(bar).to_have_attribute("max", "2000")
    expect(bar).to_have_attribute("value", "0")
    expect(page.locator("#job-count")).to_have_text("0 of 2,000")
    expect(page.locator("#job-state")).to_have_text("Queued")
    problems = page.locator("#job-problems li")
    expect(problems).to_have_text([re.compile(r"^line 2002: not an email address"), "line 2003: 3 columns, expected address,domain"])
    expect(page.locator("#job-problem-count")).to_have_text("2")

    # Someone reading the page with the keyboard: the updates below must leave the focus where it is.
    jobs_link = page.get_by_role("navigation", name="Breadcrumbs").get_by_role("link", name="Jobs")
    jobs_link.focus()
    assert focused(page) == "Jobs"

    running = off_the_loop(jobs.job_run, job_id=job.pk, chunks=1)
    assert running is not None and 0 < running.done < IMPORTED and running.state == JobState.RUNNING
    expect(page.locator("#job-count")).to_have_text(f"{running.done:,} of 2,000")
    expect(bar).to_have_attribute("value", str(running.done))
    expect(page.locator("#job-state")).to_have_text("Running")
    assert focused(page) == "Jobs"
    page.screenshot(path=str(artifacts / "test_importing_2000_suppressions_shows_the_progress_to_the_end-running.png"), full_page=True)
    assert axe_serious(page) == []

    finished = off_the_loop(jobs.job_run, job_id=job.pk)
    assert finished is not None and finished.state == JobState.DONE
    expect(page.locator("#job-count")).to_have_text("2,000 of 2,000")
    expect(bar).to_have_attribute("value", "2000")
    expect(page.locator("#job-state")).to_have_text("Done")
    expect(page.locator("#job-summary")).to_have_text("2,000 suppressed; 2 problems")
    expect(page.locator("#job-finished")).not_to_have_text("not yet")
    assert focused(page) == "Jobs"
    assert Suppression.objects.filter(sending_domain=sending_domain, reason="manual").count() == IMPORTED
    assert axe_serious(page) == []

    jobs_link.click()
    row = page.locator("#result_list tbody tr", has_text=str(job))
    expect(row).to_contain_text("2,000 of 2,000")
    expect(row).to_contain_text("Done")
    assert axe_serious(page) == []
    page.screenshot(path=str(artifacts / "test_importing_2000_suppressions_shows_the_progress_to_the_end-list.png"), full_page=True)
    page.get_by_role("link", name=str(job)).click()  # the page the screenshot keeps


def test_an_admin_erases_a_list_of_addresses(page: Page, admin_role: User, sending_domain: SendingDomain, published: list[int]) -> None:
    suppression_add(address="gone@example.org", reason="hard_bounce", sending_domain=sending_domain)
    login(page, admin_role)
    page.goto("/admin/dispatch/job/")
    page.get_by_role("link", name="Erase addresses").click()
    expect(page.locator("#content h1")).to_have_text("Erase addresses")
    page.get_by_label("Addresses to erase").fill("gone@example.org\nalso-gone@example.org")
    page.get_by_role("button", name="Erase").click()
    expect(page.locator(".errornote")).to_contain_text("Nothing was started.")  # not without the confirmation
    assert Job.objects.count() == 0
    assert axe_serious(page) == []

    page.get_by_label("I understand that an erase cannot be undone").focus()
    page.keyboard.press("Space")
    expect(page.get_by_label("I understand that an erase cannot be undone")).to_be_checked()
    page.get_by_role("button", name="Erase").click()
    expect(page).to_have_url(JOB_PAGE)
    job = Job.objects.get()
    expect(page.locator("#job-count")).to_have_text("0 of 2")

    off_the_loop(jobs.job_run, job_id=job.pk)
    expect(page.locator("#job-summary")).to_have_text("2 erased")
    expect(page.locator("#job-no-problems")).to_have_text("None.")
    assert not Suppression.objects.filter(address__icontains="gone").exists()
    assert axe_serious(page) == []


def test_a_marketer_re_scores_versions_from_their_list(
    page: Page, marketer: User, version: VariantVersion, published: list[int], artifacts: Path
) -> None:
    Template.objects.filter(pk=version.variant.template_id).update(four_eyes=False)
    login(page, marketer)
    page.goto("/admin/templates_registry/variantversion/")
    page.get_by_role("checkbox", name=re.compile("Select this object")).check()
    page.locator("select[name=action]").select_option(label="Re-score the selected versions")
    page.get_by_role("button", name="Go").click()

    expect(page.locator("#content h1")).to_have_text("Re-score the selected versions")
    expect(page.locator("#rescore-versions li")).to_have_text([str(version)])
    assert axe_serious(page) == []
    page.screenshot(path=str(artifacts / "test_a_marketer_re_scores_versions_from_their_list-confirm.png"), full_page=True)
    page.get_by_role("button", name="Re-score 1 version").click()

    expect(page).to_have_url(JOB_PAGE)
    job = Job.objects.get()
    assert (job.kind, job.total) == (JobKind.RESCORE, 1)
    expect(page.get_by_role("progressbar", name="Version re-scoring")).to_have_attribute("value", "0")
    off_the_loop(jobs.job_run, job_id=job.pk)  # the real spamd
    expect(page.locator("#job-count")).to_have_text("1 of 1")
    expect(page.locator("#job-summary")).to_have_text("1 scored")
    assert axe_serious(page) == []
