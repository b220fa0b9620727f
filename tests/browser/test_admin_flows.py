"""The admin in a real browser: a marketer from a new version to a sent campaign, an on-call pause, the cockpit chart."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from deliverability.assessments import version_assess
from deliverability.models import SendingDomain
from dispatch.models import Campaign, Message, MessageStatus
from templates_registry.models import Template, VariantVersion, VersionStatus
from tests.browser.conftest import login, off_the_loop
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES
from tests.test_cockpit import detector_pause, traffic
from tests.test_oncall_controls import Workers

pytestmark = pytest.mark.django_db(transaction=True)
RECIPIENTS = 20
PROGRESS_TIMEOUT_MS = 20_000  # the campaign page reloads itself every few seconds while messages move


def test_marketer_flow(page: Page, marketer: Any, variant: Any, sending_domain: SendingDomain, smtp_sink: Any) -> None:
    # One marketer adds and approves here: four-eyes (its own tests: tests/test_version_lifecycle.py) is off for this template.
    Template.objects.filter(pk=variant.template_id).update(four_eyes=False)
    login(page, marketer)
    version = add_version(page, variant)

    expect(page.locator(".sp-assessment .sp-badge")).to_have_text("pending")
    # The task version_create published, run here against the real spamd.
    assessment = off_the_loop(version_assess, version_id=version.pk)
    assert assessment is not None and assessment.state == "scored", assessment and assessment.not_scored_reason
    page.reload()
    badge = page.locator(".sp-assessment .sp-badge")
    expect(badge).to_have_text(f"{assessment.score:g}")
    expect(badge).to_have_class(re.compile(r"sp-badge-(green|amber)"))
    expect(page.locator(".sp-approvable")).to_have_text("Yes")

    page.locator(".object-tools").get_by_role("link", name="Preview").click()
    expect(page.locator(".sp-subject")).to_have_text("Hi Ana")
    expect(page.frame_locator("iframe.sp-desktop").get_by_text("Hello Ana")).to_be_visible()
    expect(page.frame_locator("iframe.sp-mobile").get_by_role("link", name="see the offer")).to_be_visible()
    page.go_back()

    page.locator(".sp-approve button").click()
    expect(page.locator(".messagelist .success").first).to_contain_text(f"Approved {version}")
    assert VariantVersion.objects.get(pk=version.pk).status == VersionStatus.APPROVED

    page.goto("/admin/dispatch/campaign/")
    page.get_by_role("link", name="Launch a campaign").click()
    page.fill("#id_name", "Spring in the browser")
    page.select_option("#id_template", str(variant.template_id))
    page.select_option("#id_sending_domain", str(sending_domain.pk))
    page.fill("#id_recipients", "\n".join(f"reader{i}@example.org,Reader {i}" for i in range(RECIPIENTS)))
    with Workers(sending_domain.pk, 1) as workers:
        page.get_by_role("button", name="Launch").click()
        expect(page.locator(".messagelist .success")).to_have_text(
            f"Launched “Spring in the browser”: {RECIPIENTS} accepted, 0 suppressed, 0 rejected. Its progress is below."
        )
        expect(page.locator(".field-progress")).to_contain_text(
            f"{RECIPIENTS} sent, 0 failed, 0 waiting", timeout=PROGRESS_TIMEOUT_MS
        )
    assert workers.errors == []

    campaign = Campaign.objects.get()
    assert set(Message.objects.filter(campaign=campaign).values_list("status", flat=True)) == {MessageStatus.SENT}
    subjects = {r.recipient: r.parsed()["Subject"] for r in smtp_sink.received}
    assert subjects == {f"reader{i}@example.org": f"Hi Reader {i}" for i in range(RECIPIENTS)}
    expect(page.locator(".field-progress progress")).to_have_attribute("value", str(RECIPIENTS))


def add_version(page: Page, variant: Any) -> VariantVersion:
    """Through the registry's add form, as a marketer types it; lands on the new version's page."""
    page.goto("/admin/templates_registry/variantversion/add/")
    page.select_option("#id_variant", str(variant.pk))
    page.fill("#id_subject", "Hi {{ first_name }}")
    page.fill("#id_sender_name", "Atelier")
    page.fill("#id_preheader", "Two picks for {{ first_name }}")
    page.fill("#id_mjml_body", SIMPLE_MJML)
    page.fill("#id_variables", json.dumps(SIMPLE_VARIABLES))
    page.click("input[name=_continue]")
    expect(page).to_have_url(re.compile(r"/admin/templates_registry/variantversion/\d+/change/$"))
    version_id = int(re.search(r"/variantversion/(\d+)/", page.url).group(1))  # type: ignore[union-attr]
    return VariantVersion.objects.select_related("variant__template").get(pk=version_id)


def test_oncall_pauses_a_domain(page: Page, oncall: Any, sending_domain: SendingDomain) -> None:
    login(page, oncall)
    page.goto("/admin/deliverability/sendingdomain/")
    page.check(f"input[name=_selected_action][value='{sending_domain.pk}']")
    page.select_option("select[name=action]", "pause")
    page.click("button[name=index]")

    page.fill("#id_reason", "provider incident OPS-12")
    page.get_by_role("button", name="Pause the selected domains").click()
    expect(page.locator(".messagelist .success")).to_have_text("Mail.example.com paused.")  # the admin capitalises messages
    row = page.locator("#result_list tbody tr", has_text="mail.example.com")
    expect(row.locator("td.field-paused img")).to_have_attribute("alt", "True")
    expect(row.locator("td.field-paused_reason")).to_have_text("provider incident OPS-12")

    domain = SendingDomain.objects.get(pk=sending_domain.pk)
    assert domain.paused and domain.paused_reason == "provider incident OPS-12"


def test_cockpit_chart_renders(page: Page, oncall: Any, sending_domain: SendingDomain, artifacts: Path) -> None:
    traffic(sending_domain)  # the last 30 minutes: 120 sent and 3 soft bounces a minute
    detector_pause(sending_domain)
    login(page, oncall)
    page.goto("/admin/cockpit/")

    panel = page.locator("#domains .domain", has_text="mail.example.com")
    expect(panel).to_contain_text("paused by detector")
    chart = panel.locator(".sp-chart-compact")  # uPlot's (tests/browser/test_charts.py reads the domain page's in full)
    chart.scroll_into_view_if_needed()
    expect(chart).to_have_attribute("data-shown-range", "24h")
    expect(chart.locator("canvas")).to_have_count(2)  # messages a minute, then the rates
    expect(chart.locator(".sp-chart-volume .u-legend .u-label")).to_have_text(["Time", "other"])  # one stream: to every other receiver
    expect(chart.locator(".sp-flag")).to_have_text(["1 paused · detector"])
    expect(chart.locator("ol.sp-chart-marks li")).to_have_text([re.compile(r"^Paused \d\d:\d\d UTC by detector: bounce rate 31\.00%")])

    shot = artifacts / "cockpit.png"
    shot.unlink(missing_ok=True)
    chart.screenshot(path=str(shot))
    box = chart.bounding_box()
    assert box is not None and 280 <= box["width"] <= 760 and box["height"] > 250  # the compact chart's own size
    width, height = png_size(shot.read_bytes())
    assert abs(width - box["width"]) < 2 and abs(height - box["height"]) < 2  # subpixel offsets round either way


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])
