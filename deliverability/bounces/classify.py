"""One verdict per recipient of a raw bounce, complaint or auto-reply: pure functions, no DB.

Reason comes from the most specific signal available: a specific enhanced
status code, else the diagnostic text of the recipient, else the report's
human-readable part. Kind follows from the reason (only address failures are
hard) and from the report type (ARF, auto-reply, DSN "delivered").
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from deliverability.bounces import vocabulary as v
from deliverability.bounces.parse import ParsedReport, RecipientStatus, parse_message, reply_in, status_in


@dataclass(frozen=True)
class Classification:
    recipient: str
    kind: str
    reason: str
    status: str
    smtp_reply: str
    feedback_type: str
    message_id: str
    verp: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def classify_message(raw: bytes) -> list[Classification]:
    """Every recipient the message reports on, classified; ``[]`` only for empty input.

    A message that is not a recognisable report gives one ``unknown`` entry, so
    callers can always tell "looked at, nothing found" from "not looked at".
    """
    if not raw:
        return []
    try:
        report = parse_message(raw)
        results = [_classify(report, rcpt) for rcpt in report.recipients]
    except Exception:  # noqa: BLE001 - hostile input must never take the bounce processor down
        return [_unknown(ParsedReport())]
    return results or [_unknown(report)]


def _unknown(report: ParsedReport) -> Classification:
    return Classification("", v.Kind.UNKNOWN, v.Reason.UNDEFINED, "", "", "", report.message_id, report.verp)


def _classify(report: ParsedReport, rcpt: RecipientStatus) -> Classification:
    kind, reason, status = _verdict(report, rcpt)
    return Classification(
        recipient=rcpt.recipient,
        kind=kind,
        reason=reason,
        status=status,
        smtp_reply=rcpt.smtp_reply or reply_in(report.summary) if kind not in (v.Kind.COMPLAINT, v.Kind.AUTO_REPLY) else "",
        feedback_type=report.feedback_type,
        message_id=report.message_id,
        verp=report.verp,
    )


def _verdict(report: ParsedReport, rcpt: RecipientStatus) -> tuple[str, str, str]:
    if report.fmt == "arf":
        return v.Kind.COMPLAINT, v.Reason.FEEDBACK, ""
    if report.fmt == "auto_reply":
        return v.Kind.AUTO_REPLY, v.Reason.VACATION, ""
    status = rcpt.status or status_in(rcpt.diagnostic)
    if status.endswith(".0.0") and status_in(rcpt.diagnostic):
        status = status_in(rcpt.diagnostic)  # the remote server's own code is more specific than the relay's
    if rcpt.action in ("delivered", "relayed", "expanded") or status.startswith("2."):
        return v.Kind.DELIVERED, v.Reason.DELIVERED, status or "2.0.0"
    reason = v.decisive_reason_from_status(status) or v.reason_from_text(rcpt.diagnostic) or v.reason_from_status(status) or v.reason_from_text(report.summary)
    if not reason and not status and not rcpt.diagnostic and report.fmt != "dsn":
        return v.Kind.UNKNOWN, v.Reason.UNDEFINED, ""
    reason = reason or v.Reason.UNDEFINED
    if reason == v.Reason.USER_UNKNOWN and _after_data(rcpt.diagnostic):
        # An unknown-user answer to DATA (not RCPT) comes from a content filter
        # pretending: the address itself was accepted, so it is not a hard failure.
        reason = v.Reason.FILTERED
    permanent = _permanent(status, rcpt)
    if reason == v.Reason.HOST_UNKNOWN and not permanent:
        reason = v.Reason.NETWORK_ERROR  # a DNS failure that will be retried is not a dead domain yet
    if not status:
        status = v.pseudo_status(reason, permanent)
    kind = v.Kind.HARD if reason in v.HARD_REASONS or (reason == v.Reason.NOT_ACCEPT and permanent) else v.Kind.SOFT
    return kind, reason, status


_DATA_COMMAND = re.compile(r">>> DATA|end of data|after (end of )?data|in reply to (end of )?data|data command|after DATA", re.IGNORECASE)


def _after_data(text: str) -> bool:
    return bool(_DATA_COMMAND.search(text))


def _permanent(status: str, rcpt: RecipientStatus) -> bool:
    if status:
        return status.startswith("5")
    if rcpt.action == "delayed":
        return False
    return not (rcpt.smtp_reply or reply_in(rcpt.diagnostic)).startswith("4")
