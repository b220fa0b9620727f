"""Campaign lifecycle: cancel (waiting messages end cancelled, nothing reaches SMTP after the call) and complete.

Against the real PostgreSQL, a real SMTP server on loopback and the real worker (batch_send), through the
services, the API and the admin; audited, idempotent, and out of the outbox gauge.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AuditEntry
from controlplane.metrics import outbox_family
from deliverability.models import SendingDomain
from dispatch.models import TERMINAL, Campaign, CampaignStatus, Message, MessageStatus
from dispatch.selectors import campaign_progress
from dispatch.services import campaigns as campaign_services
from dispatch.services.campaigns import (
    CampaignConflict,
    CampaignError,
    campaign_cancel,
    campaign_complete,
    campaign_set_status,
    messages_resolve_unknown,
)
from dispatch.services.delivery import SENT as SENT_OUTCOME
from dispatch.services.delivery import Outcome
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import BatchResult, batch_send, message_claim, messages_record
from tests.conftest import assert_error, recipients
from tests.test_oncall_controls import Workers, slow_sink, wait_for  # noqa: F401  # slow_sink: a fixture used below

DOMAIN = "mail.example.com"
CAMPAIGNS = "/admin/dispatch/campaign/"


def by_status(campaign: Campaign) -> dict[str, int]:
    return {status: n for status, n in campaign_progress(campaign=campaign).items() if n and status != "total"}


def drain(domain_id: int) -> None:
    for _ in range(200):
        if not batch_send(domain_id=domain_id).more:
            return


def outbox(domain: str = DOMAIN) -> dict[str, float]:
    return {sample.labels["status"]: sample.value for sample in outbox_family().samples if sample.labels["domain"] == domain}


def entries(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("id"))


def cancel_url(campaign: Campaign) -> str:
    return f"/api/v1/campaigns/{campaign.pk}/cancel"


def complete_url(campaign: Campaign) -> str:
    return f"/api/v1/campaigns/{campaign.pk}/complete"


# --- cancel ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_cancelling_2200_queued_messages_ends_them_all_in_batches_and_none_is_sent_after(
    campaign: Campaign, smtp_sink: Any, marketer: Any, client: Any, monkeypatch: Any
) -> None:
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(2200))
    assert outbox() == {"queued": 2200}
    monkeypatch.setattr(campaign_services, "CANCEL_BATCH", 1000)
    with CaptureQueriesContext(connection) as queries:
        result = campaign_cancel(campaign=campaign, actor=marketer, reason="wrong list")
    batches = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('UPDATE "dispatch_message"')]
    assert len(batches) == 3  # 1000 + 1000 + 200, each its own statement
    assert (result.changed, result.cancelled, result.in_flight) == (True, 2200, 0)
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.CANCELLED
    assert by_status(campaign) == {"cancelled": 2200}
    drain(campaign.sending_domain_id)  # the worker runs after the cancel: it claims nothing
    assert smtp_sink.received == []
    assert by_status(campaign) == {"cancelled": 2200}
    assert outbox() == {}
    gauge = [
        s for f in text_string_to_metric_families(client.get("/metrics").content.decode())
        for s in f.samples if s.name == "sendplane_outbox_messages" and s.labels.get("domain") == DOMAIN
    ]
    assert gauge == []
    (entry,) = entries("campaign.cancel")
    assert (entry.actor, entry.reason) == (marketer, "wrong list")
    assert entry.data == {"before": "running", "after": "cancelled", "waiting": 2200, "in_flight": 0}


@pytest.mark.django_db
def test_cancelling_twice_changes_nothing_the_second_time_and_says_so(campaign: Campaign, oncall: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(5))
    first = campaign_cancel(campaign=campaign, actor=oncall, reason="complaints")
    second = campaign_cancel(campaign=campaign, actor=oncall, reason="again")
    assert (first.changed, first.cancelled) == (True, 5)
    assert (second.changed, second.cancelled) == (False, 0)
    assert "already cancelled" in second.detail and "nothing changed" in second.detail
    assert len(entries("campaign.cancel")) == 1


@pytest.mark.django_db
def test_a_cancel_needs_a_reason(campaign: Campaign, oncall: Any) -> None:
    with pytest.raises(CampaignError, match="reason"):
        campaign_cancel(campaign=campaign, actor=oncall, reason="  ")
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DRAFT


@pytest.mark.django_db
def test_deferred_messages_are_cancelled_too_and_never_retried(campaign: Campaign, smtp_sink: Any, oncall: Any) -> None:
    body = recipients(3, prefix="tempfail") + recipients(2)
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=body)
    batch_send(domain_id=campaign.sending_domain_id)
    assert by_status(campaign) == {"deferred": 3, "sent": 2}
    result = campaign_cancel(campaign=campaign, actor=oncall, reason="stop")
    assert result.cancelled == 3
    Message.objects.filter(campaign=campaign).update(not_before=campaign.created_at)  # due again, were it claimable
    drain(campaign.sending_domain_id)
    assert by_status(campaign) == {"cancelled": 3, "sent": 2}
    assert len(smtp_sink.received) == 2


@pytest.mark.django_db
def test_messages_in_flight_at_the_cancel_end_with_their_real_outcome(campaign: Campaign, oncall: Any) -> None:
    """Claimed before the cancel: a 250 stays sent, a 5xx failed; a 4xx or a message never handed over ends cancelled."""
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(6))
    claimed = message_claim(domain=campaign.sending_domain, limit=4)
    result = campaign_cancel(campaign=campaign, actor=oncall, reason="stop")
    assert (result.cancelled, result.in_flight) == (2, 4)
    sent, failed, deferred, untouched = claimed
    outcomes = {
        sent.pk: SENT_OUTCOME,
        failed.pk: Outcome(MessageStatus.FAILED, 550, "5.1.1 no such user"),
        deferred.pk: Outcome(MessageStatus.DEFERRED, 451, "4.7.1 try again later"),
    }
    batch = BatchResult()
    messages_record(messages=claimed, outcomes=outcomes, result=batch)
    rows = dict(Message.objects.filter(pk__in=[m.pk for m in claimed]).values_list("pk", "status"))
    assert rows == {sent.pk: "sent", failed.pk: "failed", deferred.pk: "cancelled", untouched.pk: "cancelled"}
    assert batch.counts == {"sent": 1, "failed": 1, "cancelled": 2}
    assert Message.objects.get(pk=deferred.pk).last_code == 451  # the receiver's answer is kept
    assert by_status(campaign) == {"sent": 1, "failed": 1, "cancelled": 4}
    assert outbox() == {}


@pytest.mark.django_db
def test_rows_a_worker_holds_back_for_a_provider_go_cancelled_not_queued(campaign: Campaign, oncall: Any) -> None:
    """The worker's other way back to the queue (pacing, errors) ends a cancelled campaign's rows too."""
    from dispatch.services.worker import messages_release

    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(2))
    claimed = message_claim(domain=campaign.sending_domain, limit=2)
    campaign_cancel(campaign=campaign, actor=oncall, reason="stop")
    messages_release(claimed, not_before=campaign.created_at)
    assert by_status(campaign) == {"cancelled": 2}
    assert set(Message.objects.filter(campaign=campaign).values_list("attempts", flat=True)) == {0}


@pytest.mark.django_db(transaction=True)
def test_nothing_reaches_smtp_after_a_cancel_returns_with_three_workers_sending(
    campaign: Campaign, slow_sink: Any, api_as: Any, oncall: Any  # noqa: F811
) -> None:
    SendingDomain.objects.filter(pk=campaign.sending_domain_id).update(rate_per_second=200, burst=30)
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(1000))
    with Workers(campaign.sending_domain_id, 3) as workers:
        wait_for(lambda: len(slow_sink.received) >= 100, "100 messages at the sink")
        response = api_as(oncall).post(cancel_url(campaign), {"reason": "wrong segment"}, format="json")
        returned_at = time.time()
        assert response.status_code == 200, response.content
        time.sleep(0.5)  # the workers keep trying; they must hand nothing over, and put nothing back in the queue
    assert workers.errors == []
    arrivals = [r.at for r in slow_sink.received]
    assert [a for a in arrivals if a > returned_at] == []
    progress = by_status(campaign)
    assert set(progress) <= {"sent", "cancelled"}, progress  # none left queued, deferred or sending
    assert progress["sent"] == len(arrivals) and progress["cancelled"] == 1000 - len(arrivals)
    answer = response.json()
    assert answer["campaign"]["status"] == "cancelled" and answer["changed"] is True
    assert 0 < answer["cancelled"] <= progress["cancelled"]  # the rest: in flight at the cancel, put back by a worker as cancelled


# --- complete -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_complete_is_refused_while_messages_wait_and_accepted_once_all_have_ended(
    campaign: Campaign, smtp_sink: Any, marketer: Any
) -> None:
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(3))
    with pytest.raises(CampaignConflict, match="3 message\\(s\\) not ended \\(3 queued\\)") as refused:
        campaign_complete(campaign=campaign, actor=marketer)
    assert (refused.value.status, refused.value.field) == (409, "status")
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.RUNNING
    drain(campaign.sending_domain_id)
    result = campaign_complete(campaign=campaign, actor=marketer, reason="wave done")
    assert result.changed and Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.COMPLETED
    again = campaign_complete(campaign=campaign, actor=marketer)
    assert not again.changed and "already completed" in again.detail
    (entry,) = entries("campaign.complete")
    assert entry.data == {"before": "running", "after": "completed", "messages": {"sent": 3}}


@pytest.mark.django_db
def test_finished_campaigns_refuse_the_other_ending(campaign: Campaign, oncall: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(2))
    campaign_cancel(campaign=campaign, actor=oncall, reason="stop")
    with pytest.raises(CampaignConflict, match="is cancelled"):
        campaign_complete(campaign=campaign, actor=oncall)
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.COMPLETED)
    with pytest.raises(CampaignConflict, match="is completed"):
        campaign_cancel(campaign=campaign, actor=oncall, reason="too late")


@pytest.mark.django_db
def test_a_draft_is_cancelled_but_not_completed(campaign: Campaign, oncall: Any) -> None:
    with pytest.raises(CampaignConflict, match="is draft"):
        campaign_complete(campaign=campaign, actor=oncall)
    assert campaign_cancel(campaign=campaign, actor=oncall, reason="never mind").changed


@pytest.mark.django_db
def test_setting_the_status_by_name_is_the_same_cancel(campaign: Campaign, oncall: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(4))
    campaign_set_status(campaign=campaign, status=CampaignStatus.CANCELLED, actor=oncall, reason="by name")
    assert by_status(campaign) == {"cancelled": 4}
    with pytest.raises(CampaignError, match="must be cancelled or completed"):
        campaign_set_status(campaign=campaign, status=CampaignStatus.RUNNING)


@pytest.mark.django_db
def test_unknown_messages_of_a_cancelled_campaign_are_not_requeued(campaign: Campaign, oncall: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(2))
    Message.objects.filter(campaign=campaign).update(status=MessageStatus.UNKNOWN)
    campaign_cancel(campaign=campaign, actor=oncall, reason="stop")
    with pytest.raises(CampaignConflict, match="never sent again"):
        messages_resolve_unknown(campaign=Campaign.objects.get(pk=campaign.pk), outcome="requeue", actor=oncall)
    assert by_status(campaign) == {"unknown": 2}


def test_cancelled_is_terminal() -> None:
    assert MessageStatus.CANCELLED in TERMINAL


# --- the API --------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["marketer", "oncall", "admin_role"])
def test_marketers_oncall_and_admins_cancel_through_the_api(campaign: Campaign, api_as: Any, request: Any, who: str) -> None:
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(3))
    response = api_as(request.getfixturevalue(who)).post(cancel_url(campaign), {"reason": "wrong list"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["changed"], body["cancelled"], body["in_flight"]) == (True, 3, 0)
    assert body["campaign"]["status"] == "cancelled" and body["campaign"]["progress"]["cancelled"] == 3
    detail = api_as(request.getfixturevalue(who)).get(f"/api/v1/campaigns/{campaign.pk}/").json()
    assert detail["status"] == "cancelled"
    assert detail["progress"]["cancelled"] == 3 and detail["progress"]["queued"] == 0 and detail["progress"]["total"] == 3


@pytest.mark.django_db
@pytest.mark.parametrize("url", [cancel_url, complete_url])
def test_outsiders_and_anonymous_are_refused_and_nothing_changes(campaign: Campaign, api_as: Any, outsider: Any, url: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(2))
    assert_error(api_as(outsider).post(url(campaign), {"reason": "x"}, format="json"), 403)
    assert_error(api_as(None).post(url(campaign), {"reason": "x"}, format="json"), 401)
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.RUNNING
    assert by_status(campaign) == {"queued": 2}
    assert entries("campaign.cancel") == entries("campaign.complete") == []


@pytest.mark.django_db
def test_api_refusals_are_one_line(campaign: Campaign, api_as: Any, oncall: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(2))
    client = api_as(oncall)
    assert_error(client.post(cancel_url(campaign), {}, format="json"), 400, "reason")
    assert_error(client.post(cancel_url(campaign), {"reason": "x", "force": True}, format="json"), 400, "force")
    assert_error(client.post("/api/v1/campaigns/999999/cancel", {"reason": "x"}, format="json"), 404)
    body = assert_error(client.post(complete_url(campaign), {}, format="json"), 409, "status")
    assert "2 queued" in body["error"]
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.RUNNING
    assert client.post(cancel_url(campaign), {"reason": "x"}, format="json").status_code == 200
    again = client.post(cancel_url(campaign), {"reason": "x"}, format="json").json()
    assert (again["changed"], again["cancelled"]) == (False, 0)
    assert assert_error(client.post(complete_url(campaign), {}, format="json"), 409, "status")


@pytest.mark.django_db
def test_complete_through_the_api(campaign: Campaign, smtp_sink: Any, api_as: Any, marketer: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(2))
    drain(campaign.sending_domain_id)
    body = api_as(marketer).post(complete_url(campaign), {"reason": "done"}, format="json").json()
    assert body["changed"] is True and body["campaign"]["status"] == "completed" and body["campaign"]["progress"]["sent"] == 2
    assert entries("campaign.complete")[0].reason == "done"


# --- the admin ------------------------------------------------------------------------------------


def act(client: Any, action: str, pk: int, **form: Any) -> Any:
    first = client.post(CAMPAIGNS, {"action": action, ACTION_CHECKBOX_NAME: [pk]})
    if not form:
        return first
    return client.post(CAMPAIGNS, {"action": action, ACTION_CHECKBOX_NAME: [pk], "apply": "1", **form}, follow=True)


@pytest.mark.django_db
def test_the_admin_cancels_with_a_reason_and_shows_the_one_line_result(campaign: Campaign, staff_client: Any, marketer: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(3))
    client = staff_client(marketer)
    page = act(client, "cancel", campaign.pk)
    assert page.status_code == 200 and b'name="reason"' in page.content
    assert b"This field is required" in act(client, "cancel", campaign.pk, reason="").content
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.RUNNING
    done = act(client, "cancel", campaign.pk, reason="wrong list")
    assert f"campaign {campaign.pk} cancelled: 3 waiting message(s) cancelled".encode() in done.content
    assert by_status(campaign) == {"cancelled": 3}
    assert b"3 cancelled" in client.get(CAMPAIGNS).content  # the progress column
    assert entries("campaign.cancel")[0].actor == marketer


@pytest.mark.django_db
def test_the_admin_marks_completed_or_shows_why_not(campaign: Campaign, smtp_sink: Any, staff_client: Any, oncall: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="wave", recipients=recipients(2))
    client = staff_client(oncall)
    refused = act(client, "complete", campaign.pk, reason="")
    assert b"not ended (2 queued)" in refused.content
    drain(campaign.sending_domain_id)
    done = act(client, "complete", campaign.pk, reason="")
    assert f"campaign {campaign.pk} completed".encode() in done.content
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.COMPLETED


@pytest.mark.django_db
def test_an_outsider_has_no_cancel_or_complete_action(campaign: Campaign, staff_client: Any, outsider: Any, marketer: Any) -> None:
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.RUNNING)
    act(staff_client(outsider), "cancel", campaign.pk, reason="let me")
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.RUNNING
    page = staff_client(marketer).get(CAMPAIGNS).content
    assert b'value="cancel"' in page and b'value="complete"' in page and b'value="pause"' not in page


@pytest.mark.django_db(transaction=True)
def test_a_trigger_that_read_the_campaign_before_a_cancel_inserts_nothing_after_it(campaign: Campaign, oncall: Any) -> None:
    """The trigger's rows commit before the cancel flips (and are cancelled by it), or the trigger is refused."""
    import threading

    from django.db import connections, transaction

    from dispatch.services.triggers import TriggerError

    trigger_accept(campaign=campaign, idempotency_key="first", recipients=recipients(5))
    stale = Campaign.objects.get(pk=campaign.pk)  # read as running, before the cancel
    holding, release = threading.Event(), threading.Event()

    def cancel() -> None:
        try:
            with transaction.atomic():  # a cancel's flip, held open: the trigger must wait for it, then see it
                Campaign.objects.select_for_update(no_key=True).get(pk=campaign.pk)
                Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.CANCELLED)
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=cancel)
    thread.start()
    assert holding.wait(10)
    timer = threading.Timer(0.5, release.set)
    timer.start()
    with pytest.raises(TriggerError, match="is cancelled"):
        trigger_accept(campaign=stale, idempotency_key="late", recipients=recipients(5, prefix="late"))
    thread.join()
    assert not Message.objects.filter(recipient__startswith="late").exists()
