"""Structured logs: one JSON object a line, and one correlation id from the API request to the bounce.

The id travels request -> Trigger.correlation_id -> task header -> the
worker's lines about the trigger's messages -> the feedback events about them.
Lines are read back through the real formatter, as a log shipper would.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from anymail.signals import AnymailTrackingEvent
from celery import current_app
from django.contrib.auth.models import User
from django.utils import timezone

from controlplane.correlation import TASK_HEADER, correlation_id
from controlplane.logging import JsonFormatter, PlainFormatter
from dispatch.models import Campaign, Message, MessageStatus, Trigger
from dispatch.services.delivery import ESP_METADATA_KEY
from dispatch.services.feedback import bounce_ingest
from dispatch.services.triggers import trigger_accept
from dispatch.services.webhooks import webhook_event_ingest
from dispatch.services.worker import batch_send
from dispatch.tasks import send_batch
from tests.celery_workers import WorkerFleet
from tests.conftest import SIMPLE_VARIABLES, recipients
from tests.feedback_helpers import bounce_of
from tests.smtp_sink import SmtpSink
from tests.test_dispatch_celery import broker, broker_url, fast_sink, fleet  # noqa: F401 - the real worker's fixtures
from tests.test_settings import load_settings

Lines = Callable[[], list[dict[str, Any]]]
REQUEST_ID = "abc-123"
NEW_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """Every ``sendplane.*`` line down to DEBUG, through the JSON formatter, parsed back line by line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("sendplane")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def trigger_over_api(client: Any, campaign: Campaign, people: list[dict[str, Any]], request_id: str | None = REQUEST_ID) -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": "k-logs"} | ({"HTTP_X_REQUEST_ID": request_id} if request_id is not None else {})
    return client.post(f"/api/v1/campaigns/{campaign.pk}/triggers", {"recipients": people}, format="json", **headers)


def drain(domain_id: int) -> None:
    for _ in range(100):
        if not batch_send(domain_id=domain_id).more:
            return


# --- the formatter --------------------------------------------------------------------------


def _record(formatter: logging.Formatter, **extra: Any) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("sendplane.test-formatter")
    logger.addHandler(handler)
    try:
        logger.warning("sent %d of %s", 3, "line one\nline two", extra=extra)
        try:
            raise RuntimeError("broken\nacross lines")
        except RuntimeError:
            logger.exception("it failed", extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_json_formatter_writes_one_object_a_line_with_the_fields() -> None:
    output = _record(JsonFormatter(), correlation_id="cid-1", domain="mail.example.com", campaign=7, code=550)
    first, second = output.splitlines()
    line = json.loads(first)
    assert list(line)[:4] == ["time", "level", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "sendplane.test-formatter", "sent 3 of line one\nline two")
    assert (line["correlation_id"], line["domain"], line["campaign"], line["code"]) == ("cid-1", "mail.example.com", 7, 550)
    assert "exc" not in line
    failure = json.loads(second)
    assert failure["message"] == "it failed" and failure["level"] == "ERROR"
    assert failure["exc"].startswith("Traceback") and "RuntimeError: broken\nacross lines" in failure["exc"]
    assert output.isascii()


def test_json_formatter_leaves_out_an_unknown_correlation_id() -> None:
    assert correlation_id() is None
    line = json.loads(_record(JsonFormatter()).splitlines()[0])
    assert "correlation_id" not in line


def test_plain_formatter_appends_the_id_and_the_fields_on_one_line() -> None:
    first, second, *traceback = _record(PlainFormatter(), correlation_id="cid-1", domain="mail.example.com").splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING sendplane.test-formatter "
        r"sent 3 of line one\\nline two correlation_id=cid-1 domain=mail.example.com",
        first,
    )
    assert second.endswith(" ERROR sendplane.test-formatter it failed correlation_id=cid-1 domain=mail.example.com")
    assert traceback[0] == "Traceback (most recent call last):"  # for a person: the traceback as Python prints it


@pytest.mark.parametrize(("value", "named"), [("xml", "SENDPLANE_LOG_FORMAT must be one of json, plain")])
def test_an_unknown_log_format_stops_start_up(tmp_path: Path, value: str, named: str) -> None:
    result = load_settings(tmp_path, SENDPLANE_LOG_FORMAT=value)
    assert result.returncode != 0 and named in result.stderr
    assert load_settings(tmp_path, SENDPLANE_LOG_FORMAT="plain").returncode == 0


# --- the request and the trigger --------------------------------------------------------------


@pytest.mark.django_db
def test_an_api_trigger_stores_the_request_id_and_echoes_it(api_as: Any, marketer: User, campaign: Campaign) -> None:
    response = trigger_over_api(api_as(marketer), campaign, recipients(2))
    assert response.status_code == 202, response.content
    assert response["X-Request-ID"] == REQUEST_ID
    assert Trigger.objects.get().correlation_id == REQUEST_ID
    assert correlation_id() is None  # the request's id does not outlive it


@pytest.mark.django_db
@pytest.mark.parametrize("offered", ["abc 123", "a" * 101, "abc\n123", "abc\x00", "ré-123", ""])
def test_a_malformed_request_id_is_replaced_not_trusted(api_as: Any, marketer: User, campaign: Campaign, offered: str) -> None:
    response = trigger_over_api(api_as(marketer), campaign, recipients(1), request_id=offered)
    assert response.status_code == 202, response.content
    assert NEW_ID.fullmatch(response["X-Request-ID"])
    assert Trigger.objects.get().correlation_id == response["X-Request-ID"]


@pytest.mark.django_db
def test_every_response_carries_an_id_even_a_refusal(api_as: Any, outsider: User, campaign: Campaign) -> None:
    response = trigger_over_api(api_as(outsider), campaign, recipients(1), request_id="x-403")
    assert response.status_code == 403 and response["X-Request-ID"] == "x-403"
    assert NEW_ID.fullmatch(api_as(None).get("/api/v1/campaigns/")["X-Request-ID"])


@pytest.mark.django_db
def test_a_trigger_outside_a_request_gets_its_own_id_and_publishes_with_it(
    campaign: Campaign, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    published: list[dict[str, Any]] = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args=None, **kw: published.append(kw["headers"]))
    with django_capture_on_commit_callbacks(execute=True):
        trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(1))
    stored = Trigger.objects.get().correlation_id
    assert NEW_ID.fullmatch(stored) and published == [{TASK_HEADER: stored}]


# --- tasks ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_task_runs_under_its_publishers_id_and_clears_it_after(
    campaign: Campaign,
    smtp_sink: Any,
    json_lines: Lines,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.SENDPLANE_DISPATCH = {**settings.SENDPLANE_DISPATCH, "BATCH_SIZE": 2}  # 3 rows: the batch asks for the next
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(3))
    seen: list[str | None] = []
    published: list[dict[str, Any]] = []
    monkeypatch.setattr("dispatch.tasks.batch_send", lambda domain_id: seen.append(correlation_id()) or batch_send(domain_id=domain_id))
    monkeypatch.setattr(current_app, "send_task", lambda name, args=None, **kw: published.append(kw["headers"]))
    with django_capture_on_commit_callbacks(execute=True):
        send_batch.apply(args=[campaign.sending_domain_id], headers={TASK_HEADER: "task-cid"}, throw=True)
    assert seen == ["task-cid"] and correlation_id() is None
    [batch] = [line for line in json_lines() if line["message"] == "batch done"]
    assert batch["correlation_id"] == "task-cid"  # the batch line is the task's
    assert published == [{TASK_HEADER: "task-cid"}]  # the next hint in the chain carries it on


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [None, {TASK_HEADER: "bad id"}])
def test_a_task_without_a_valid_id_gets_a_new_one(campaign: Campaign, monkeypatch: pytest.MonkeyPatch, headers: Any) -> None:
    seen: list[str | None] = []
    monkeypatch.setattr("dispatch.tasks.batch_send", lambda domain_id: seen.append(correlation_id()) or batch_send(domain_id=domain_id))
    send_batch.apply(args=[campaign.sending_domain_id], headers=headers, throw=True)
    assert len(seen) == 1 and NEW_ID.fullmatch(seen[0] or "") and correlation_id() is None


# --- from the trigger to the send and the bounce ------------------------------------------------------


def _about(lines: list[dict[str, Any]], uuids: set[str]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("message_uuid") in uuids]


@pytest.mark.django_db
def test_the_workers_lines_about_the_triggers_messages_carry_its_id(
    api_as: Any, marketer: User, campaign: Campaign, smtp_sink: Any, json_lines: Lines
) -> None:
    people = recipients(3) + [{"address": "reject@example.org", "context": SIMPLE_VARIABLES}]
    assert trigger_over_api(api_as(marketer), campaign, people).status_code == 202
    drain(campaign.sending_domain_id)
    lines = json_lines()
    uuids = {m.uuid.hex for m in Message.objects.all()}
    per_message = _about(lines, uuids)
    assert len(per_message) >= 4 and {line["correlation_id"] for line in per_message} == {REQUEST_ID}
    statuses = {line["status"] for line in per_message if line["logger"] == "sendplane.worker"}
    assert statuses == {MessageStatus.SENT, MessageStatus.FAILED}
    [failed] = [line for line in per_message if line["logger"] == "sendplane.worker" and line["status"] == MessageStatus.FAILED]
    assert (failed["level"], failed["recipient"], failed["code"]) == ("WARNING", "reject@example.org", 550)
    batches = [line for line in lines if line["message"] == "batch done"]
    assert batches and REQUEST_ID in batches[0]["correlation_ids"] and batches[0]["counts"] == {"sent": 3, "failed": 1}
    # The refusal in our own SMTP session is a feedback event too, under the same id.
    [event] = [line for line in per_message if line["logger"] == "sendplane.feedback"]
    assert (event["event"], event["kind"], event["code"], event["source"]) == ("bounced", "hard", "5.1.1", "smtp")
    assert not any("@" in json.dumps(line) for line in lines if line["level"] == "INFO")


@pytest.mark.django_db
def test_a_bounce_for_one_of_the_messages_logs_the_same_id(
    api_as: Any, marketer: User, campaign: Campaign, smtp_sink: Any, json_lines: Lines
) -> None:
    unknown = {"address": "userunknown@example.jp", "context": SIMPLE_VARIABLES}
    assert trigger_over_api(api_as(marketer), campaign, [unknown]).status_code == 202
    drain(campaign.sending_domain_id)
    message = Message.objects.select_related("sending_domain").get(status=MessageStatus.SENT)
    bounce_ingest(raw=bounce_of(message), source="upload")
    bounce_ingest(raw=bounce_of(message), source="upload")  # a duplicate: DEBUG, marked so
    events = [line for line in json_lines() if line["logger"] == "sendplane.feedback"]
    assert [(e["level"], e["duplicate"]) for e in events] == [("INFO", False), ("DEBUG", True)]
    first = events[0]
    assert (first["correlation_id"], first["message_uuid"], first["trigger"]) == (REQUEST_ID, message.uuid.hex, message.trigger_id)
    assert (first["event"], first["kind"], first["reason"], first["matched_by"]) == ("bounced", "hard", "user_unknown", "message_id")
    assert "userunknown" not in json.dumps(first)


@pytest.mark.django_db
def test_an_esp_webhook_event_logs_the_triggers_id(
    api_as: Any, marketer: User, campaign: Campaign, settings: Any, json_lines: Lines
) -> None:
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    assert trigger_over_api(api_as(marketer), campaign, recipients(1)).status_code == 202
    drain(campaign.sending_domain_id)
    message = Message.objects.get(status=MessageStatus.SENT)
    event = AnymailTrackingEvent(
        event_type="bounced", timestamp=timezone.now(), event_id="ev-1", recipient=message.recipient,
        metadata={ESP_METADATA_KEY: message.uuid.hex}, mta_response="550 5.1.1 user unknown", esp_event={},
    )
    assert webhook_event_ingest(esp_name="SendGrid", event=event) is not None
    [line] = [line for line in json_lines() if line["logger"] == "sendplane.feedback"]
    assert (line["correlation_id"], line["message_uuid"], line["source"], line["matched_by"]) == (
        REQUEST_ID, message.uuid.hex, "webhook:sendgrid", "metadata",
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_hint_under_the_request_id_it_carried_over_the_broker(
    api_as: Any, marketer: User, campaign: Campaign, fast_sink: SmtpSink, fleet: Callable[..., WorkerFleet]  # noqa: F811 - imported fixtures
) -> None:
    [worker] = fleet(fast_sink.port, log_format="json").start_many(["logs0"])
    assert trigger_over_api(api_as(marketer), campaign, recipients(3)).status_code == 202  # commits: the hint is published

    def batch_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line["message"] == "batch done" and line["claimed"]]

    deadline = time.monotonic() + 60
    while not batch_lines():
        if time.monotonic() > deadline:
            pytest.fail(f"no batch line from the worker after 60 s:\n{worker.log()[-3000:]}")
        time.sleep(0.2)
    [batch] = batch_lines()
    assert (batch["correlation_id"], batch["correlation_ids"], batch["counts"]) == (REQUEST_ID, [REQUEST_ID], {"sent": 3})
