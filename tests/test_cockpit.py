"""The admin cockpit: every role reads it, an outsider is refused, and its cost does not grow with the fleet."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deliverability.assessments import version_assess
from deliverability.models import DomainMinute, PauseEvidence, ProviderStream, SendingDomain
from deliverability.services import domain_create, domain_pause, domain_resume, sending_pause_all
from dispatch.models import Campaign, Message, MessageStatus
from dispatch.services.campaigns import campaign_create
from dispatch.services.triggers import trigger_accept
from templates_registry import services
from templates_registry.models import VariantVersion, VersionAssessment
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES, recipients

pytestmark = pytest.mark.django_db
COCKPIT = "/admin/cockpit/"


def traffic(domain: Any, *, sent: int = 120, bounced: int = 3) -> None:
    """The last 30 minutes of counters, the current minute included (what the send rate reads)."""
    now = timezone.now().replace(second=0, microsecond=0)
    DomainMinute.objects.bulk_create(
        DomainMinute(sending_domain=domain, minute=now - timedelta(minutes=m), sent=sent, bounced_soft=bounced) for m in range(30)
    )


def detector_pause(domain: Any) -> PauseEvidence:
    evidence = PauseEvidence(
        minute=timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=5), signal="bounce", rule="cusum",
        baseline=0.02, observed=0.31, statistic=27.5, threshold=12.0, volume=400, events=124,
    )
    domain_pause(domain=domain, reason=evidence.summary(), evidence=evidence)
    return evidence


@pytest.fixture
def running(campaign: Campaign) -> Campaign:
    """Four recipients accepted (the campaign runs), one already sent and one failed."""
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(4))
    campaign.refresh_from_db()
    first, second = Message.objects.filter(campaign=campaign).order_by("id")[:2]
    Message.objects.filter(pk=first.pk).update(status=MessageStatus.SENT)
    Message.objects.filter(pk=second.pk).update(status=MessageStatus.FAILED)
    traffic(campaign.sending_domain)
    return campaign


@pytest.mark.parametrize("actor", ["marketer", "oncall", "admin_role"])
def test_every_role_sees_progress_chart_decisions_health_and_switch(running: Campaign, staff_client: Any, actor: str, request: Any) -> None:
    evidence = detector_pause(running.sending_domain)
    page = staff_client(request.getfixturevalue(actor)).get(COCKPIT)
    assert page.status_code == 200
    html = page.content.decode()
    assert running.status == "running"
    campaigns = section(html, "campaigns")
    assert "Welcome wave" in campaigns and '<svg class="progress"' in campaigns
    assert "<title>sent 1</title>" in campaigns and "<title>failed 1</title>" in campaigns and "<title>queued 2</title>" in campaigns
    assert "2/4 done" in campaigns
    domains = section(html, "domains")
    assert "mail.example.com" in domains and "paused by detector" in domains
    # The chart loads its data (ceilings and pause marks included: tests/test_chart_data.py) when scrolled to.
    chart_url = f"/admin/deliverability/sendingdomain/{running.sending_domain_id}/chart.json"
    assert f'class="sp-chart sp-chart-compact" data-src="{chart_url}"' in domains
    decisions = section(html, "decisions")
    assert "bounce rate 31.00% over 400 messages" in decisions and "124 event(s)" in decisions and evidence.rule in decisions
    health = section(html, "health")
    assert re.search(r"<td>spamd</td><td class=\"state-up\">up</td>", health), health
    assert re.search(r"<td>broker</td><td class=\"state-up\">up</td>", health), health
    assert "All sending running." in section(html, "switch")


def section(html: str, name: str) -> str:
    match = re.search(rf'<section id="{name}"[^>]*>(.*?)</section>', html, re.S)
    assert match, f"no {name} panel"
    return match.group(1)


def test_send_rate_is_the_last_complete_minute_and_the_current_one_over_their_seconds(sending_domain: Any) -> None:
    from deliverability.selectors import domain_minute_series
    from dispatch.cockpit import _rates

    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(hours=1)  # fixed: no minute boundary to race
    DomainMinute.objects.bulk_create(
        DomainMinute(sending_domain=sending_domain, minute=minute - timedelta(minutes=m), sent=sent)
        for m, sent in ((0, 30), (1, 150), (2, 999))
    )
    series = domain_minute_series(start=minute - timedelta(hours=1), end=minute + timedelta(minutes=1), domain_ids=[sending_domain.pk])
    assert _rates(series, minute + timedelta(seconds=30)) == {sending_domain.pk: pytest.approx(180 / 90)}


def test_the_page_shows_the_domains_rate(running: Campaign, staff_client: Any, oncall: Any) -> None:
    # 120 sent in each of the last minutes: 240 over 60 to 120 seconds (120 if the minute turned since).
    html = staff_client(oncall).get(COCKPIT).content.decode()
    rate = float(re.search(r"([\d.]+)/s</td>", section(html, "campaigns")).group(1))  # type: ignore[union-attr]
    assert 1.0 <= rate <= 4.0


def test_dependencies_down_and_the_global_pause_are_shown(running: Campaign, staff_client: Any, oncall: Any, settings: Any) -> None:
    settings.SPAMD_PORT = 9  # discard: nothing listens on loopback
    settings.CELERY_BROKER_URL = "amqp://guest:hunter2@127.0.0.1:9//"
    sending_pause_all(reason="provider incident, ticket OPS-9", actor=oncall)
    html = staff_client(oncall).get(COCKPIT).content.decode()
    health = section(html, "health")
    assert '<td>spamd</td><td class="state-down">down</td>' in health and "127.0.0.1:9" in health
    assert '<td>broker</td><td class="state-down">down</td>' in health and "hunter2" not in html
    assert "All sending PAUSED" in section(html, "switch") and "provider incident, ticket OPS-9" in html


def test_outsider_is_refused_and_anonymous_sent_to_login(staff_client: Any, outsider: Any, client: Any) -> None:
    assert staff_client(outsider).get(COCKPIT).status_code == 403
    anonymous = client.get(COCKPIT)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]


def test_the_admin_index_links_to_the_cockpit(staff_client: Any, marketer: Any) -> None:
    page = staff_client(marketer).get("/admin/")
    assert page.status_code == 200 and f'href="{COCKPIT}"'.encode() in page.content


def test_empty_fleet_renders(staff_client: Any, oncall: Any) -> None:
    html = staff_client(oncall).get(COCKPIT).content.decode()
    assert "No campaign is running or paused." in html and "No sending domain yet." in html and "The detector has paused nothing." in html


def grow(campaign: Campaign, count: int) -> None:
    """More domains, each with a running campaign, traffic and a detector pause."""
    start = Campaign.objects.count()
    for i in range(start, start + count):
        domain = domain_create(domain=f"m{i}.example.com", default_sender=f"news@m{i}.example.com", rate_per_second=100, burst=100)
        other = campaign_create(name=f"wave {i}", template=campaign.template, sending_domain=domain)
        trigger_accept(campaign=other, idempotency_key="k", recipients=recipients(3, prefix=f"c{i}-"))
        traffic(domain)
        detector_pause(domain)


def test_query_count_does_not_grow_with_campaigns_and_domains(
    running: Campaign, staff_client: Any, oncall: Any, django_assert_max_num_queries: Any
) -> None:
    client = staff_client(oncall)
    grow(running, 1)
    counts = []
    for extra in (0, 4):  # 2 campaigns and domains, then 6
        grow(running, extra)
        with CaptureQueriesContext(connection) as queries:
            html = client.get(COCKPIT).content.decode()
        counts.append(len(queries))
        assert section(html, "domains").count('class="sp-chart sp-chart-compact"') == 2 + extra
        assert section(html, "campaigns").count('<svg class="progress"') == 2 + extra
    assert counts[0] == counts[1], counts
    # 7 for the panels; the rest is the session, the user and the admin's navigation (each_context), all fixed.
    with django_assert_max_num_queries(40):
        client.get(COCKPIT)




def test_paused_and_slowed_streams_are_shown_with_why(running: Campaign, staff_client: Any, oncall: Any) -> None:
    from deliverability.models import ProviderStream

    domain_id = running.sending_domain_id
    ProviderStream.objects.create(
        sending_domain_id=domain_id, provider="gmail", paused=True, paused_by="detector",
        paused_reason="authentication failing at gmail: 550 5.7.26 Unauthenticated email", rate_factor=1.0,
    )
    ProviderStream.objects.create(sending_domain_id=domain_id, provider="yahoo", rate_factor=0.25)
    ProviderStream.objects.create(sending_domain_id=domain_id, provider="microsoft")  # healthy: not listed
    streams = section(staff_client(oncall).get(COCKPIT).content.decode(), "streams")
    assert "authentication failing at gmail" in streams and "25% of its rate" in streams
    assert "microsoft" not in streams


# --- the home page (/admin/): the cockpit's panels -----------------------------------------------------------------

HOME = "/admin/"


def test_the_home_lists_a_paused_domain_with_its_reason(running: Campaign, staff_client: Any, marketer: Any, oncall: Any) -> None:
    domain_pause(domain=running.sending_domain, reason="provider incident OPS-12", actor=oncall)
    html = staff_client(marketer).get(HOME).content.decode()
    paused = section(html, "paused")
    assert "mail.example.com" in paused and "provider incident OPS-12" in paused and oncall.username in paused
    row = domain_row(html, "mail.example.com")
    assert "sp-pill-paused" in row and re.search(r"[\d.]+/s of 0\.0/s", row), row  # nothing allowed while paused
    assert "Welcome wave" in section(html, "campaigns") and "domain paused" in section(html, "campaigns")


def test_the_home_says_when_nothing_is_paused(running: Campaign, staff_client: Any, oncall: Any) -> None:
    html = staff_client(oncall).get(HOME).content.decode()
    assert "Nothing is paused or slowed." in section(html, "paused")
    assert "sp-pill-running" in domain_row(html, "mail.example.com")


def test_the_home_shows_the_rate_now_against_the_rate_allowed_and_the_warm_up_step(
    running: Campaign, staff_client: Any, oncall: Any
) -> None:
    SendingDomain.objects.filter(pk=running.sending_domain_id).update(
        warmup_schedule=[5, 20, 50], warmup_daily_caps=[10_000, 50_000, 200_000], warmup_started_on=date(2026, 1, 5), warmup_step=1,
    )
    row = domain_row(staff_client(oncall).get(HOME).content.decode(), "mail.example.com")
    # 120 sent in each of the last minutes: 240 over 60 to 120 seconds; the step allows 20/s of the configured 1000/s.
    rate = float(re.search(r"([\d.]+)/s of 20\.0/s", row).group(1))  # type: ignore[union-attr]
    assert 1.0 <= rate <= 4.0
    assert "step 2 of 3: 20/s" in row and "of 50,000 today" in row


def test_the_home_lists_versions_in_review_with_their_scores(running: Campaign, staff_client: Any, oncall: Any) -> None:
    variant = running.template.variants.get()
    waiting = services.version_create(variant=variant, mjml_body=SIMPLE_MJML, subject="Spring picks", variables=SIMPLE_VARIABLES)
    scored = version_assess(version_id=waiting.pk)  # the real spamd
    assert scored is not None and scored.score is not None
    close = services.version_create(variant=variant, mjml_body=SIMPLE_MJML, subject="Close to the line", variables=SIMPLE_VARIABLES)
    VersionAssessment.objects.create(
        version=close, content_hash=close.content_hash, state="scored", score=4.6, spamd_threshold=5.0, scored_at=timezone.now()
    )
    review = section(staff_client(oncall).get(HOME).content.decode(), "review")
    assert "Spring picks" in review and f">{scored.score:g}</span>" in review
    assert "Close to the line" in review and 'sp-badge-amber" title="within 1 of the template' in review
    approved = VariantVersion.objects.get(status="approved")  # the running campaign's: nothing left to approve
    assert f"/variantversion/{approved.pk}/change/" not in review


def test_the_home_lists_the_days_incidents_and_not_older_ones(running: Campaign, staff_client: Any, oncall: Any) -> None:
    domain = running.sending_domain
    detector_pause(domain)
    domain_resume(domain=domain, actor=oncall, force=True, reason="read the evidence: a typo list", ramp_minutes=10)
    old_entry(action="domain.pause", target=domain, reason="old incident", hours=25)
    incidents = section(staff_client(oncall).get(HOME).content.decode(), "incidents")
    assert "Domain paused" in incidents and "bounce rate 31.00% over 400 messages" in incidents and ">detector<" in incidents
    assert "Domain resumed" in incidents and "read the evidence: a typo list" in incidents
    assert "old incident" not in incidents


def test_the_home_shows_the_detectors_verdict_per_domain(running: Campaign, staff_client: Any, oncall: Any) -> None:
    detector_pause(running.sending_domain)
    row = domain_row(staff_client(oncall).get(HOME).content.decode(), "mail.example.com")
    assert "sp-pill-alert" in row and "Paused this domain" in row


def test_the_site_is_named_sendplane_everywhere(staff_client: Any, oncall: Any, client: Any) -> None:
    login_page = client.get("/admin/login/").content.decode()
    pages = [staff_client(oncall).get(url).content.decode() for url in (HOME, COCKPIT, "/admin/deliverability/sendingdomain/")]
    for html in [login_page, *pages]:
        assert "Sendplane" in html and "Django administration" not in html and "Django site admin" not in html
    assert "<title>Cockpit | Sendplane</title>" in pages[0]


def test_an_account_without_a_role_sees_no_panel(staff_client: Any, outsider: Any, sending_domain: Any) -> None:
    page = staff_client(outsider).get(HOME)
    assert page.status_code == 200 and 'id="sending"' not in page.content.decode()


def test_the_home_query_count_does_not_grow_with_the_fleet(running: Campaign, staff_client: Any, oncall: Any) -> None:
    client = staff_client(oncall)
    counts = []
    for extra in (1, 4):  # 2 domains, campaigns, versions in review and incidents, then 6
        grow(running, extra)
        for i in range(extra):
            variant = running.template.variants.get()
            services.version_create(variant=variant, mjml_body=SIMPLE_MJML, subject=f"S{i}", variables=SIMPLE_VARIABLES)
            domain = SendingDomain.objects.exclude(pk=running.sending_domain_id).order_by("-id")[i]
            ProviderStream.objects.create(sending_domain=domain, provider="gmail", paused=True, paused_reason="550 5.7.26")
        with CaptureQueriesContext(connection) as queries:
            html = client.get(HOME).content.decode()
        counts.append(len(queries))
        assert section(html, "sending").count('class="sp-domain') == SendingDomain.objects.count() == {1: 2, 4: 6}[extra]
        assert section(html, "review").count("/variantversion/") == {1: 1, 4: 5}[extra]
        assert section(html, "paused").count("550 5.7.26") == {1: 1, 4: 5}[extra]
    assert counts[0] == counts[1], counts


def old_entry(*, action: str, target: Any, reason: str, hours: int) -> None:
    """An audit entry written ``hours`` ago: the trail is append-only (no UPDATE) and stamps rows on insert, so raw SQL."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditentry (created_at, actor_label, action, target_type, target_id, target_label, reason, data)"
            " VALUES (%s, 'oncall', %s, %s, %s, %s, %s, '{}')",
            [timezone.now() - timedelta(hours=hours), action, target._meta.label_lower, str(target.pk), str(target), reason],
        )


def domain_row(html: str, domain: str) -> str:
    match = re.search(rf'<tr class="sp-domain[^"]*" data-domain="{re.escape(domain)}">(.*?)</tr>', section(html, "sending"), re.S)
    assert match, f"no row for {domain}"
    return match.group(1)
