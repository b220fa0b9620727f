"""Issue 19's home page (the cockpit) and a sending domain's page, in a real browser, as a person would check them.

The home page lists a paused domain with its reason, what sends now against what is allowed, a version waiting
for approval with its score and the day's incidents; a domain's page shows its state, the detector's verdict and
last evidence, its rate now and allowed and its warm-up step, and on-call pauses it from there with the keyboard.
Both pages have no serious or critical axe-core violation. Each test leaves var/test-artifacts/<test name>.png.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page, expect

from deliverability.assessments import version_assess
from deliverability.models import SendingDomain
from deliverability.services import domain_create, domain_pause, domain_resume
from dispatch.models import Campaign, Message, MessageStatus, Trigger
from templates_registry.models import VariantVersion
from tests.browser.conftest import axe_serious, login, off_the_loop
from tests.test_cockpit import detector_pause, traffic

pytestmark = pytest.mark.django_db(transaction=True)


def warming(name: str = "news.example.net") -> SendingDomain:
    """A domain on the second of three warm-up steps (20/s of its 50/s), sending 120 a minute."""
    domain = domain_create(
        domain=name, default_sender=f"news@{name}", rate_per_second=50, burst=50,
        warmup_schedule=[5, 20, 50], warmup_daily_caps=[10_000, 50_000, 200_000], warmup_started_on=date(2026, 1, 5),
    )
    SendingDomain.objects.filter(pk=domain.pk).update(warmup_step=1)
    traffic(domain)
    return SendingDomain.objects.get(pk=domain.pk)


def in_progress(domain: SendingDomain, version: VariantVersion) -> Campaign:
    """A running campaign of four messages, one sent and one failed, written as the worker leaves its rows.

    Not through a trigger: its commit would publish tasks to the shared broker that no worker of this test takes.
    """
    campaign = Campaign.objects.create(name="Welcome wave", template=version.variant.template, sending_domain=domain, status="running")
    trigger = Trigger.objects.create(campaign=campaign, idempotency_key="k", request_hash="0" * 64, response={})
    Message.objects.bulk_create(
        Message(campaign=campaign, trigger=trigger, sending_domain=domain, version=version, recipient=f"reader{i}@example.org",
                status=status, not_before=timezone.now())
        for i, status in enumerate([MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.QUEUED, MessageStatus.QUEUED])
    )
    return campaign


def test_home_page_lists_a_paused_domain_with_its_reason(
    page: Page, oncall: User, sending_domain: SendingDomain, version: VariantVersion
) -> None:
    in_progress(sending_domain, version)
    traffic(sending_domain)
    warming()
    domain_pause(domain=sending_domain, reason="provider incident OPS-12", actor=oncall)
    assessment = off_the_loop(version_assess, version_id=version.pk)  # the real spamd: the score the page shows
    assert assessment is not None and assessment.score is not None

    login(page, oncall)
    page.goto("/admin/")

    expect(page).to_have_title("Cockpit | Sendplane")
    expect(page.locator("#site-name")).to_have_text("Sendplane")
    assert "Django" not in page.locator("#header").inner_text()
    paused = page.locator("#paused tbody tr", has_text="mail.example.com")
    expect(paused).to_contain_text("paused")
    expect(paused).to_contain_text(oncall.username)
    expect(paused).to_contain_text("provider incident OPS-12")

    sending = page.locator("#sending tbody tr", has_text="news.example.net")
    expect(sending.locator("td").nth(0)).to_have_text("running")
    expect(sending.locator(".sp-rate-text")).to_have_text(re.compile(r"^\d+\.\d/s of 20\.0/s$"))  # 120 a minute, allowed 20/s
    expect(sending).to_contain_text("step 2 of 3: 20/s")
    expect(page.locator("#sending tbody tr", has_text="mail.example.com").locator(".sp-rate-text")).to_have_text(
        re.compile(r"^\d+\.\d/s of 0\.0/s$")  # what it sent in the last minute; nothing allowed now
    )

    review = page.locator("#review tbody tr", has_text=str(version))
    expect(review.locator(".sp-badge")).to_have_text(f"{assessment.score:g}")
    expect(review).to_contain_text("Hi {{ first_name }}")
    incident = page.locator("#incidents tbody tr", has_text="Domain paused")
    expect(incident).to_contain_text("mail.example.com")
    expect(incident).to_contain_text("provider incident OPS-12")
    campaign = page.locator("#campaigns tbody tr", has_text="Welcome wave")
    expect(campaign).to_contain_text("2/4 done")
    expect(page.locator("#paused tbody tr", has_text="Welcome wave")).to_have_count(0)  # its domain is paused, not the campaign
    expect(page.locator("#everything")).to_contain_text("Sending domains")  # every admin list stays a click away

    assert axe_serious(page) == []


def test_domain_page_at_a_glance_and_pausing_from_it(page: Page, oncall: User, artifacts: Path) -> None:
    domain = warming()
    detector_pause(domain)
    domain_resume(domain=domain, actor=oncall, force=True, reason="bounces explained: a typo list", ramp_minutes=30)

    login(page, oncall)
    page.goto(f"/admin/deliverability/sendingdomain/{domain.pk}/change/")

    state = page.locator("#glance-state")
    expect(state.locator(".sp-pill")).to_have_text("ramping")
    expect(state).to_contain_text("Ramping up after a resume: 10% of its rate now")
    expect(page.locator("#glance-rate")).to_contain_text(re.compile(r"\d+\.\d/s of 5\.0/s allowed"))  # a tenth of 50/s, < 20/s
    expect(page.locator("#glance-warmup")).to_contain_text("Step 2 of 3")
    expect(page.locator("#glance-warmup")).to_contain_text("20/s, 50,000 a day")
    expect(page.locator("#glance-verdict")).to_contain_text(re.compile(r"^Paused this domain at .* UTC, resumed at"))
    expect(page.locator("#glance-evidence")).to_contain_text("bounce rate 31.00% over 400 messages")
    assert axe_serious(page) == []
    page.locator("#glance").screenshot(path=str(artifacts / "domain_page_at_a_glance.png"))

    pause = page.get_by_role("link", name="Pause this domain…")
    pause.focus()  # the button is a link in the tab order: the keyboard reaches it and Enter follows it
    expect(pause).to_be_focused()
    page.keyboard.press("Enter")
    page.fill("#id_reason", "complaint spike at yahoo, OPS-31")
    page.get_by_role("button", name="Pause the selected domains").press("Enter")

    expect(page).to_have_url(re.compile(rf"/admin/deliverability/sendingdomain/{domain.pk}/change/$"))
    expect(page.locator(".messagelist .success")).to_have_text("News.example.net paused.")  # the admin capitalises messages
    expect(state.locator(".sp-pill")).to_have_text("paused")
    expect(state).to_contain_text(f"Paused by {oncall.username}")
    expect(state).to_contain_text("complaint spike at yahoo, OPS-31")
    expect(page.locator("#glance-rate")).to_contain_text("of 0.0/s allowed")
    expect(page.get_by_role("link", name="Resume this domain…")).to_be_visible()
    row = SendingDomain.objects.get(pk=domain.pk)
    assert row.paused and row.paused_by == oncall.username and row.paused_reason == "complaint spike at yahoo, OPS-31"


def test_a_marketer_reads_the_domain_page_without_controls(page: Page, marketer: User, sending_domain: Any) -> None:
    login(page, marketer)
    page.goto(f"/admin/deliverability/sendingdomain/{sending_domain.pk}/change/")
    expect(page.locator("#glance-state .sp-pill")).to_have_text("running")
    expect(page.get_by_role("link", name=re.compile("(Pause|Resume) this domain"))).to_have_count(0)
    expect(page.locator("#glance-state")).to_contain_text("Pausing and resuming are for on-call and admins.")
