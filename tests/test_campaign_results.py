"""Issue 17: results per campaign and version, counted as events arrive, equal to a replay of what happened.

A campaign of two variants is sent to a real SMTP server on loopback that
refuses one recipient domain for good and defers another; then DSNs, ESP
webhooks (delivered, complaints, opens, clicks, some twice) and one-click
unsubscribes arrive through their real paths. The results the API reports
must equal the counts recomputed from the script, message by message.
"""

from __future__ import annotations

from typing import Any

import pytest
from anymail.signals import AnymailTrackingEvent

from dispatch.models import CampaignResult, Message, MessageStatus
from dispatch.selectors import Rate
from dispatch.services.delivery import ESP_METADATA_KEY
from dispatch.services.feedback import bounce_ingest
from dispatch.services.triggers import trigger_accept
from dispatch.services.unsubscribe import unsubscribe_one_click, unsubscribe_token
from dispatch.services.webhooks import webhook_event_ingest
from tests.conftest import SIMPLE_VARIABLES
from tests.feedback_helpers import dsn, send_all
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.django_db


def people() -> list[dict[str, Any]]:
    domains = ["ok.example.org"] * 6 + ["gone.example.org", "busy.example.org"]
    return [{"address": f"p{i}@{domains[i % len(domains)]}", "context": SIMPLE_VARIABLES} for i in range(64)]


def esp(message: Message, event_type: str, event_id: str) -> None:
    event = AnymailTrackingEvent(
        event_type=event_type, recipient=message.recipient, event_id=event_id, esp_event={},
        metadata={ESP_METADATA_KEY: message.uuid.hex},
    )
    webhook_event_ingest(esp_name="Postmark", event=event)


def test_results_equal_a_replay_of_what_happened(two_variants: Any, smtp_sink: SmtpSink, settings: Any) -> None:
    campaign = two_variants
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "BATCH_SIZE": 16}
    smtp_sink.handler.replies_by_domain["gone.example.org"] = "550 5.1.1 <x>: Recipient address rejected: User unknown"
    smtp_sink.handler.replies_by_domain["busy.example.org"] = "451 4.3.0 Try again later"
    trigger_accept(campaign=campaign, idempotency_key="wave-1", recipients=people())
    send_all(campaign)

    # The script: what happens to which messages (the oracle counts it message by message, below).
    sent = list(Message.objects.filter(campaign=campaign, status=MessageStatus.SENT).order_by("id"))
    assert len(sent) == 48
    bounced_late, complained, unsubscribed, opened, clicked = sent[0:4], sent[4:7], sent[7:12], sent[10:30], sent[20:26]
    delivered = sent[12:40]
    for m in bounced_late:
        bounce_ingest(raw=dsn(m, "5.1.1", "550 5.1.1 user unknown"), source="upload")
        bounce_ingest(raw=dsn(m, "5.1.1", "550 5.1.1 user unknown") + b"\r\n", source="upload")  # a second copy, other bytes
    for m in delivered:
        esp(m, "delivered", f"d-{m.pk}")
    for m in complained:
        esp(m, "complained", f"c-{m.pk}")
        esp(m, "complained", f"c2-{m.pk}")  # reported twice by the provider: one complaint of one message
    for m in unsubscribed:
        unsubscribe_one_click(token=unsubscribe_token(m))
        unsubscribe_one_click(token=unsubscribe_token(m))
    for m in opened:
        for k in range(3):  # opened three times (or Apple's proxy fetched it): one message opened
            esp(m, "opened", f"o{k}-{m.pk}")
    for m in clicked:
        esp(m, "clicked", f"k-{m.pk}")

    expected: dict[int, dict[str, int]] = {}
    for m in Message.objects.filter(campaign=campaign):
        row = expected.setdefault(m.version_id, dict.fromkeys(CampaignResult.COUNTS, 0))
        row["accepted"] += 1
        row["sent"] += m.status == MessageStatus.SENT
        row["failed"] += m.status == MessageStatus.FAILED
        row["deferred"] += m.recipient.endswith("@busy.example.org")
        row["bounced_hard"] += m.recipient.endswith("@gone.example.org") or m in bounced_late
        row["delivered"] += m in delivered
        row["complained"] += m in complained
        row["unsubscribed"] += m in unsubscribed
        row["opened"] += m in opened
        row["clicked"] += m in clicked
    assert len(expected) == 2  # both variants were sent

    body = api_results(campaign)
    got = {v["version_id"]: v["counts"] for v in body["versions"]}
    assert got == expected
    assert body["total"]["counts"] == {name: sum(row[name] for row in expected.values()) for name in CampaignResult.COUNTS}
    total = body["total"]["counts"]
    bounce = body["total"]["rates"]["bounce"]
    assert (bounce["events"], bounce["trials"]) == (total["bounced_hard"] + total["bounced_soft"], total["sent"] + total["failed"])
    assert bounce["low"] < bounce["value"] < bounce["high"]
    leader = body["leader"]
    assert leader["metric"] == "click" and leader["version_id"] in expected and 0.5 <= leader["probability"] <= 1
    assert leader["suggested"] == (leader["probability"] >= 0.95)


def api_results(campaign: Any) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

    from access.services import token_create
    from tests.conftest import _user

    reader = User.objects.filter(username="rita-reader").first() or _user("rita-reader", "marketer")
    _, plaintext = token_create(user=reader, name="t", created_by=None)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    response = client.get(f"/api/v1/campaigns/{campaign.pk}/results")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_rate_carries_its_interval() -> None:
    assert Rate(0, 0).value is None and Rate(0, 0).interval is None
    low, high = Rate(0, 40).interval or (None, None)
    assert low == 0.0 and 0.08 < high < 0.09  # "0 of 40" is "0, up to 8.8%"
    low, high = Rate(50, 100).interval or (None, None)
    assert 0.40 < low < 0.41 and 0.59 < high < 0.60


def test_a_winner_is_suggested_only_with_its_confidence() -> None:
    from dispatch.selectors import Result, results_leader

    def version(vid: int, sent: int, clicked: int, complained: int = 0) -> Result:
        counts = dict.fromkeys(CampaignResult.COUNTS, 0) | {"sent": sent, "clicked": clicked, "complained": complained}
        return Result(counts=counts, version_id=vid, variant=f"v{vid}", number=1)

    close = results_leader([version(1, 1000, 50), version(2, 1000, 55)], "click")
    assert close is not None and close.result.version_id == 2 and 0.5 < close.probability < 0.95 and not close.suggested
    clear = results_leader([version(1, 5000, 250), version(2, 5000, 400)], "click")
    assert clear is not None and clear.result.version_id == 2 and clear.probability > 0.99 and clear.suggested
    fewer = results_leader([version(1, 5000, 0, complained=2), version(2, 5000, 0, complained=30)], "complaint")
    assert fewer is not None and fewer.result.version_id == 1 and fewer.suggested  # lower is better
    assert results_leader([version(1, 100, 5)], "click") is None


def test_cost_is_projected_at_launch_and_spent_per_version_at_the_price_of_the_day(
    two_variants: Any, smtp_sink: SmtpSink, settings: Any, staff_client: Any, marketer: Any
) -> None:
    campaign = two_variants
    settings.SENDPLANE_COST_PER_1000, settings.SENDPLANE_COST_CURRENCY = 0.80, "EUR"
    smtp_sink.handler.replies_by_domain["gone.example.org"] = "550 5.1.1 <x>: Recipient address rejected: User unknown"
    trigger_accept(campaign=campaign, idempotency_key="wave-1", recipients=people())
    before = api_results(campaign)["total"]["cost"]
    assert before == {"spent": "0.00", "projected": f"{64 * 0.0008:.2f}", "currency": "EUR"}
    send_all(campaign)
    settings.SENDPLANE_COST_PER_1000 = 2.00  # the price changes: what was handed over keeps its price
    body = api_results(campaign)
    handed = {v["version_id"]: v["counts"]["sent"] + v["counts"]["failed"] for v in body["versions"]}
    for version in body["versions"]:
        assert version["cost"]["spent"] == f"{handed[version['version_id']] * 0.0008:.2f}"
    waiting = 64 - sum(handed.values())  # the deferred ones, at today's price
    assert body["total"]["cost"]["projected"] == f"{sum(handed.values()) * 0.0008 + waiting * 0.002:.2f}"
    page = staff_client(marketer).get("/admin/dispatch/campaign/launch/").content.decode()
    assert "2 EUR per 1,000 messages" in page
