"""The conservation check run after every scenario, from the outbox and the sink's own record.

- lost: an accepted recipient with no row, a row not in a terminal state, a
  row ``sent`` that the sink never took, or a row the sink took that says it
  was not sent (``failed``, ``suppressed``, still waiting): the outbox no
  longer tells the truth about it.
- duplicates: a (Message-ID, recipient) the sink took twice, a recipient with
  two rows in one campaign, more rows than the triggers accepted.
- sent_while_paused: a message the sink took after a pause call of its scope
  returned and before the matching resume call was made.
- sent_to_suppressed: a message the sink took after the suppression of its
  address (in its scope) committed, from a chunk that read the suppressions
  after that commit (``Message.checked_at``). One whose chunk read them
  before is the bound the engine states (at most one chunk per worker after
  the commit: deliverability.services.handover) and is reported, not failed.
- unknown: rows in ``unknown``. Each must be explained: the sink dropped the
  connection after that message's data (a 250 may or may not have been
  written), or a crash happened (worker kill -9, database restart) and the
  count stays within that crash's bound (one batch per batch in flight).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FOREVER = math.inf


@dataclass
class Window:
    scope: str  # "domain", "campaign" or "all"
    target: str  # domain name, campaign id, "all"
    start: float  # when the pause call returned
    end: float = FOREVER  # when the resume call was made


@dataclass
class Suppressed:
    address: str
    domain: str | None  # None: every sending domain
    committed_at: float


@dataclass
class Crash:
    what: str
    at: float
    bound: int  # at most this many rows may end unknown because of it


@dataclass
class Ledger:
    """What a scenario did that the check needs: its campaigns, pauses, suppressions and crashes."""

    name: str
    campaign_ids: list[int] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    suppressions: list[Suppressed] = field(default_factory=list)
    crashes: list[Crash] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # scenario-specific assertions that did not hold
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, text: str) -> None:
        with self.lock:
            self.notes.append(text)

    def fail(self, text: str) -> None:
        with self.lock:
            self.failures.append(text)


BAD = ("lost", "duplicates", "sent_while_paused", "sent_to_suppressed", "unexplained_unknown")


@dataclass
class Verdict:
    """``counts``: accepted, unknown and each of BAD."""

    name: str
    counts: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, int] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.counts[name] for name in BAD) and not self.failures


@dataclass(frozen=True)
class _Row:
    uuid: str
    recipient: str
    status: str
    campaign_id: int
    domain: str
    checked_at: float | None  # when the chunk that last carried it read the suppressions (epoch seconds)


def conservation(ledger: Ledger, accepted_records: list[Any], dropped_records: list[Any]) -> Verdict:
    from dispatch.models import Message

    rows = {
        str(u): _Row(str(u), r.lower(), s, c, d, k.timestamp() if k else None)
        for u, r, s, c, d, k in Message.objects.filter(campaign_id__in=ledger.campaign_ids).values_list(
            "uuid", "recipient", "status", "campaign_id", "sending_domain__domain", "checked_at"
        )
    }
    took = [(rows[u], rec) for rec in accepted_records if (u := _uuid(rec.message_id)) in rows]
    dropped = {u for rec in dropped_records if (u := _uuid(rec.message_id)) in rows}
    verdict = Verdict(ledger.name, statuses=dict(Counter(r.status for r in rows.values())), failures=list(ledger.failures))
    _count_accepted(verdict, ledger, rows)
    _count_duplicates(verdict, rows, took)
    _count_lost(verdict, rows, took)
    _count_unknown(verdict, ledger, rows, dropped)
    handed = took + [(rows[u], rec) for rec in dropped_records if (u := _uuid(rec.message_id)) in rows]
    verdict.counts["sent_while_paused"] = sum(1 for row, rec in handed if _paused_at(ledger.windows, row, rec.at))
    late = [(row, s) for row, rec in handed for s in _suppressions_before(ledger.suppressions, row, rec.at)]
    # The bound (deliverability.services.handover): a chunk that read the suppressions before one committed may
    # still send to its address; a chunk that read them after it must not.
    verdict.counts["sent_to_suppressed"] = sum(1 for row, s in late if row.checked_at is None or row.checked_at > s.committed_at)
    verdict.counts["suppressed_in_flight"] = in_flight = len(late) - verdict.counts["sent_to_suppressed"]
    if in_flight:
        verdict.details.append(f"{in_flight} sent to an address whose suppression committed while their chunk was in flight (the bound)")
    return verdict


def _uuid(message_id: str) -> str:
    return message_id.strip("<>").partition("@")[0]


def _count_accepted(verdict: Verdict, ledger: Ledger, rows: dict[str, _Row]) -> None:
    from dispatch.models import Trigger

    responses = Trigger.objects.filter(campaign_id__in=ledger.campaign_ids).values_list("response", flat=True)
    accepted = verdict.counts["accepted"] = sum(int(r.get("accepted", 0)) for r in responses)
    if len(rows) < accepted:
        verdict.counts["lost"] += accepted - len(rows)
        verdict.details.append(f"{accepted - len(rows)} accepted recipients have no row")
    if len(rows) > accepted:
        verdict.counts["duplicates"] += len(rows) - accepted
        verdict.details.append(f"{len(rows) - accepted} rows more than the triggers accepted")


def _count_duplicates(verdict: Verdict, rows: dict[str, _Row], took: list[tuple[_Row, Any]]) -> None:
    twice = sum(n - 1 for n in Counter((row.uuid, rec.recipient.lower()) for row, rec in took).values() if n > 1)
    per_recipient = sum(n - 1 for n in Counter((r.campaign_id, r.recipient) for r in rows.values()).values() if n > 1)
    if twice:
        verdict.details.append(f"the sink took {twice} (Message-ID, recipient) pairs more than once")
    if per_recipient:
        verdict.details.append(f"{per_recipient} recipients have more than one row in a campaign")
    verdict.counts["duplicates"] += twice + per_recipient


def _count_lost(verdict: Verdict, rows: dict[str, _Row], took: list[tuple[_Row, Any]]) -> None:
    from dispatch.models import TERMINAL, MessageStatus

    waiting = sum(1 for r in rows.values() if r.status not in TERMINAL)
    seen = {row.uuid for row, _ in took}
    sent_not_seen = sum(1 for r in rows.values() if r.status == MessageStatus.SENT and r.uuid not in seen)
    seen_not_sent = sum(1 for u in seen if rows[u].status not in (MessageStatus.SENT, MessageStatus.UNKNOWN))
    for count, what in ((waiting, "rows never reached a terminal state"), (sent_not_seen, "rows say sent but the sink never took them"),
                        (seen_not_sent, "rows the sink took say they were not sent")):  # fmt: skip
        if count:
            verdict.details.append(f"{count} {what}")
    verdict.counts["lost"] += waiting + sent_not_seen + seen_not_sent


def _count_unknown(verdict: Verdict, ledger: Ledger, rows: dict[str, _Row], dropped: set[str]) -> None:
    from dispatch.models import MessageStatus

    unknown = [r for r in rows.values() if r.status == MessageStatus.UNKNOWN]
    by_drop = sum(1 for r in unknown if r.uuid in dropped)
    by_crash = len(unknown) - by_drop
    bound = sum(c.bound for c in ledger.crashes)
    verdict.counts["unknown"] = len(unknown)
    verdict.counts["unexplained_unknown"] = max(0, by_crash - bound)
    if unknown:
        crashes = ", ".join(c.what for c in ledger.crashes) or "none"
        verdict.details.append(
            f"unknown: {by_drop} after a connection dropped mid-DATA, {by_crash} after crashes ({crashes}; bound {bound})"
        )
    dropped_not_unknown = sum(1 for u in dropped if rows[u].status != MessageStatus.UNKNOWN)
    if dropped_not_unknown:
        verdict.failures.append(f"{dropped_not_unknown} messages whose connection dropped mid-DATA are not unknown")


def _paused_at(windows: list[Window], row: _Row, at: float) -> bool:
    for w in windows:
        in_scope = (
            w.scope == "all"
            or (w.scope == "domain" and w.target == row.domain)
            or (w.scope == "campaign" and w.target == str(row.campaign_id))
        )
        if in_scope and w.start < at < w.end:
            return True
    return False


def _suppressions_before(suppressions: list[Suppressed], row: _Row, at: float) -> list[Suppressed]:
    """The suppressions of the row's address that had committed when the sink took it at ``at``."""
    return [s for s in suppressions if s.address == row.recipient and s.domain in (None, row.domain) and at > s.committed_at]
