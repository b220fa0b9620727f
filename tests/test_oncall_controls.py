"""On-call controls: pause and resume of a domain, a campaign and everything, by role, idempotent, audited,
and the pause guarantee under a running campaign with several workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connections

from audit.models import AuditEntry
from deliverability.models import PauseEvidence, SendingDomain, SendingSwitch
from deliverability.services import domain_pause
from dispatch.models import Campaign, CampaignStatus, Message, MessageStatus
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import assert_error, recipients, relay_at
from tests.smtp_sink import SmtpSink

DOMAIN = "mail.example.com"
WAIT_SECONDS = 60


def controls(campaign_id: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every control endpoint with a valid body."""
    return {
        "domain pause": (f"/api/v1/domains/{DOMAIN}/pause", {"reason": "test"}),
        "domain resume": (f"/api/v1/domains/{DOMAIN}/resume", {}),
        "campaign pause": (f"/api/v1/campaigns/{campaign_id}/pause", {"reason": "test"}),
        "campaign resume": (f"/api/v1/campaigns/{campaign_id}/resume", {}),
        "pause all": ("/api/v1/pause-all", {"reason": "test"}),
        "resume all": ("/api/v1/resume-all", {}),
    }


READS = ["/api/v1/domains/", f"/api/v1/domains/{DOMAIN}/", f"/api/v1/domains/{DOMAIN}/evidence", "/api/v1/sending"]


def state(campaign: Any) -> tuple[Any, ...]:
    domain = SendingDomain.objects.get(pk=campaign.sending_domain_id)
    switch = SendingSwitch.objects.filter(name="global").first()
    # Token creation (api_as) is audited too; count only what the controls could have written.
    controls_audited = AuditEntry.objects.filter(action__regex=r"^(domain|campaign|sending)\.").count()
    return domain.paused, Campaign.objects.get(pk=campaign.pk).status, bool(switch and switch.paused), controls_audited


# --- roles ------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("name", list(controls(0)))
@pytest.mark.parametrize("who", ["marketer", "outsider", None])
def test_controls_are_refused_to_marketers_outsiders_and_anonymous_and_change_nothing(
    campaign: Any, api_as: Any, request: Any, name: str, who: str | None
) -> None:
    url, body = controls(campaign.pk)[name]
    before = state(campaign)
    response = api_as(request.getfixturevalue(who) if who else None).post(url, body, format="json")
    assert_error(response, 403 if who else 401)
    assert state(campaign) == before


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["oncall", "admin_role"])
def test_oncall_and_admin_pause_and_resume_every_scope(campaign: Any, api_as: Any, request: Any, who: str) -> None:
    client = api_as(request.getfixturevalue(who))
    for name, (url, body) in controls(campaign.pk).items():
        response = client.post(url, body, format="json")
        assert response.status_code == 200, (name, response.content)
        assert response.json()["paused"] is name.endswith("pause") or name == "pause all"
    assert state(campaign)[:3] == (False, CampaignStatus.RUNNING, False)
    assert [e.action for e in AuditEntry.objects.order_by("id")][-6:] == [
        "domain.pause", "domain.resume", "campaign.pause", "campaign.resume", "sending.pause_all", "sending.resume_all",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["marketer", "oncall", "admin_role"])
@pytest.mark.parametrize("url", READS)
def test_every_role_reads_the_state(campaign: Any, api_as: Any, request: Any, who: str, url: str) -> None:
    assert api_as(request.getfixturevalue(who)).get(url).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("url", READS)
def test_reads_are_refused_to_outsiders(campaign: Any, api_as: Any, outsider: Any, url: str) -> None:
    assert_error(api_as(outsider).get(url), 403)
    assert_error(api_as(None).get(url), 401)


# --- idempotency, audit, bad input ------------------------------------------------------------


@pytest.mark.django_db
def test_pausing_twice_answers_unchanged_and_writes_one_audit_entry(campaign: Any, api_as: Any, oncall: Any) -> None:
    client = api_as(oncall)
    first = client.post(f"/api/v1/domains/{DOMAIN}/pause", {"reason": "spam trap hits"}, format="json").json()
    second = client.post(f"/api/v1/domains/{DOMAIN}/pause", {"reason": "again"}, format="json").json()
    assert (first["changed"], second["changed"], second["reason"]) == (True, False, "spam trap hits")
    entry = AuditEntry.objects.get(action="domain.pause")
    assert (entry.actor, entry.reason) == (oncall, "spam trap hits")


@pytest.mark.django_db
def test_a_detector_pause_needs_force_to_resume(campaign: Any, api_as: Any, oncall: Any) -> None:
    evidence = PauseEvidence(
        minute=campaign.created_at, signal="complaint", rule="cusum", baseline=0.0005, observed=0.01,
        statistic=15.0, threshold=12.0, volume=900, events=9,
    )
    domain_pause(domain=campaign.sending_domain, reason=evidence.summary(), evidence=evidence)
    client = api_as(oncall)
    refused = assert_error(client.post(f"/api/v1/domains/{DOMAIN}/resume", {}, format="json"), 409)
    assert "paused by the detector" in refused["error"]
    assert SendingDomain.objects.get(pk=campaign.sending_domain_id).paused
    body = {"force": True, "ramp_minutes": 60, "reason": "complaints explained"}
    resumed = client.post(f"/api/v1/domains/{DOMAIN}/resume", body, format="json")
    assert resumed.status_code == 200 and resumed.json()["changed"] is True
    domain = SendingDomain.objects.get(pk=campaign.sending_domain_id)
    assert not domain.paused and domain.ramp_minutes == 60
    detail = client.get(f"/api/v1/domains/{DOMAIN}/").json()
    assert detail["current_rate"] == pytest.approx(domain.rate_per_second * 0.1, rel=0.05)
    assert detail["last_evidence"]["signal"] == "complaint" and detail["last_evidence"]["resumed_at"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "body", "status", "field"),
    [
        ("/api/v1/domains/nowhere.example/pause", {"reason": "x"}, 404, None),
        ("/api/v1/campaigns/999999/pause", {"reason": "x"}, 404, None),
        (f"/api/v1/domains/{DOMAIN}/pause", {}, 400, "reason"),
        (f"/api/v1/domains/{DOMAIN}/pause", {"reason": ""}, 400, "reason"),
        ("/api/v1/pause-all", {"reason": "x", "scope": "all"}, 400, "scope"),
        (f"/api/v1/domains/{DOMAIN}/resume", {"ramp_minutes": -1}, 400, "ramp_minutes"),
        (f"/api/v1/domains/{DOMAIN}/resume", {"force": "maybe"}, 400, "force"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    campaign: Any, api_as: Any, oncall: Any, url: str, body: dict[str, Any], status: int, field: str | None
) -> None:
    before = state(campaign)
    assert_error(api_as(oncall).post(url, body, format="json"), status, field)
    assert state(campaign) == before


@pytest.mark.django_db
def test_malformed_json_is_400_and_changes_nothing(campaign: Any, api_as: Any, oncall: Any) -> None:
    before = state(campaign)
    response = api_as(oncall).post("/api/v1/pause-all", '{"reason": ', content_type="application/json")
    assert_error(response, 400)
    assert state(campaign) == before


@pytest.mark.django_db
def test_a_completed_campaign_cannot_be_paused(campaign: Any, api_as: Any, oncall: Any) -> None:
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.COMPLETED)
    body = assert_error(api_as(oncall).post(f"/api/v1/campaigns/{campaign.pk}/pause", {"reason": "x"}, format="json"), 400, "status")
    assert "completed" in body["error"]


# --- the guarantee under load -----------------------------------------------------------------


@pytest.fixture
def slow_sink(settings: Any) -> Iterator[SmtpSink]:
    """A loaded MTA (20 ms a message), so a pause lands while workers are mid-hand-over."""
    with SmtpSink(delay_seconds=0.02) as sink, relay_at(settings, sink):
        yield sink


class Workers:
    """Several dispatch workers, each a thread with its own database connection."""

    def __init__(self, domain_id: int, count: int) -> None:
        self.stop, self.errors = threading.Event(), []
        self.threads = [threading.Thread(target=self._run, args=(domain_id,), daemon=True) for _ in range(count)]

    def _run(self, domain_id: int) -> None:
        try:
            while not self.stop.is_set():
                if not batch_send(domain_id=domain_id).more:
                    self.stop.wait(0.02)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.errors.append(exc)
        finally:
            connections.close_all()

    def __enter__(self) -> Workers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(WAIT_SECONDS)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scope", ["domain", "campaign", "all"])
def test_nothing_reaches_smtp_after_a_pause_returns_with_three_workers_sending(
    campaign: Any, slow_sink: SmtpSink, api_as: Any, oncall: Any, scope: str
) -> None:
    SendingDomain.objects.filter(pk=campaign.sending_domain_id).update(rate_per_second=200, burst=30)
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(1000))
    url, body = controls(campaign.pk)[{"domain": "domain pause", "campaign": "campaign pause", "all": "pause all"}[scope]]
    with Workers(campaign.sending_domain_id, 3) as workers:
        wait_for(lambda: len(slow_sink.received) >= 100, "100 messages at the sink")
        response = api_as(oncall).post(url, body, format="json")
        returned_at = time.time()
        assert response.status_code == 200, response.content
        time.sleep(0.5)  # the workers keep trying; they must hand nothing over
    assert workers.errors == []
    arrivals = [r.at for r in slow_sink.received]
    late = [a for a in arrivals if a > returned_at]
    assert late == [], f"{len(late)} message(s) reached SMTP after the pause returned"
    # Nothing lost: every message is sent or waiting, none stranded in `sending`.
    statuses = set(Message.objects.values_list("status", flat=True))
    assert statuses <= {MessageStatus.SENT, MessageStatus.QUEUED}
    assert Message.objects.filter(status=MessageStatus.SENT).count() == len(arrivals) < 1000
