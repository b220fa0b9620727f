"""The reputation chart's data (deliverability/chart_data.py) and its admin view: ranges and buckets, a line per
provider stream, the detector's ceilings, pause and resume marks with who acted and why, and who may read it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.utils import timezone

from deliverability import detector
from deliverability.chart_data import RANGES, chart_window, reputation_chart_data
from deliverability.charts import reputation_chart
from deliverability.models import DomainMinute, PauseEvidence, ProviderStream, SendingDomain
from deliverability.services import domain_pause, domain_resume, sending_pause_all
from deliverability.services.streams import stream_resume

pytestmark = pytest.mark.django_db
NOW = datetime(2025, 6, 12, 14, 32, 20, tzinfo=UTC)  # mid-minute, mid-bucket for every step


def chart_url(domain: SendingDomain, range_name: str = "24h") -> str:
    return f"/admin/deliverability/sendingdomain/{domain.pk}/chart.json?range={range_name}"


def minute(at: datetime, domain: SendingDomain, provider: str = "", **counts: int) -> DomainMinute:
    return DomainMinute.objects.create(sending_domain=domain, provider=provider, minute=at, **counts)


def detector_pause(domain: SendingDomain) -> PauseEvidence:
    evidence = PauseEvidence(
        minute=timezone.now().replace(second=0, microsecond=0), signal="bounce", rule="ceiling", baseline=0.012,
        observed=0.349, statistic=0.21, threshold=0.10, volume=43, events=15,
    )
    domain_pause(domain=domain, reason=evidence.summary(), evidence=evidence)
    return evidence


# --- ranges and buckets -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("range_name", "buckets", "step", "end"),
    [
        ("1h", 60, 1, datetime(2025, 6, 12, 14, 33, tzinfo=UTC)),
        ("24h", 1440, 1, datetime(2025, 6, 12, 14, 33, tzinfo=UTC)),
        ("7d", 1008, 10, datetime(2025, 6, 12, 14, 40, tzinfo=UTC)),
        ("30d", 720, 60, datetime(2025, 6, 12, 15, 0, tzinfo=UTC)),
    ],
)
def test_each_range_has_its_step_and_ends_with_the_current_bucket(
    sending_domain: SendingDomain, range_name: str, buckets: int, step: int, end: datetime
) -> None:
    data = reputation_chart_data(domain=sending_domain, range_name=range_name, now=NOW)
    assert data["step_minutes"] == step and len(data["t"]) == buckets <= 1500
    assert data["end"] == int(end.timestamp()) and data["start"] == int((end - RANGES[range_name].span).timestamp())
    assert data["t"][0] == data["start"] and data["t"][1] - data["t"][0] == 60 * step
    assert data["t"][-1] <= NOW.timestamp() < data["end"]
    assert len(data["sent_per_minute"]) == len(data["bounce_rate"]) == len(data["complaint_rate"]) == buckets


def test_minutes_sum_into_ten_minute_buckets_as_messages_a_minute(sending_domain: SendingDomain) -> None:
    base = datetime(2025, 6, 11, 10, 0, tzinfo=UTC)
    minute(base + timedelta(minutes=3), sending_domain, "gmail", sent=40, bounced_hard=2)
    minute(base + timedelta(minutes=7), sending_domain, "gmail", sent=60, bounced_soft=1, bounced_reputation=1, complained=1)
    minute(base + timedelta(minutes=10), sending_domain, "gmail", sent=5)  # the next bucket
    data = reputation_chart_data(domain=sending_domain, range_name="7d", now=NOW)
    index = data["t"].index(int(base.timestamp()))
    [gmail] = data["providers"]
    assert gmail["sent_per_minute"][index : index + 2] == [10.0, 0.5]  # 100 over 10 minutes, then 5
    assert gmail["bounce_rate"][index] == pytest.approx(0.04) and data["complaint_rate"][index] == pytest.approx(0.01)
    assert data["bounce_rate"][index - 1] is None  # nothing sent: a gap, not a zero


def test_the_current_bucket_is_divided_by_the_minutes_it_covered(sending_domain: SendingDomain) -> None:
    minute(datetime(2025, 6, 12, 14, 0, tzinfo=UTC), sending_domain, sent=33)
    minute(datetime(2025, 6, 12, 14, 32, tzinfo=UTC), sending_domain, sent=33)  # the current minute counts
    minute(datetime(2025, 6, 12, 13, 59, tzinfo=UTC), sending_domain, sent=120)
    data = reputation_chart_data(domain=sending_domain, range_name="30d", now=NOW)
    assert data["sent_per_minute"][-1] == 2.0  # 66 over 14:00-14:32, 33 minutes
    assert data["sent_per_minute"][-2] == 2.0  # 120 over a whole hour
    assert data["totals"]["sent"] == 186


def test_rows_outside_the_window_are_left_out(sending_domain: SendingDomain) -> None:
    minute(datetime(2025, 6, 12, 13, 33, tzinfo=UTC), sending_domain, sent=7)  # the hour's first minute (to 14:33)
    minute(datetime(2025, 6, 12, 13, 32, tzinfo=UTC), sending_domain, sent=1000)  # just before
    data = reputation_chart_data(domain=sending_domain, range_name="1h", now=NOW)
    assert data["totals"]["sent"] == 7 and data["sent_per_minute"][0] == 7.0


def test_rates_are_over_the_trailing_window_not_one_bucket(sending_domain: SendingDomain) -> None:
    """One minute's 5 bounces among 10 is not a 50% bounce rate after 100 clean messages the minute before."""
    first = datetime(2025, 6, 12, 12, 0, tzinfo=UTC)
    minute(first, sending_domain, "gmail", sent=100)
    minute(first + timedelta(minutes=1), sending_domain, "gmail", sent=10, bounced_hard=5, complained=1)
    data = reputation_chart_data(domain=sending_domain, range_name="24h", now=NOW)
    assert data["rate_minutes"] == 15
    index = data["t"].index(int(first.timestamp()))
    assert data["bounce_rate"][index : index + 2] == [0.0, pytest.approx(5 / 110, abs=1e-5)]
    assert data["providers"][0]["bounce_rate"][index + 1] == pytest.approx(5 / 110, abs=1e-5)
    assert data["complaint_rate"][index + 15] == 0.1  # the clean minute has left the window
    assert data["bounce_rate"][index + 16] is None and data["bounce_rate"][index - 1] is None


def test_the_first_rates_read_the_minutes_before_the_window(sending_domain: SendingDomain) -> None:
    window = chart_window("24h", NOW)
    minute(window.start - timedelta(minutes=3), sending_domain, sent=50, bounced_hard=5)
    data = reputation_chart_data(domain=sending_domain, range_name="24h", now=NOW)
    assert data["bounce_rate"][0] == 0.1 and data["totals"]["sent"] == 0  # in the rate, not in the window's counts


def test_a_line_per_provider_stream_in_a_fixed_order(sending_domain: SendingDomain) -> None:
    at = datetime(2025, 6, 12, 14, 10, tzinfo=UTC)
    for provider, sent, bounced in [("", 10, 5), ("yahoo", 20, 0), ("gmail", 50, 1), ("microsoft", 30, 3)]:
        minute(at, sending_domain, provider, sent=sent, bounced_hard=bounced)
    data = reputation_chart_data(domain=sending_domain, range_name="1h", now=NOW)
    assert [p["key"] for p in data["providers"]] == ["gmail", "microsoft", "yahoo", "other"]
    index = data["t"].index(int(at.timestamp()))
    by_key = {p["key"]: p for p in data["providers"]}
    assert by_key["other"]["bounce_rate"][index] == 0.5 and by_key["gmail"]["sent_per_minute"][index] == 50.0
    assert by_key["microsoft"]["totals"] == {"sent": 30, "bounced": 3, "complained": 0, "bounce_rate": 0.1, "complaint_rate": 0.0}
    assert data["sent_per_minute"][index] == 110.0 and data["bounce_rate"][index] == pytest.approx(9 / 110, abs=1e-5)


def test_the_thresholds_are_the_detectors_ceilings(sending_domain: SendingDomain) -> None:
    data = reputation_chart_data(domain=sending_domain, range_name="24h", now=NOW)
    assert {t["key"]: t["value"] for t in data["thresholds"]} == {
        "bounce_rate": detector.DEFAULT.ceiling[0], "complaint_rate": detector.DEFAULT.ceiling[1],
    }


def test_the_data_is_a_fixed_number_of_queries_whatever_the_range(
    sending_domain: SendingDomain, django_assert_max_num_queries: Any
) -> None:
    window = chart_window("30d", NOW)
    DomainMinute.objects.bulk_create(
        DomainMinute(sending_domain=sending_domain, provider=p, minute=window.start + timedelta(minutes=m), sent=3)
        for m in range(-60, 30 * 24 * 60, 7) for p in ("gmail", "")  # an hour before the window too
    )
    inside = DomainMinute.objects.filter(minute__gte=window.start, minute__lt=window.end).count()
    with django_assert_max_num_queries(5):  # counters, audit trail, evidence, streams and switch paused from before
        data = reputation_chart_data(domain=sending_domain, range_name="30d", now=NOW)
    assert len(data["t"]) == 720 and data["totals"]["sent"] == 3 * inside


def test_window_rounds_up_to_whole_steps() -> None:
    window = chart_window("7d", datetime(2025, 6, 12, 14, 39, 59, tzinfo=UTC))
    assert window.end == datetime(2025, 6, 12, 14, 40, tzinfo=UTC) and window.buckets == 1008
    window = chart_window("7d", datetime(2025, 6, 12, 14, 40, 0, tzinfo=UTC))
    assert window.end == datetime(2025, 6, 12, 14, 50, tzinfo=UTC)  # the minute 14:40 is in the bucket 14:40-14:50


# --- marks: who paused and resumed, and why ---------------------------------------------------------------------------


def test_a_detector_pause_and_a_persons_resume_carry_who_and_why(sending_domain: SendingDomain, oncall: Any) -> None:
    detector_pause(sending_domain)
    domain_resume(domain=sending_domain, actor=oncall, force=True, reason="DNS fixed: SPF includes the relay again")
    pause, resume = reputation_chart_data(domain=sending_domain, range_name="1h")["marks"]
    assert (pause["kind"], pause["scope"], pause["actor"]) == ("pause", "domain", "detector")
    assert pause["reason"].startswith("bounce rate 34.90% over 43 messages vs baseline 1.20%")
    assert pause["text"].startswith("Paused ") and " UTC by detector: bounce rate 34.90% over 43 messages" in pause["text"]
    assert pause["evidence"]["signal"] == "bounce" and pause["evidence"]["volume"] == 43
    assert (resume["kind"], resume["actor"], resume["reason"]) == ("resume", oncall.username, "DNS fixed: SPF includes the relay again")
    assert resume["text"].endswith(f"by {oncall.username}: DNS fixed: SPF includes the relay again")
    assert pause["at"] <= resume["at"]


def test_evidence_without_an_audit_entry_is_still_a_mark(sending_domain: SendingDomain) -> None:
    PauseEvidence.objects.create(
        sending_domain=sending_domain, provider="gmail", minute=timezone.now(), signal="complaint", rule="cusum",
        baseline=0.001, observed=0.02, statistic=14.0, threshold=12.0, volume=500, events=10,
    )
    [mark] = reputation_chart_data(domain=sending_domain, range_name="1h")["marks"]
    assert (mark["scope"], mark["provider"], mark["actor"]) == ("stream", "gmail", "detector")
    assert "Paused the gmail stream" in mark["text"] and "complaint rate 2.00% over 500 messages" in mark["reason"]


def test_stream_and_global_pauses_are_marked_with_their_actor(sending_domain: SendingDomain, oncall: Any, admin_role: Any) -> None:
    ProviderStream.objects.create(
        sending_domain=sending_domain, provider="yahoo", paused=True, paused_by="detector", paused_at=timezone.now()
    )
    stream_resume(domain=sending_domain, provider="yahoo", actor=oncall, reason="Yahoo lifted the block")
    sending_pause_all(reason="relay maintenance", actor=admin_role)
    marks = reputation_chart_data(domain=sending_domain, range_name="1h")["marks"]
    assert [(m["kind"], m["scope"], m["provider"], m["actor"]) for m in marks] == [
        ("resume", "stream", "yahoo", oncall.username), ("pause", "all", None, admin_role.username),
    ]
    assert "Resumed the yahoo stream" in marks[0]["text"] and marks[1]["text"].endswith("by ada-admin: relay maintenance")


def test_a_pause_from_before_the_window_is_marked_since(sending_domain: SendingDomain) -> None:
    long_ago = timezone.now() - timedelta(hours=3)
    SendingDomain.objects.filter(pk=sending_domain.pk).update(
        paused=True, paused_at=long_ago, paused_by="omar-oncall", paused_reason="list import under review"
    )
    sending_domain.refresh_from_db()
    [mark] = reputation_chart_data(domain=sending_domain, range_name="1h")["marks"]
    assert mark["at"] == pytest.approx(long_ago.timestamp()) and mark["actor"] == "omar-oncall"
    assert " since " in mark["text"] and mark["text"].endswith("by omar-oncall: list import under review")


def test_other_domains_marks_are_not_shown(sending_domain: SendingDomain) -> None:
    from deliverability.services import domain_create

    other = domain_create(domain="other.example.com", default_sender="a@other.example.com", rate_per_second=10, burst=10)
    detector_pause(other)
    assert reputation_chart_data(domain=sending_domain, range_name="1h")["marks"] == []


# --- the admin view and the markup ----------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["marketer", "oncall", "admin_role"])
def test_every_role_reads_the_chart_data(sending_domain: SendingDomain, staff_client: Any, actor: str, request: Any) -> None:
    detector_pause(sending_domain)
    minute(timezone.now().replace(second=0, microsecond=0), sending_domain, "gmail", sent=12)
    response = staff_client(request.getfixturevalue(actor)).get(chart_url(sending_domain, "7d"))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["domain"] == "mail.example.com" and body["range"] == "7d" and body["ranges"] == ["1h", "24h", "7d", "30d"]
    assert [p["key"] for p in body["providers"]] == ["gmail"] and body["marks"][0]["actor"] == "detector"


def test_an_account_without_a_role_is_refused(sending_domain: SendingDomain, staff_client: Any, outsider: Any) -> None:
    assert staff_client(outsider).get(chart_url(sending_domain)).status_code == 403


def test_anonymous_goes_to_the_login_page(sending_domain: SendingDomain, client: Any) -> None:
    response = client.get(chart_url(sending_domain))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_unknown_range_is_400_and_unknown_domain_404(sending_domain: SendingDomain, staff_client: Any, oncall: Any) -> None:
    client = staff_client(oncall)
    response = client.get(chart_url(sending_domain, "2y"))
    assert response.status_code == 400 and response.json()["fields"] == {"range": ["one of 1h, 24h, 7d, 30d"]}
    assert client.get("/admin/deliverability/sendingdomain/999999/chart.json").status_code == 404


def test_the_markup_points_at_the_data_and_the_projects_own_files(sending_domain: SendingDomain) -> None:
    html = str(reputation_chart(sending_domain, range="7d"))
    assert f'data-src="/admin/deliverability/sendingdomain/{sending_domain.pk}/chart.json"' in html and 'data-range="7d"' in html
    assert '<script type="module" src="/static/sendplane/charts.js">' in html
    assert 'data-uplot="/static/vendor/uplot/uPlot.iife.min.js"' in html and "/static/vendor/uplot/uPlot.min.css" in html
    assert all(url.startswith("/") and not url.startswith("//") for url in re.findall(r'(?:src|href|uplot)="([^"]*)"', html))  # no CDN
    assert "sp-chart-compact" in str(reputation_chart(sending_domain, compact=True))
    with pytest.raises(ValueError, match="unknown range"):
        reputation_chart(sending_domain, range="1y")


def test_the_vendored_files_are_found_by_staticfiles() -> None:
    script = finders.find("vendor/uplot/uPlot.iife.min.js")
    assert script and open(script).read(60).startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert finders.find("vendor/uplot/LICENSE") and finders.find("sendplane/charts.js") and finders.find("sendplane/charts.css")


def test_the_domain_page_carries_the_chart(sending_domain: SendingDomain, staff_client: Any, oncall: Any) -> None:
    html = staff_client(oncall).get(f"/admin/deliverability/sendingdomain/{sending_domain.pk}/change/").content.decode()
    assert f'data-src="/admin/deliverability/sendingdomain/{sending_domain.pk}/chart.json"' in html and 'class="sp-chart"' in html
