"""Retention (issue 18): nothing older than its limit survives in clear; newer rows and suppressions stay.

Rows of every data class are built on both sides of their limit (times moved
back with ``.update()``: the columns are auto_now), a run is made, and every
table is read back. Audit entries are append-only in the database, so old
ones are inserted with their time by SQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from prometheus_client import REGISTRY

from audit.models import AuditEntry
from audit.services import audit_entries_expire
from controlplane.addresses import address_hash
from deliverability.models import ConsentRecord, EventType, FeedbackEvent, Kind, MatchedBy, Suppression
from deliverability.selectors import suppressed_among
from deliverability.services import Feedback, event_record
from dispatch.models import Message, MessageAttempt, MessageStatus, Trigger
from dispatch.services.retention import data_classes, retention_run
from dispatch.services.triggers import erased_key, trigger_accept
from dispatch.tasks import retention as retention_task
from tests import test_db_roles
from tests.conftest import SIMPLE_VARIABLES
from tests.test_settings import load_settings

pytestmark = pytest.mark.django_db
installation, app = test_db_roles.installation, test_db_roles.app  # fixtures: the app role in a database of its own

LIMITS = {
    "CONTEXT_DAYS": 30,
    "ADDRESS_DAYS": 365,
    "FEEDBACK_DAYS": 365,
    "TRIGGER_DAYS": 30,
    "CONSENT_DAYS": 730,
    "AUDIT_DAYS": 730,
    "BATCH": 1000,
}


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> dict[str, int]:
    settings.SENDPLANE_RETENTION = dict(LIMITS)
    return settings.SENDPLANE_RETENTION


def ago(days: float) -> datetime:
    return timezone.now() - timedelta(days=days)


def queue(campaign: Any, key: str, *addresses: str) -> dict[str, Message]:
    trigger_accept(
        campaign=campaign,
        idempotency_key=key,
        recipients=[{"address": a, "context": SIMPLE_VARIABLES | {"first_name": a[:3]}} for a in addresses],
    )
    return {m.recipient: m for m in Message.objects.filter(recipient__in=addresses)}


def finished(message: Message, *, days: float, status: str = MessageStatus.SENT, reply: str = "") -> None:
    Message.objects.filter(pk=message.pk).update(status=status, created_at=ago(days), last_reply=reply)


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- messages ------------------------------------------------------------------------------------


def test_a_final_message_loses_its_context_after_30_days_and_its_address_after_365(campaign: Any) -> None:
    rows = queue(campaign, "k1", "old@example.org", "month@example.org", "new@example.org", "waiting@example.org")
    finished(rows["old@example.org"], days=400, status=MessageStatus.FAILED, reply="550 5.1.1 <old@example.org> unknown")
    finished(rows["month@example.org"], days=40)
    finished(rows["new@example.org"], days=1)
    Message.objects.filter(pk=rows["waiting@example.org"].pk).update(created_at=ago(400))  # still queued: needed to send
    MessageAttempt.objects.create(
        message=rows["old@example.org"], number=1, at=ago(400), outcome="failed", code=550, reply="550 5.1.1 <old@example.org> unknown"
    )

    report = retention_run()

    assert report.changed["contexts"] == 2 and report.changed["addresses"] == 1
    old = Message.objects.get(pk=rows["old@example.org"].pk)
    assert (old.recipient, old.context, old.last_reply, old.status) == ("", {}, "", MessageStatus.FAILED)
    assert list(MessageAttempt.objects.filter(message=old).values_list("reply", "code")) == [("", 550)]
    month = Message.objects.get(pk=rows["month@example.org"].pk)
    assert (month.recipient, month.context) == ("month@example.org", {})
    for kept in ("new@example.org", "waiting@example.org"):
        assert Message.objects.get(pk=rows[kept].pk).context == SIMPLE_VARIABLES | {"first_name": kept[:3]}


def test_nothing_older_than_its_limit_survives_in_clear(campaign: Any, sending_domain: Any) -> None:
    """One row per class past its limit, one within it: after a run no class has a pending row, and the new ones stay."""
    rows = queue(campaign, "old-key", *(f"p{i}@example.org" for i in range(4)))
    for i, message in enumerate(rows.values()):
        finished(message, days=(400, 1)[i % 2])
    Trigger.objects.filter(idempotency_key="old-key").update(created_at=ago(31))
    for i, days in enumerate((400, 1)):
        hard_bounce(f"b{i}@example.org", sending_domain, received_days=days)
        consent(f"c{i}@example.org", withdrawn_days=(800, 1)[i])
    old_audit(days=800)
    cut = {c.name: c for c in data_classes()}

    retention_run()

    now = timezone.now()
    for name, data_class in cut.items():
        assert not data_class.pending(now - timedelta(days=LIMITS[data_class.setting])).exists(), name
        assert data_class.pending(now).exists() or name == "triggers", f"{name}: newer rows must stay"


def test_an_anonymised_event_and_an_old_suppression_still_stop_a_trigger(campaign: Any, sending_domain: Any) -> None:
    address = "gone@example.org"
    hard_bounce(address, sending_domain, received_days=800)
    Suppression.objects.update(created_at=ago(800))

    assert retention_run().changed["feedback"] == 1

    event = FeedbackEvent.objects.get()
    assert (event.recipient, event.smtp_reply, event.detail, event.recipient_hash) == ("", "", {}, address_hash(address))
    assert Suppression.objects.filter(address_hash=address_hash(address), event=event).exists()  # never purged
    assert suppressed_among(addresses=[address], sending_domain=sending_domain) == {address}
    response, _ = trigger_accept(
        campaign=campaign,
        idempotency_key="after",
        recipients=[{"address": address, "context": SIMPLE_VARIABLES}, {"address": "ok@example.org", "context": SIMPLE_VARIABLES}],
    )
    assert (response["accepted"], response["suppressed"]) == (1, 1)


# --- triggers, consents, audit ---------------------------------------------------------------------


def test_an_old_trigger_answer_keeps_its_counts_and_a_retry_still_replays(campaign: Any, sending_domain: Any) -> None:
    hard_bounce("gone@example.org", sending_domain, received_days=1)
    people = [
        {"address": "gone@example.org", "context": SIMPLE_VARIABLES},
        {"address": "ok@example.org", "context": SIMPLE_VARIABLES},
        {"address": "not an address", "context": SIMPLE_VARIABLES},
    ]
    first, _ = trigger_accept(campaign=campaign, idempotency_key="signup-ok@example.org", recipients=people)
    Trigger.objects.update(created_at=ago(31))

    assert retention_run().changed["triggers"] == 1

    trigger = Trigger.objects.get()
    assert trigger.idempotency_key == erased_key("signup-ok@example.org")
    assert trigger.response == first | {"suppressed_recipients": [], "rejections": []}
    assert (first["suppressed"], first["rejected"]) == (1, 1) and first["suppressed_recipients"] and first["rejections"]
    replay, replayed = trigger_accept(campaign=campaign, idempotency_key="signup-ok@example.org", recipients=people)
    assert replayed and replay == trigger.response


def test_a_withdrawn_consent_loses_address_and_evidence_after_its_limit_and_still_stops_sends() -> None:
    old, recent, live = consent("w@example.org", withdrawn_days=800), consent("r@example.org", withdrawn_days=1), consent("l@example.org")
    ConsentRecord.objects.filter(pk=live.pk).update(given_at=ago(3000))

    assert retention_run().changed["consents"] == 1

    old.refresh_from_db()
    assert (old.address, old.evidence, old.address_hash) == ("", {}, address_hash("w@example.org"))
    assert old.withdrawn_at is not None and old.source == "signup form"
    assert ConsentRecord.objects.get(pk=recent.pk).address == "r@example.org"
    assert ConsentRecord.objects.get(pk=live.pk).evidence == {"form": "signup", "ip": "192.0.2.1"}  # proof of a live consent


def test_audit_entries_past_their_limit_are_deleted_and_the_run_is_audited_with_counts_only() -> None:
    old, young = old_audit(days=800), old_audit(days=700)

    report = retention_run()

    assert report.changed["audit"] == 1
    assert not AuditEntry.objects.filter(pk=old).exists() and AuditEntry.objects.filter(pk=young).exists()
    entry = AuditEntry.objects.get(action="retention.run")
    assert entry.actor_label == "retention" and entry.target_label == "retention"
    assert entry.data["changed"]["audit"] == 1 and entry.data["days"]["audit"] == 730
    assert "@" not in str(entry.data)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the append-only trigger is PostgreSQL's")
def test_the_database_refuses_to_expire_recent_audit_entries_or_to_delete_one_directly() -> None:
    old = old_audit(days=800)
    with pytest.raises(DatabaseError, match="kept at least 365 days"), transaction.atomic():
        audit_entries_expire(before=ago(10), limit=10)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=old).delete()
    assert AuditEntry.objects.filter(pk=old).exists()


@pytest.mark.slow
def test_the_app_role_expires_old_entries_only_through_the_owner_s_function(app: psycopg.Connection) -> None:
    """As web and workers log in (tests/test_db_roles.py's installation): no DELETE of its own, the expiry with a floor."""
    insert = (
        "INSERT INTO audit_auditentry (created_at, actor_label, action, target_type, target_id, target_label, reason, data)"
        " VALUES (now() - %s::interval, 'tester', 'test.old', '', '', '', '', '{}') RETURNING id"
    )
    old, young = (app.execute(insert, [age]).fetchone()[0] for age in ("800 days", "100 days"))  # type: ignore[index]
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        app.execute("DELETE FROM audit_auditentry WHERE id = %s", [old])
    app.execute("SELECT set_config('sendplane.audit_expiring', 'on', false)")  # the mark alone gives no privilege
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        app.execute("DELETE FROM audit_auditentry WHERE id = %s", [old])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="kept at least 365 days"):
        app.execute("SELECT audit_entries_expire(now() - interval '30 days', 1000)")

    assert app.execute("SELECT audit_entries_expire(now() - interval '730 days', 1000)").fetchone() == (1,)
    left = {row[0] for row in app.execute("SELECT id FROM audit_auditentry WHERE id IN (%s, %s)", [old, young])}
    assert left == {young}


def test_an_audit_retention_under_the_floor_stops_start_up(tmp_path: Path) -> None:
    result = load_settings(tmp_path, SENDPLANE_RETENTION_AUDIT_DAYS="90")
    assert result.returncode != 0 and "SENDPLANE_RETENTION_AUDIT_DAYS must be 0 (keep for ever) or at least 365" in result.stderr


# --- bounds, idempotence, keep for ever ------------------------------------------------------------


def test_batches_are_bounded_and_the_next_run_goes_on(campaign: Any, _limits: dict[str, int]) -> None:
    for message in queue(campaign, "k", *(f"u{i}@example.org" for i in range(5))).values():
        finished(message, days=40)
    _limits["BATCH"] = 2

    first = retention_run(max_batches=1)
    assert first.changed["contexts"] == 2 and "contexts" in first.unfinished
    assert Message.objects.exclude(context={}).count() == 3
    second = retention_run(max_batches=2)
    assert second.changed["contexts"] == 3 and second.unfinished == ()
    assert not Message.objects.exclude(context={}).exists()


def test_a_second_run_changes_nothing_and_writes_no_audit_entry(campaign: Any, sending_domain: Any) -> None:
    for message in queue(campaign, "k", "a@example.org", "b@example.org").values():
        finished(message, days=400)
    hard_bounce("c@example.org", sending_domain, received_days=400)
    assert sum(retention_run().changed.values()) > 0
    entries = AuditEntry.objects.count()

    again = retention_run()

    assert not any(again.changed.values())
    assert AuditEntry.objects.count() == entries


def test_zero_days_keeps_a_class_for_ever(campaign: Any, _limits: dict[str, int]) -> None:
    _limits.update(CONTEXT_DAYS=0, ADDRESS_DAYS=0)
    for message in queue(campaign, "k", "a@example.org").values():
        finished(message, days=5000)

    report = retention_run()

    assert "contexts" not in report.changed and "addresses" not in report.changed
    assert Message.objects.get().recipient == "a@example.org" and Message.objects.get().context


# --- the beat task, metrics, the command -----------------------------------------------------------


def test_the_beat_task_runs_retention_and_counts_rows_in_metrics(campaign: Any) -> None:
    for message in queue(campaign, "k", "a@example.org", "b@example.org").values():
        finished(message, days=40)
    before = counted("sendplane_retention_rows_total", data_class="contexts", action="blanked")

    result = retention_task.apply(throw=True).get()

    assert result["contexts"] == 2
    assert counted("sendplane_retention_rows_total", data_class="contexts", action="blanked") - before == 2
    assert counted("sendplane_retention_overdue_seconds", data_class="contexts") == 0.0
    assert counted("sendplane_retention_last_run_timestamp_seconds") > timezone.now().timestamp() - 60


def test_a_backlog_left_by_a_bounded_run_shows_as_overdue(campaign: Any, _limits: dict[str, int]) -> None:
    for message in queue(campaign, "k", "a@example.org", "b@example.org").values():
        finished(message, days=40)
    _limits["BATCH"] = 1

    retention_run(max_batches=1)

    assert counted("sendplane_retention_overdue_seconds", data_class="contexts") > 9 * 86400  # 40 days old, limit 30


def test_the_command_prints_each_class_and_dry_run_changes_nothing(campaign: Any, _limits: dict[str, int]) -> None:
    _limits["AUDIT_DAYS"] = 0
    for message in queue(campaign, "k", "a@example.org", "b@example.org").values():
        finished(message, days=40)

    dry = StringIO()
    call_command("retention_purge", "--dry-run", stdout=dry)
    assert "contexts: 2 would be blanked (older than 30 days)" in dry.getvalue()
    assert "audit: kept for ever" in dry.getvalue()
    assert Message.objects.exclude(context={}).count() == 2

    out = StringIO()
    call_command("retention_purge", stdout=out)
    assert "contexts: 2 blanked (older than 30 days)" in out.getvalue()
    assert "addresses: 0 blanked (older than 365 days)" in out.getvalue()
    assert not Message.objects.exclude(context={}).exists()
    assert AuditEntry.objects.get(action="retention.run").actor_label == "command:retention_purge"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner")
def test_each_class_finds_its_batch_through_its_partial_index() -> None:
    cutoff = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # an empty table would be scanned anyway; can the index serve?
        for data_class in data_classes():
            if data_class.name == "audit":
                continue
            sql, params = data_class.pending(cutoff).order_by(data_class.age).values_list("pk")[:10].query.sql_with_params()
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = " ".join(row[0] for row in cursor.fetchall())
            assert "_retention" in plan, (data_class.name, plan)


# --- builders ------------------------------------------------------------------------------------


def hard_bounce(address: str, sending_domain: Any, *, received_days: float) -> FeedbackEvent:
    event, _ = event_record(
        Feedback(
            event_type=EventType.BOUNCED,
            kind=Kind.HARD,
            recipient=address,
            source="mailbox",
            dedupe=f"bounce-{address}",
            matched_by=MatchedBy.VERP,
            verified=True,
            sending_domain=sending_domain,
            smtp_reply=f"550 5.1.1 <{address}> unknown",
            detail={"original_to": address},
        )
    )
    FeedbackEvent.objects.filter(pk=event.pk).update(received_at=ago(received_days), occurred_at=ago(received_days))
    return event


def consent(address: str, *, withdrawn_days: float | None = None) -> ConsentRecord:
    return ConsentRecord.objects.create(
        address=address,
        address_hash=address_hash(address),
        purpose="marketing",
        source="signup form",
        evidence={"form": "signup", "ip": "192.0.2.1"},
        given_at=ago(3000),
        withdrawn_at=None if withdrawn_days is None else ago(withdrawn_days),
    )


def old_audit(*, days: float) -> int:
    """An entry written ``days`` ago: the trail refuses UPDATE, so it is inserted with its time."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditentry (created_at, actor_label, action, target_type, target_id, target_label, reason, data)"
            " VALUES (%s, 'test', 'test.old', '', '', '', '', '{}') RETURNING id",
            [ago(days)],
        )
        return int(cursor.fetchone()[0])
