"""The reputation chart in a real browser, as on-call reads it on a domain's admin page (issue 19, "Charts worth reading").

A day of counters to four provider streams, a pause by the detector after a bounce spike, a resume by a person
and a provider stream the detector paused later. What a person checks: the time axis has labels, each pause
says why and who acted without hovering, hovering shows the values under the cursor, a range button changes the
window, there is a line per provider; and axe-core finds nothing serious on the page.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from deliverability.models import DomainMinute, PauseEvidence, ProviderStream, SendingDomain
from deliverability.services import domain_pause, domain_resume
from deliverability.services.streams import stream_pause_detected
from tests.browser.conftest import axe_serious, login

pytestmark = pytest.mark.django_db(transaction=True)
PROVIDERS = {"gmail": 40, "microsoft": 25, "yahoo": 12, "": 8}  # messages a minute, about
TIME_LABEL = re.compile(r"^\d\d:\d\d(\n\d{1,2} [A-Z][a-z]{2})?$")
DAY_LABEL = re.compile(r"\d{1,2} [A-Z][a-z]{2}")


def at(moment: datetime) -> Any:
    """The services' clock (auto_now_add included) set to ``moment``: the trail is append-only, so history is made then."""
    return mock.patch("django.utils.timezone.now", return_value=moment)


@pytest.fixture
def domain_with_a_day(sending_domain: SendingDomain, oncall: Any) -> SendingDomain:
    now = timezone.now().replace(second=0, microsecond=0)
    pause_at, resume_at = now - timedelta(hours=6), now - timedelta(hours=5, minutes=20)
    random = np.random.default_rng(19)
    minutes = np.arange(24 * 60)
    daily = 1 + 0.6 * np.sin(2 * np.pi * minutes / (24 * 60))  # a day's curve: traffic is not flat
    rows = []
    for provider, mean in PROVIDERS.items():
        sent = random.poisson(mean * daily)
        bounced = random.binomial(sent, 0.012)
        spike = (minutes >= 24 * 60 - 6 * 60 - 12) & (minutes < 24 * 60 - 6 * 60)  # the 12 minutes before the pause
        if provider == "gmail":
            bounced[spike] = (sent[spike] * 0.35).astype(int)
        paused = (minutes >= 24 * 60 - 6 * 60) & (minutes < 24 * 60 - 5 * 60 - 20)
        sent[paused], bounced[paused] = 0, 0
        complained = random.binomial(sent, 0.0008)
        rows += [
            DomainMinute(
                sending_domain=sending_domain, provider=provider, minute=now - timedelta(minutes=24 * 60 - 1 - int(m)),
                sent=int(sent[m]), delivered=int(sent[m] - bounced[m]), bounced_hard=int(bounced[m]), complained=int(complained[m]),
            )
            for m in minutes
        ]
    DomainMinute.objects.bulk_create(rows, batch_size=2000)
    evidence = PauseEvidence(
        minute=pause_at - timedelta(minutes=1), signal="bounce", rule="ceiling", baseline=0.012, observed=0.349,
        statistic=0.21, threshold=0.10, volume=43, events=15,
    )
    with at(pause_at):
        domain_pause(domain=sending_domain, reason=evidence.summary(), evidence=evidence)
    with at(resume_at):
        domain_resume(domain=sending_domain, actor=oncall, force=True, reason="DNS fixed: SPF includes the relay again")
    stream = ProviderStream.objects.create(sending_domain=sending_domain, provider="yahoo")
    domain = SendingDomain.objects.get(pk=sending_domain.pk)
    complaint = PauseEvidence(
        minute=now - timedelta(hours=2), signal="complaint", rule="cusum", baseline=0.0008, observed=0.011, statistic=13.2,
        threshold=12.0, volume=900, events=10,
    )
    with at(now - timedelta(hours=2)):
        assert stream_pause_detected(stream_id=stream.pk, evidence=complaint, expected_epoch=domain.detector_epoch)
    return domain


def test_the_domain_chart_reads_well(page: Page, oncall: Any, domain_with_a_day: SendingDomain, artifacts: Path) -> None:
    login(page, oncall)
    page.goto(f"/admin/deliverability/sendingdomain/{domain_with_a_day.pk}/change/")
    chart = page.locator(".sp-chart")
    expect(chart).to_have_attribute("data-shown-range", "24h")
    expect(chart.get_by_role("status")).to_contain_text("mail.example.com, the last 24 hours to")

    # The time axis: labelled ticks under both charts, hours of the day (and the date where a day begins).
    ticks = chart.locator(".sp-chart-volume .sp-tick")
    expect(ticks.first).to_be_visible()
    labels = ticks.all_inner_texts()
    assert len(labels) >= 5 and all(TIME_LABEL.match(label) for label in labels), labels
    assert chart.locator(".sp-chart-rates .sp-tick").count() == len(labels)

    # Pauses and resumes: the reason and who acted, readable without hovering, and a flag on the chart for each.
    marks = chart.locator("ol.sp-chart-marks li")
    expect(marks).to_have_count(3)
    expect(marks.nth(0)).to_have_text(re.compile(r"^Paused \d\d:\d\d UTC by detector: bounce rate 34\.90% over 43 messages vs baseline"))
    expect(marks.nth(1)).to_have_text(re.compile(r"^Resumed \d\d:\d\d UTC by omar-oncall: DNS fixed: SPF includes the relay again$"))
    expect(marks.nth(2)).to_have_text(re.compile(r"^Paused the yahoo stream \d\d:\d\d UTC by detector: complaint rate 1\.10% over 900"))
    for mark in marks.all():
        expect(mark).to_be_visible()
    flags = chart.locator(".sp-flag")
    expect(flags).to_have_text(["1 paused · detector", "2 resumed · omar-oncall", "3 paused yahoo · detector"])
    for flag in flags.all():
        expect(flag).to_be_visible()
    expect(chart.locator(".sp-chart-key")).to_contain_text("bounce rate over 10.0% or a complaint rate over 0.3%")

    # A line per provider stream (and their sum), named in the legend.
    volume_legend = chart.locator(".sp-chart-volume .u-legend .u-series .u-label")
    expect(volume_legend).to_have_text(["Time", "all providers", "gmail", "microsoft", "yahoo", "other"])
    rates_legend = chart.locator(".sp-chart-rates .u-legend .u-series .u-label")
    expect(rates_legend).to_have_text(["Time", "bounce rate", "complaint rate"])
    chart.get_by_role("button", name="Bounce rate per provider").click()
    expect(chart.get_by_role("button", name="Bounce rate per provider")).to_have_attribute("aria-pressed", "true")
    expect(rates_legend).to_have_text(["Time", "bounce rate", "complaint rate", "gmail bounce rate", "microsoft bounce rate",
                                       "yahoo bounce rate", "other bounce rate"])

    # Hovering: the legends show the values under the cursor, the time of the minute included, in both charts at once.
    values = chart.locator(".sp-chart-volume .u-legend .u-value")
    rate_values = chart.locator(".sp-chart-rates .u-legend .u-value")
    chart.scroll_into_view_if_needed()  # before hovering: the screenshot below would scroll the chart from under the mouse
    box = chart.locator(".sp-chart-volume .u-over").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
    expect(values.first).to_contain_text("UTC")
    first = values.all_inner_texts()
    assert re.search(r"\d+\.\d/min", first[2]), first  # gmail's messages a minute
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2)
    expect(values.first).not_to_have_text(first[0])
    second = values.all_inner_texts()
    assert second[1:] != first[1:], (first, second)
    assert re.fullmatch(r"\d+\.\d\d%", rate_values.nth(1).inner_text()), rate_values.all_inner_texts()
    chart.screenshot(path=str(artifacts / "reputation_chart_24h.png"))

    # A range button changes the window: seven days of ticks labelled by date.
    start, end = chart.get_attribute("data-start"), chart.get_attribute("data-end")
    week = chart.get_by_role("button", name="7 d")
    week.click()
    expect(week).to_have_attribute("aria-pressed", "true")
    expect(chart.get_by_role("button", name="24 h")).to_have_attribute("aria-pressed", "false")
    expect(chart).to_have_attribute("data-shown-range", "7d")
    new_start, new_end = chart.get_attribute("data-start"), chart.get_attribute("data-end")
    assert new_start != start and new_start and new_end and start and end
    span = datetime.fromisoformat(new_end.replace("Z", "+00:00")) - datetime.fromisoformat(new_start.replace("Z", "+00:00"))
    assert span == timedelta(days=7)
    week_labels = chart.locator(".sp-chart-volume .sp-tick").all_inner_texts()
    assert week_labels != labels and sum(bool(DAY_LABEL.search(label)) for label in week_labels) >= 5, week_labels
    expect(chart.get_by_role("status")).to_contain_text("the last 7 days")
    chart.screenshot(path=str(artifacts / "reputation_chart_7d.png"))

    # The buttons are reachable by keyboard: Enter on the focused 30 d shows a month.
    chart.get_by_role("button", name="30 d").focus()
    page.keyboard.press("Enter")
    expect(chart).to_have_attribute("data-shown-range", "30d")
    chart.get_by_role("button", name="24 h").click()
    expect(chart).to_have_attribute("data-shown-range", "24h")
    expect(chart.locator(".sp-chart-table table")).to_contain_text("yahoo")

    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    chart.screenshot(path=str(artifacts / "reputation_chart.png"))
    assert axe_serious(page) == []


def test_the_cockpit_shows_a_compact_chart_per_domain(page: Page, oncall: Any, domain_with_a_day: SendingDomain, artifacts: Path) -> None:
    login(page, oncall)
    page.goto("/admin/cockpit/")
    chart = page.locator("#domains .sp-chart-compact")
    chart.scroll_into_view_if_needed()
    expect(chart).to_have_attribute("data-shown-range", "24h")
    assert chart.get_by_role("button").count() == 0  # no range buttons on the small multiples
    expect(chart.locator(".sp-chart-volume .sp-tick").first).to_be_visible()
    expect(chart.locator("ol.sp-chart-marks li").first).to_have_text(re.compile(r"^Paused \d\d:\d\d UTC by detector: bounce rate"))
    chart.screenshot(path=str(artifacts / "reputation_chart_compact.png"))
