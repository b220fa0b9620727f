"""The detector against the database: counters in, pause with evidence, audit and alert out; state kept."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import numpy as np
import pytest

from audit.models import AuditEntry
from deliverability import detector
from deliverability.models import DetectorState, DomainMinute, PauseEvidence, SendingDomain
from deliverability.services import domain_create, domain_pause, domain_resume
from deliverability.services.detection import detector_run
from deliverability.tasks import detect

pytestmark = pytest.mark.django_db
# Fixtures write their own entries (domain.create, token.create); these tests look at pauses and resumes.
PAUSES = AuditEntry.objects.filter(action__in=["domain.pause", "domain.resume"])
END = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)  # the first minute not yet complete


def traffic(domain: SendingDomain, *, minutes: int, sent: int, bounced: int, until: datetime = END) -> None:
    """``minutes`` complete minutes ending before ``until``, each with these counts."""
    DomainMinute.objects.bulk_create(
        DomainMinute(sending_domain=domain, minute=until - timedelta(minutes=m + 1), sent=sent, bounced_soft=bounced)
        for m in range(minutes)
    )


def bump(domain: SendingDomain, *, last: int, bounced: int, until: datetime = END) -> None:
    """The last ``last`` minutes before ``until`` get this many hard bounces too."""
    since = until - timedelta(minutes=last)
    DomainMinute.objects.filter(sending_domain=domain, minute__gte=since, minute__lt=until).update(bounced_hard=bounced)


@pytest.fixture
def domains(db: Any) -> list[SendingDomain]:
    return [domain_create(domain=f"d{i}.example.com", default_sender=f"news@d{i}.example.com") for i in range(3)]


def test_a_list_import_pauses_that_domain_only_with_evidence_and_an_audit_entry(domains: list[SendingDomain]) -> None:
    for domain in domains:
        traffic(domain, minutes=180, sent=100, bounced=1)
    bump(domains[0], last=10, bounced=30)
    result = detector_run(now=END)
    assert result.minutes == 180 and result.domains == 3
    assert [e.sending_domain_id for e in result.paused] == [domains[0].pk]
    paused = {d.domain: d.paused for d in SendingDomain.objects.all()}
    assert paused == {"d0.example.com": True, "d1.example.com": False, "d2.example.com": False}
    evidence = PauseEvidence.objects.get()
    assert evidence.signal == "bounce" and evidence.observed > 0.15 and evidence.baseline < 0.05
    assert END - timedelta(minutes=10) <= evidence.minute < END
    entry = PAUSES.get()
    assert (entry.action, entry.actor_label, entry.data["evidence"]) == ("domain.pause", "detector", evidence.pk)
    assert SendingDomain.objects.get(pk=domains[0].pk).paused_by == "detector"


def test_a_second_run_in_the_same_minute_feeds_nothing_and_decides_nothing(domains: list[SendingDomain]) -> None:
    traffic(domains[0], minutes=180, sent=100, bounced=1)
    bump(domains[0], last=10, bounced=30)
    detector_run(now=END)
    again = detector_run(now=END + timedelta(seconds=30))
    assert (again.minutes, again.paused) == (0, [])
    assert PauseEvidence.objects.count() == 1 and PAUSES.count() == 1


def test_state_survives_between_runs_and_new_domains_start_cold(domains: list[SendingDomain]) -> None:
    traffic(domains[0], minutes=120, sent=100, bounced=1, until=END - timedelta(minutes=60))
    detector_run(now=END - timedelta(minutes=60))
    row = DetectorState.objects.get(name="default")
    assert row.minute == END - timedelta(minutes=61)
    late = domain_create(domain="late.example.com", default_sender="news@late.example.com")
    traffic(domains[0], minutes=60, sent=100, bounced=1)
    result = detector_run(now=END)
    assert result.minutes == 60 and result.domains == 4
    state = detector.DetectorState.from_bytes(bytes(DetectorState.objects.get(name="default").state))
    ids = np.frombuffer(bytes(DetectorState.objects.get(name="default").domain_ids), dtype=np.int64).tolist()
    assert ids[-1] == late.pk
    # The first run backfilled BACKFILL_MINUTES (180), the second fed the 60 since; the late domain saw only those.
    assert state.minutes_seen[ids.index(domains[0].pk)] == 240 and state.minutes_seen[ids.index(late.pk)] == 60


def test_a_deleted_domain_drops_out_and_the_others_keep_what_they_learned(domains: list[SendingDomain]) -> None:
    for domain in domains:
        traffic(domain, minutes=30, sent=10, bounced=0, until=END - timedelta(minutes=10))
    detector_run(now=END - timedelta(minutes=10))
    SendingDomain.objects.filter(pk=domains[1].pk).delete()
    detector_run(now=END)
    state = detector.DetectorState.from_bytes(bytes(DetectorState.objects.get(name="default").state))
    ids = np.frombuffer(bytes(DetectorState.objects.get(name="default").domain_ids), dtype=np.int64).tolist()
    assert ids == [domains[0].pk, domains[2].pk]
    assert state.minutes_seen.tolist() == [190, 190]  # 180 backfilled, then 10 more


def test_a_domain_resumed_while_another_was_deleted_starts_cold_and_the_rest_keep_what_they_learned(
    domains: list[SendingDomain], oncall: Any
) -> None:
    for domain in domains:
        traffic(domain, minutes=30, sent=10, bounced=0, until=END - timedelta(minutes=10))
    detector_run(now=END - timedelta(minutes=10))
    SendingDomain.objects.filter(pk=domains[1].pk).delete()
    domain_pause(domain=domains[2], reason="held by hand", actor=oncall)
    domain_resume(domain=domains[2], actor=oncall, reason="fine after all")
    detector_run(now=END)
    state = detector.DetectorState.from_bytes(bytes(DetectorState.objects.get(name="default").state))
    ids = np.frombuffer(bytes(DetectorState.objects.get(name="default").domain_ids), dtype=np.int64).tolist()
    assert ids == [domains[0].pk, domains[2].pk]
    assert state.minutes_seen.tolist() == [190, 10]


def test_resume_with_force_makes_the_detector_forget_the_domain(domains: list[SendingDomain], oncall: Any) -> None:
    traffic(domains[0], minutes=180, sent=100, bounced=1)
    bump(domains[0], last=10, bounced=30)
    detector_run(now=END)
    domain_resume(domain=SendingDomain.objects.get(pk=domains[0].pk), actor=oncall, force=True, reason="import rolled back")
    # The resume only bumps the domain's epoch (it never locks the detector's row); the next run forgets the domain.
    assert SendingDomain.objects.get(pk=domains[0].pk).detector_epoch == 1
    assert detector_run(now=END + timedelta(minutes=1)).paused == []
    state = detector.DetectorState.from_bytes(bytes(DetectorState.objects.get(name="default").state))
    ids = np.frombuffer(bytes(DetectorState.objects.get(name="default").domain_ids), dtype=np.int64).tolist()
    index = ids.index(domains[0].pk)
    assert state.minutes_seen[index] == 1 and not state.paused[index] and state.cusum[:, index].sum() == 0
    assert state.minutes_seen[ids.index(domains[1].pk)] == 181
    epochs = np.frombuffer(bytes(DetectorState.objects.get(name="default").domain_epochs), dtype=np.int64).tolist()
    assert epochs[index] == 1 and epochs[ids.index(domains[1].pk)] == 0


def test_a_decision_on_data_read_before_a_resume_does_not_pause_the_resumed_domain(domains: list[SendingDomain], oncall: Any) -> None:
    domain = domain_pause(domain=domains[0], reason="held by hand", actor=oncall).domain
    read_before = domain.detector_epoch  # what a detector run read just before the resume committed
    domain_resume(domain=domain, actor=oncall, force=True, reason="list checked")
    evidence = PauseEvidence(minute=END, signal="bounce", rule="cusum", baseline=0.01, observed=0.3, statistic=20, threshold=12, volume=900)
    outcome = domain_pause(domain=domain, reason=evidence.summary(), evidence=evidence, expected_epoch=read_before)
    assert not outcome.changed and not SendingDomain.objects.get(pk=domain.pk).paused
    assert not PauseEvidence.objects.exists() and PAUSES.filter(action="domain.pause").count() == 1  # the person's only


def test_a_tiny_domain_with_one_bounce_is_never_paused(domains: list[SendingDomain]) -> None:
    traffic(domains[0], minutes=180, sent=1, bounced=0)
    bump(domains[0], last=1, bounced=1)
    assert detector_run(now=END).paused == []


def test_the_beat_task_is_the_same_run_and_can_be_switched_off(domains: list[SendingDomain], settings: Any) -> None:
    traffic(domains[0], minutes=180, sent=100, bounced=1)
    bump(domains[0], last=10, bounced=30)
    settings.SENDPLANE_DETECTOR = {**settings.SENDPLANE_DETECTOR, "ENABLED": False}
    assert detect(now=END.isoformat()) == 0 and not DetectorState.objects.exists()
    settings.SENDPLANE_DETECTOR = {**settings.SENDPLANE_DETECTOR, "ENABLED": True}
    assert detect(now=END.isoformat()) == 1


# --- the alert webhook ----------------------------------------------------------------------


@pytest.fixture
def alert_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server on loopback that records the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


@pytest.mark.django_db(transaction=True)  # notifications go out on commit
def test_an_automatic_pause_is_posted_to_the_alert_webhook(domains: list[SendingDomain], settings: Any, alert_receiver: Any) -> None:
    url, received = alert_receiver
    settings.SENDPLANE_ALERT_WEBHOOK_URL = url
    traffic(domains[0], minutes=180, sent=100, bounced=1)
    bump(domains[0], last=10, bounced=30)
    detector_run(now=END)
    [alert] = received
    assert alert["event"] == "domain.paused" and alert["domain"] == "d0.example.com"
    assert alert["evidence"]["signal"] == "bounce" and alert["evidence"]["volume"] > 0
    assert "paused d0.example.com" in alert["text"]


@pytest.mark.django_db(transaction=True)
def test_a_dead_alert_webhook_never_undoes_the_pause(domains: list[SendingDomain], settings: Any) -> None:
    settings.SENDPLANE_ALERT_WEBHOOK_URL = "http://127.0.0.1:9/nobody-listens"
    traffic(domains[0], minutes=180, sent=100, bounced=1)
    bump(domains[0], last=10, bounced=30)
    assert len(detector_run(now=END).paused) == 1
    assert SendingDomain.objects.get(pk=domains[0].pk).paused
