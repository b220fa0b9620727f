"""Retention (issue 18): each class of recipient data is kept in clear for its configured days, then blanked or deleted.

A data class is the rows that hold one kind of recipient data (ops/privacy.md
keeps the table for a data protection officer):

- ``contexts``: a final message's context (``SENDPLANE_RETENTION_CONTEXT_DAYS``);
- ``addresses``: a final message's address, last reply and its attempts' replies, blanked as
  an erase blanks them (``erasure.messages_blank``);
- ``feedback``: a feedback event's address, reply and details (``events_blank``); counts and the hash stay;
- ``triggers``: a trigger answer's lists of addresses, emptied (the counts stay), and its
  Idempotency-Key in its erased form (``triggers.erased_key``: a retry still replays);
- ``consents``: a withdrawn consent's address and evidence (``consents_blank``); the withdrawal stays, by hash;
- ``audit``: audit entries, deleted (``audit_entries_expire``, the trail's one way out).

Suppressions are never purged: they hold the address's hash, which keeps
stopping sends after every other copy is gone.

Each class finds its rows by its partial index ("still in clear", the
index's own condition: blanked rows leave it, so a batch never walks the
years already done) and changes at most ``SENDPLANE_RETENTION_BATCH`` rows
per transaction, so a backlog never holds row locks for long. A run does at
most ``max_batches`` batches per class and stops; the next beat tick goes on.
Running twice changes nothing more. 0 days keeps a class for ever.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from audit.models import AuditEntry
from audit.services import audit_entries_expire, audit_record
from controlplane import metrics
from deliverability.models import ConsentRecord, FeedbackEvent
from deliverability.services.suppression import consents_blank, events_blank
from dispatch.models import Message, Trigger
from dispatch.services.erasure import messages_blank
from dispatch.services.triggers import erased_key

MAX_BATCHES = 100  # per class and run: 100,000 rows at the default batch, every 10 minutes
ACTOR = "retention"


@dataclass(frozen=True)
class DataClass:
    """One class of recipient data: which rows are still in clear past a cutoff, and what retention does to them."""

    name: str
    setting: str  # its key in settings.SENDPLANE_RETENTION
    action: str  # "blanked" or "deleted": the metric's label
    model: type[models.Model]
    age: str  # the column its days are counted from
    in_clear: Q  # rows still holding recipient data; the condition of the class's partial index
    change: Callable[[QuerySet[Any]], int]

    def days(self) -> int:
        """Its limit in days (0: kept for ever)."""
        return cast(Mapping[str, int], settings.SENDPLANE_RETENTION)[self.setting]

    def pending(self, cutoff: datetime) -> QuerySet[Any]:
        return self.model._default_manager.filter(self.in_clear, **{f"{self.age}__lt": cutoff})

    def batch(self, cutoff: datetime, limit: int) -> int:
        """Change up to ``limit`` of the oldest pending rows in one short transaction; rows another run holds are skipped."""
        with transaction.atomic():
            oldest = self.pending(cutoff).order_by(self.age).select_for_update(skip_locked=True)
            pks = list(oldest.values_list("pk", flat=True)[:limit])
            return self.change(self.model._default_manager.filter(pk__in=pks)) if pks else 0

    def oldest(self, cutoff: datetime) -> datetime | None:
        return self.pending(cutoff).order_by(self.age).values_list(self.age, flat=True).first()


class AuditClass(DataClass):
    """Audit entries go through the database's own expiry function, which picks and deletes them itself."""

    def batch(self, cutoff: datetime, limit: int) -> int:
        with transaction.atomic():
            return audit_entries_expire(before=cutoff, limit=limit)


def _index_condition(model: type[models.Model], name: str) -> Q:
    """The partial index's condition is the class's filter: one definition, and the planner can always use the index."""
    condition = next(index.condition for index in model._meta.indexes if index.name == name)
    assert isinstance(condition, Q)
    return condition


def _contexts_blank(messages: QuerySet[Any]) -> int:
    return messages.update(context={})


def _answers_expire(triggers: QuerySet[Any]) -> int:
    """Empty the answer's address lists (its counts stay); the key becomes its hash, which a retry still finds."""
    rows = list(triggers.only("pk", "idempotency_key", "response"))
    for row in rows:
        row.response = {**row.response, "suppressed_recipients": [], "rejections": [], "without_consent_recipients": []}
        if not row.idempotency_key.startswith("erased:"):
            row.idempotency_key = erased_key(row.idempotency_key)
    return Trigger.objects.bulk_update(rows, ["response", "idempotency_key"])


def data_classes() -> tuple[DataClass, ...]:
    # Contexts before addresses: a context goes after its own (shorter) limit; an address takes the context with it.
    # fmt: off
    return (
        DataClass("contexts", "CONTEXT_DAYS", "blanked", Message, "created_at",
                  _index_condition(Message, "message_retention_context"), _contexts_blank),
        DataClass("addresses", "ADDRESS_DAYS", "blanked", Message, "created_at",
                  _index_condition(Message, "message_retention_address"), messages_blank),
        DataClass("feedback", "FEEDBACK_DAYS", "blanked", FeedbackEvent, "received_at",
                  _index_condition(FeedbackEvent, "event_retention"), events_blank),
        DataClass("triggers", "TRIGGER_DAYS", "blanked", Trigger, "created_at",
                  _index_condition(Trigger, "trigger_retention"), _answers_expire),
        DataClass("consents", "CONSENT_DAYS", "blanked", ConsentRecord, "withdrawn_at",
                  _index_condition(ConsentRecord, "consent_retention"), consents_blank),
        AuditClass("audit", "AUDIT_DAYS", "deleted", AuditEntry, "created_at", Q(), lambda rows: 0),
    )
    # fmt: on


@dataclass(frozen=True)
class RetentionReport:
    changed: dict[str, int]  # data class -> rows blanked or deleted by this run
    unfinished: tuple[str, ...] = field(default=())  # classes that stopped at max_batches with rows left

    def as_dict(self) -> dict[str, int]:
        return dict(self.changed)


def cutoffs(now: datetime) -> dict[str, datetime]:
    """Each class that has a limit: the time before which its rows may no longer be in clear (0 days: not listed)."""
    return {c.name: now - timedelta(days=c.days()) for c in data_classes() if c.days()}


def retention_run(*, now: datetime | None = None, max_batches: int = MAX_BATCHES, actor: str = ACTOR) -> RetentionReport:
    """Blank or delete what is past its limit, class by class, in bounded batches; one audit entry (counts only) if anything changed."""
    now = now or timezone.now()
    limit = settings.SENDPLANE_RETENTION["BATCH"]
    due = cutoffs(now)
    changed: dict[str, int] = {}
    unfinished = []
    for data_class in data_classes():
        if data_class.name not in due:
            continue
        changed[data_class.name], more = _run_class(data_class, due[data_class.name], limit, max_batches)
        if more:
            unfinished.append(data_class.name)
    report = RetentionReport(changed, tuple(unfinished))
    if any(changed.values()):
        days = {name: (now - cutoff).days for name, cutoff in due.items()}
        audit_record(
            action="retention.run",
            target=None,
            actor=actor,
            target_label="retention",
            data={"changed": report.as_dict(), "days": days, "unfinished": list(unfinished)},
        )
    metrics.retention_finished()
    return report


def _run_class(data_class: DataClass, cutoff: datetime, limit: int, max_batches: int) -> tuple[int, bool]:
    """Batches until one comes back short or the run's bound; returns (rows changed, rows probably left)."""
    changed, more = 0, False
    for _ in range(max_batches):
        n = data_class.batch(cutoff, limit)
        changed += n
        more = n == limit
        if not more:
            break
    oldest = data_class.oldest(cutoff)
    overdue = (cutoff - oldest).total_seconds() if oldest is not None else 0.0
    metrics.retention_observed(data_class=data_class.name, action=data_class.action, rows=changed, overdue_seconds=overdue)
    return changed, more and oldest is not None


def retention_pending(*, now: datetime | None = None) -> dict[str, int]:
    """What a run would change now, per class with a limit (``retention_purge --dry-run``); one count each, on its index."""
    due = cutoffs(now or timezone.now())
    return {c.name: c.pending(due[c.name]).count() for c in data_classes() if c.name in due}
