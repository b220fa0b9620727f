"""/metrics: every family is exported and moves when its event happens; multiprocess files add up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import get_connection
from prometheus_client.parser import text_string_to_metric_families

from deliverability.assessments import version_assess
from deliverability.models import DomainMinute, SendingDomain
from deliverability.services import domain_create, domain_rate, token_bucket_take
from deliverability.services.detection import detector_run
from dispatch.services.delivery import SmtpTransport
from dispatch.services.feedback import bounce_ingest
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import recipients
from tests.feedback_helpers import ARF_ABUSE, bounce_of, corpus, sent_message

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "mail.example.com"  # conftest's sending_domain
Samples = dict[tuple[str, frozenset], float]
FAMILIES = {
    "sendplane_messages", "sendplane_send_duration_seconds", "sendplane_token_bucket_denied",
    "sendplane_token_bucket_pushback_seconds", "sendplane_feedback_events", "sendplane_detector_pauses",
    "sendplane_detector_run_duration_seconds", "sendplane_detector_domains_in_excursion", "sendplane_detector_cusum_max",
    "sendplane_detector_last_run_timestamp_seconds", "sendplane_spam_score", "sendplane_http_requests",
    "sendplane_http_request_duration_seconds", "sendplane_outbox_messages", "sendplane_queue_due_messages",
    "sendplane_queue_oldest_due_age_seconds", "sendplane_domain_paused",
}


@pytest.fixture(autouse=True)
def _in_process(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.SENDPLANE_METRICS_TOKEN = ""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def scrape(client: Any) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def drain(domain_id: int) -> None:
    for _ in range(100):
        if not batch_send(domain_id=domain_id).more:
            return


def test_every_family_is_exported_before_anything_happened(client: Any) -> None:
    text = client.get("/metrics").content.decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert FAMILIES <= names, FAMILIES - names


def test_a_sent_batch_moves_outcomes_latency_and_empties_the_queue(campaign: Any, smtp_sink: Any, client: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k1", recipients=recipients(3))
    queued = scrape(client)
    assert value(queued, "sendplane_outbox_messages", domain=DOMAIN, status="queued") == 3
    assert value(queued, "sendplane_queue_due_messages", domain=DOMAIN) == 3
    assert value(queued, "sendplane_queue_oldest_due_age_seconds", domain=DOMAIN) >= 0
    drain(campaign.sending_domain_id)
    sent = scrape(client)
    assert moved(queued, sent, "sendplane_messages_total", domain=DOMAIN, status="sent") == 3
    assert moved(queued, sent, "sendplane_send_duration_seconds_count", domain=DOMAIN, transport="smtp") == 3
    assert ("sendplane_outbox_messages", frozenset({("domain", DOMAIN), ("status", "queued")})) not in sent
    assert ("sendplane_queue_due_messages", frozenset({("domain", DOMAIN)})) not in sent


def test_a_refused_recipient_counts_as_failed(campaign: Any, smtp_sink: Any, client: Any) -> None:
    before = scrape(client)
    rejected = {"address": "reject@example.org", "context": recipients(1)[0]["context"]}
    trigger_accept(campaign=campaign, idempotency_key="k1", recipients=[rejected])
    drain(campaign.sending_domain_id)
    assert moved(before, scrape(client), "sendplane_messages_total", domain=DOMAIN, status="failed") == 1


class RivalWorker(SmtpTransport):
    """This batch outlives its reservation (prepared past its deadline), and a second worker then empties the bucket."""

    def __init__(self, domain: SendingDomain) -> None:
        super().__init__(get_connection())
        self.domain = domain

    def open(self) -> None:
        expired = time.time() + settings.SENDPLANE_DISPATCH["HOLD_SECONDS"] + 1  # the clock the bucket reads, past the hold
        key, rate, burst = f"domain:{self.domain.pk}", domain_rate(self.domain), self.domain.burst
        token_bucket_take(key=key, rate=rate, burst=burst, wanted=burst, now=expired)
        super().open()


def test_tokens_the_bucket_refuses_are_counted_with_their_pushback(campaign: Any, smtp_sink: Any, client: Any) -> None:
    SendingDomain.objects.filter(pk=campaign.sending_domain_id).update(rate_per_second=0.01, burst=3)
    domain = SendingDomain.objects.get(pk=campaign.sending_domain_id)
    trigger_accept(campaign=campaign, idempotency_key="k1", recipients=recipients(3))
    before = scrape(client)
    batch_send(domain_id=domain.pk, transport=RivalWorker(domain))
    after = scrape(client)
    assert smtp_sink.pairs() == []
    assert moved(before, after, "sendplane_token_bucket_denied_total", domain=DOMAIN) == 3
    assert moved(before, after, "sendplane_token_bucket_pushback_seconds_count", domain=DOMAIN) == 1
    assert moved(before, after, "sendplane_token_bucket_pushback_seconds_sum", domain=DOMAIN) == pytest.approx(300)
    assert moved(before, after, "sendplane_messages_total", domain=DOMAIN, status="sent") == 0


def test_bounces_and_complaints_count_once_by_kind(campaign: Any, client: Any, django_capture_on_commit_callbacks: Any) -> None:
    raw = bounce_of(sent_message(campaign, "userunknown@example.jp"))
    before = scrape(client)
    with django_capture_on_commit_callbacks(execute=True):
        bounce_ingest(raw=raw, source="upload")
        bounce_ingest(raw=raw, source="upload")  # the same report again: stored once, counted once
        bounce_ingest(raw=corpus(ARF_ABUSE), source="upload")  # about nobody we mailed: no domain
    after = scrape(client)
    assert moved(before, after, "sendplane_feedback_events_total", domain=DOMAIN, event_type="bounced", kind="hard") == 1
    assert moved(before, after, "sendplane_feedback_events_total", domain="none", event_type="complained", kind="complaint") == 1


def test_a_scored_version_observes_its_spam_score(version: Any, client: Any) -> None:
    before = scrape(client)
    assessment = version_assess(version_id=version.pk)
    after = scrape(client)
    assert assessment is not None and assessment.state == "scored", assessment and assessment.not_scored_reason
    assert moved(before, after, "sendplane_spam_score_count") == 1
    assert moved(before, after, "sendplane_spam_score_sum") == pytest.approx(assessment.score)


def test_a_detector_run_exports_its_duration_excursions_and_pause(client: Any, django_capture_on_commit_callbacks: Any) -> None:
    end = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
    domains = [domain_create(domain=f"d{i}.example.com", default_sender=f"news@d{i}.example.com") for i in range(2)]
    DomainMinute.objects.bulk_create(
        DomainMinute(
            sending_domain=d, minute=end - timedelta(minutes=m + 1), sent=100, bounced_soft=1,
            bounced_hard=30 * (d == domains[0] and m < 10),
        )
        for d in domains
        for m in range(180)
    )
    before = scrape(client)
    with django_capture_on_commit_callbacks(execute=True):
        result = detector_run(now=end)
    after = scrape(client)
    assert [e.sending_domain_id for e in result.paused] == [domains[0].pk]
    assert moved(before, after, "sendplane_detector_pauses_total", signal="bounce", rule=result.paused[0].rule) == 1
    assert moved(before, after, "sendplane_detector_run_duration_seconds_count") == 1
    assert value(after, "sendplane_detector_domains_in_excursion", signal="bounce") >= 1
    assert value(after, "sendplane_detector_cusum_max", signal="bounce") >= 12
    assert value(after, "sendplane_detector_last_run_timestamp_seconds") > end.timestamp()
    assert value(after, "sendplane_domain_paused", domain="d0.example.com", by="detector") == 1
    assert value(after, "sendplane_domain_paused", domain="d1.example.com", by="") == 0


def test_api_requests_are_counted_by_route_name_never_by_path(client: Any, api_as: Any, marketer: User) -> None:
    api = api_as(marketer)
    before = scrape(client)
    assert api.get("/api/v1/campaigns/").status_code == 200
    assert api.get("/api/v1/campaigns/987654/").status_code == 404
    assert client.get("/no/such/987654").status_code == 404
    after = scrape(client)
    assert moved(before, after, "sendplane_http_requests_total", view="campaign-list", method="GET", code="200") == 1
    assert moved(before, after, "sendplane_http_requests_total", view="campaign-detail", method="GET", code="404") == 1
    assert moved(before, after, "sendplane_http_requests_total", view="unresolved", method="GET", code="404") == 1
    assert moved(before, after, "sendplane_http_request_duration_seconds_count", view="campaign-list") == 1
    assert not [labels for _, labels in after if any("987654" in v for _, v in labels)]


# --- multiprocess mode ----------------------------------------------------------------------------

CHILD = (
    "import sys; from controlplane import metrics; "
    "metrics.batch_recorded(domain='mp.example.com', counts={'sent': int(sys.argv[1])}); "
    "metrics.DETECTOR_CUSUM.labels(signal='bounce').set(float(sys.argv[1]))"
)


def test_multiprocess_mode_sums_every_process_files(client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for sent in ("2", "3"):  # two worker processes, one after the other
        subprocess.run([sys.executable, "-c", CHILD, sent], cwd=ROOT, env=env, check=True, timeout=60)
    assert len(list(tmp_path.glob("*.db"))) >= 2  # each process wrote its own files
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    samples = scrape(client)
    assert value(samples, "sendplane_messages_total", domain="mp.example.com", status="sent") == 5
    assert value(samples, "sendplane_detector_cusum_max", signal="bounce") == 3  # the most recent write wins
    assert not any(name.startswith("python_gc_") for name, _ in samples)  # not this process's own registry
    assert "# TYPE sendplane_outbox_messages gauge" in client.get("/metrics").content.decode()  # the database gauges still


def test_settings_refuse_a_multiprocess_dir_that_does_not_exist(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing"), "DJANGO_SETTINGS_MODULE": "controlplane.settings"}
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "PROMETHEUS_MULTIPROC_DIR" in done.stderr
