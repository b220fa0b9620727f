"""A sending domain's admin page at a glance (deliverability/glance.py), and pausing or resuming it from there.

The buttons lead to the list's own pause and resume actions for that one domain (a reason first, then the same
service), for ``sending.control`` only, and come back to the page; a marketer reads the page and has no button.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deliverability.glance import domains_at_a_glance
from deliverability.models import DomainMinute, ProviderStream, SendingDomain
from deliverability.services import domain_create, domain_pause, sending_pause_all, sending_switch
from tests.test_cockpit import detector_pause, traffic

pytestmark = pytest.mark.django_db


def page_of(domain: SendingDomain) -> str:
    return f"/admin/deliverability/sendingdomain/{domain.pk}/change/"


def glance_of(html: str) -> str:
    match = re.search(r'<section class="sp-glance" id="glance"[^>]*>(.*?)</section>', html, re.S)
    assert match, "no glance"
    return match.group(1)


def test_the_page_shows_state_rate_warm_up_and_the_detectors_verdict(sending_domain: Any, staff_client: Any, oncall: Any) -> None:
    SendingDomain.objects.filter(pk=sending_domain.pk).update(
        warmup_schedule=[5, 20], warmup_daily_caps=[1000, 8000], warmup_started_on=date(2026, 1, 5),
    )
    traffic(sending_domain)
    detector_pause(sending_domain)
    glance = glance_of(staff_client(oncall).get(page_of(sending_domain)).content.decode())
    assert "sp-pill-paused" in glance and "Paused by detector since" in glance
    assert re.search(r"[\d.]+/s</span> of <span class=\"sp-big\">0\.0/s</span> allowed", glance), glance
    assert "Step 1 of 2" in glance and "5/s, 1,000 a day" in glance
    assert "Paused this domain: resume with force only after reading its evidence" in glance
    assert "bounce rate 31.00% over 400 messages" in glance
    assert f'href="/admin/deliverability/sendingdomain/{sending_domain.pk}/resume/"' in glance  # on-call may resume


def test_a_running_domain_shows_its_rate_against_the_allowed_one(sending_domain: Any, staff_client: Any, oncall: Any) -> None:
    traffic(sending_domain)
    glance = glance_of(staff_client(oncall).get(page_of(sending_domain)).content.decode())
    assert "sp-pill-running" in glance and "of <span class=\"sp-big\">1000.0/s</span> allowed" in glance
    assert "No anomaly: bounces 2.5%, complaints 0.00% of 3,600 sent in the last hour" in glance
    assert "No warm-up schedule" in glance
    assert f'href="/admin/deliverability/sendingdomain/{sending_domain.pk}/pause/"' in glance


def test_the_global_switch_stops_a_running_domain(sending_domain: Any, staff_client: Any, oncall: Any) -> None:
    sending_pause_all(reason="provider incident", actor=oncall)
    glance = glance_of(staff_client(oncall).get(page_of(sending_domain)).content.decode())
    assert "sp-pill-stopped" in glance and "All sending is paused by" in glance and "provider incident" in glance


def test_a_marketer_reads_the_page_without_a_button_and_cannot_pause(sending_domain: Any, staff_client: Any, marketer: Any) -> None:
    client = staff_client(marketer)
    glance = glance_of(client.get(page_of(sending_domain)).content.decode())
    assert "/pause/" not in glance and "Pausing and resuming are for on-call and admins." in glance
    url = f"/admin/deliverability/sendingdomain/{sending_domain.pk}/pause/"
    assert client.get(url).status_code == 403
    assert client.post(url, {"reason": "no", "apply": "1"}).status_code == 403
    assert not SendingDomain.objects.get(pk=sending_domain.pk).paused


def test_oncall_pauses_from_the_page_with_a_reason_and_comes_back_to_it(sending_domain: Any, staff_client: Any, oncall: Any) -> None:
    client = staff_client(oncall)
    url = f"/admin/deliverability/sendingdomain/{sending_domain.pk}/pause/"
    form = client.get(url)
    assert form.status_code == 200 and 'name="reason"' in form.content.decode()
    assert not SendingDomain.objects.get(pk=sending_domain.pk).paused  # asking is not pausing
    assert client.post(url, {"apply": "1", "reason": ""}).status_code == 200  # a reason is required: the form again

    done = client.post(url, {"apply": "1", "reason": "provider incident OPS-12"})
    assert done.status_code == 302 and done["Location"] == page_of(sending_domain)
    row = SendingDomain.objects.get(pk=sending_domain.pk)
    assert row.paused and row.paused_reason == "provider incident OPS-12" and row.paused_by == oncall.username
    page = client.get(done["Location"]).content.decode()
    assert "Mail.example.com paused." in page and "provider incident OPS-12" in glance_of(page)


def test_resuming_a_detector_pause_from_the_page_needs_force(sending_domain: Any, staff_client: Any, oncall: Any) -> None:
    detector_pause(sending_domain)
    client = staff_client(oncall)
    url = f"/admin/deliverability/sendingdomain/{sending_domain.pk}/resume/"
    refused = client.post(url, {"apply": "1", "reason": "read it"}, follow=True).content.decode()
    assert "force" in refused and SendingDomain.objects.get(pk=sending_domain.pk).paused
    client.post(url, {"apply": "1", "reason": "read it", "force": "on", "ramp_minutes": "30"})
    assert not SendingDomain.objects.get(pk=sending_domain.pk).paused
    glance = glance_of(client.get(page_of(sending_domain)).content.decode())
    assert "sp-pill-ramping" in glance and "Paused this domain at" in glance and ", resumed at" in glance


def test_an_unknown_domain_is_404(staff_client: Any, oncall: Any) -> None:
    assert staff_client(oncall).get("/admin/deliverability/sendingdomain/999999/pause/").status_code == 404


def test_glances_cost_two_queries_whatever_the_number_of_domains(db: Any) -> None:
    domains = [domain_create(domain=f"m{i}.example.com", default_sender=f"news@m{i}.example.com") for i in range(5)]
    for domain in domains:
        traffic(domain)
        domain_pause(domain=domain, reason="x", actor="test")
    ProviderStream.objects.create(sending_domain=domains[0], provider="gmail", paused=True)
    switch = sending_switch()
    for many in (domains[:1], domains):
        with CaptureQueriesContext(connection) as queries:
            glances = domains_at_a_glance(many, switch=switch)
        assert len(queries) == 2 and [g.domain for g in glances] == many


def test_rate_now_counts_the_last_complete_minute_and_the_current_one(sending_domain: Any) -> None:
    now = timezone.now().replace(second=30, microsecond=0)
    minute = now.replace(second=0)
    DomainMinute.objects.bulk_create(
        DomainMinute(sending_domain=sending_domain, minute=minute - timedelta(minutes=m), sent=sent, bounced_hard=1)
        for m, sent in ((0, 30), (1, 150), (2, 999), (60 * 30, 5))  # the last: yesterday or earlier, outside the hour
    )
    [glance] = domains_at_a_glance([sending_domain], switch=sending_switch(), now=now)
    assert glance.rate_now == pytest.approx(180 / 90)
    assert glance.counters.sent_hour == 30 + 150 + 999 and glance.counters.bounced_hour == 3
    assert glance.last_hour == "1,179 sent, bounces 0.3%, complaints 0.00%"
