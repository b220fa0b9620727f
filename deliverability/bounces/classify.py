"""One verdict per recipient of a raw bounce, complaint or auto-reply: pure functions, no DB.

Reason comes from the most specific signal available: a specific enhanced
status code, else the diagnostic text of the recipient, else the report's
human-readable part. Kind follows from the reason (only address failures are
hard) and from the report type (ARF, auto-reply, DSN "delivered").
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from deliverability.bounces import smtp_command
from deliverability.bounces import vocabulary as v
from deliverability.bounces.parse import (
    ParsedReport,
    RecipientStatus,
    failure_reply_in,
    failure_status_in,
    parse_message,
    reply_in,
    status_in,
)


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
    return results or [_unnamed(report)]


def _unnamed(report: ParsedReport) -> Classification:
    """A bounce that names no recipient we can use (a GroupWise user id, only a list's address): its verdict, no address.

    The report's VERP token still ties it to the message, and so to the
    address we sent to; a text that says nothing we can place stays unknown.
    """
    if report.fmt != "text" or not v.reason_from_text(report.summary):
        return _unknown(report)
    return _classify(report, RecipientStatus(recipient="", diagnostic=report.summary))


def _unknown(report: ParsedReport) -> Classification:
    return Classification("", v.Kind.UNKNOWN, v.Reason.UNDEFINED, "", "", "", report.message_id, report.verp)


def _classify(report: ParsedReport, rcpt: RecipientStatus) -> Classification:
    kind, reason, status = _verdict(report, rcpt)
    return Classification(
        recipient=rcpt.recipient,
        kind=kind,
        reason=reason,
        status=status,
        smtp_reply=_reply(report, rcpt, kind),
        feedback_type=report.feedback_type,
        message_id=report.message_id,
        verp=report.verp,
    )


def _reply(report: ParsedReport, rcpt: RecipientStatus, kind: str) -> str:
    """The reply code behind the verdict: a failure's code for a failure (the summary quotes the whole session)."""
    if kind in (v.Kind.COMPLAINT, v.Kind.AUTO_REPLY):
        return ""
    if kind == v.Kind.DELIVERED:
        return rcpt.smtp_reply or reply_in(report.summary)
    return failure_reply_in(rcpt.smtp_reply) or failure_reply_in(report.summary)


def _verdict(report: ParsedReport, rcpt: RecipientStatus) -> tuple[str, str, str]:
    if report.fmt == "arf":
        return v.Kind.COMPLAINT, v.Reason.FEEDBACK, ""
    if report.fmt == "auto_reply":
        return v.Kind.AUTO_REPLY, v.Reason.VACATION, ""
    status = _status(rcpt)
    if rcpt.action in _SUCCESS_ACTIONS or status.startswith("2."):
        return v.Kind.DELIVERED, v.Reason.DELIVERED, status or "2.0.0"
    reason = _reason(report, rcpt, status)
    if not reason and not status and not rcpt.diagnostic and report.fmt != "dsn":
        return v.Kind.UNKNOWN, v.Reason.UNDEFINED, ""
    reason = reason or (v.Reason.ON_HOLD if rcpt.diagnostic else v.Reason.UNDEFINED)  # said something we cannot place
    return v.failure_verdict(reason, status, _permanent(status, rcpt) or _given_up(status, rcpt))


_SUCCESS_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
_FAILURE_ACTIONS = frozenset({"failed", "delayed"})


def _status(rcpt: RecipientStatus) -> str:
    """The remote server's own code when its reply carries one, else the report's Status field.

    The Status field is the reporting MTA's translation ("5.1.1" for any
    refused RCPT, "5.0.0" for anything); the reply's code is the original.
    Unless the report says the message got through, a success code is no
    verdict: a diagnostic or a transcript quotes the "250 2.1.0 Sender ok"
    that came before the refusal, and an "Action: failed" outranks a
    contradicting "Status: 2.0.0".
    """
    succeeded = rcpt.action in _SUCCESS_ACTIONS
    remote = status_in(rcpt.diagnostic) if succeeded else failure_status_in(rcpt.diagnostic)
    given = "" if rcpt.action in _FAILURE_ACTIONS and rcpt.status.startswith("2.") else rcpt.status
    if remote and (not given or given.endswith(".0.0") or remote[0] == given[0]):
        return remote
    return given


def _reason(report: ParsedReport, rcpt: RecipientStatus, status: str) -> str:
    if rcpt.mta_category in v.MTA_CATEGORIES:
        return v.MTA_CATEGORIES[rcpt.mta_category]
    if rcpt.diagnostic_type == "x-unix":
        return v.Reason.MAILER_ERROR  # a local delivery program (procmail, a pipe) failed, whatever it printed
    reason = (
        v.decisive_reason_from_status(status)
        or v.reason_from_text(rcpt.diagnostic)
        or v.reason_from_status(status)
        or (v.reason_from_text(report.summary) if len(report.recipients) == 1 else "")  # else it tells of the others too
        or (v.Reason.EXPIRED if rcpt.action == "delayed" else "")  # still queued: what will end it is the retry limit
    )
    if v.reason_from_status(status) == v.Reason.USER_UNKNOWN and reason not in v.OUTRANK_ADDRESS_STATUS:
        reason = v.Reason.USER_UNKNOWN  # "5.1.1 ... inactive address": the code is the precise part
    if reason in (v.Reason.USER_UNKNOWN, v.Reason.HOST_UNKNOWN):
        return _address_reason_at_stage(reason, rcpt, status)
    if not reason and rcpt.command in (smtp_command.CONN, smtp_command.HELO):
        return v.Reason.BLOCKED  # refused before any address was given: the refusal is of us
    return reason


def _address_reason_at_stage(reason: str, rcpt: RecipientStatus, status: str) -> str:
    """An "unknown user/host" answer only condemns the address when it came at the address stage.

    Refused at MAIL FROM, the address in question was our sender's. Refused
    after DATA, the server had accepted the recipient and read the message: a
    content or sender filter is speaking in an unknown-user voice. A status code
    that names the address (X.1.1) or a refusal at RCPT settles it either way.
    """
    if rcpt.command == smtp_command.MAIL:
        return v.Reason.REJECTED
    if reason == v.Reason.HOST_UNKNOWN or v.reason_from_status(status) == v.Reason.USER_UNKNOWN:
        return reason
    if rcpt.command == smtp_command.RCPT or v.unknown_after_data(rcpt.diagnostic):
        return reason
    if rcpt.command == smtp_command.DATA or v.answers_for_a_filter(rcpt.diagnostic):
        return v.Reason.FILTERED
    if v.status_blames_a_filter(status):
        return v.Reason.FILTERED
    return reason


def _given_up(status: str, rcpt: RecipientStatus) -> bool:
    """A temporary *address* answer the reporting MTA stopped retrying ("Action: failed", "Status: 4.1.1"): final.

    Its queue retried for days and the receiving server said each time that it
    did not know the address (X.1.x: RFC 3463's addressing status); a "delayed"
    report of the same answer is still being retried, and a temporary failure
    of anything else (DNS, a full mailbox, a block) says nothing lasting.
    """
    return rcpt.action == "failed" and status.startswith("4.1.")


def _permanent(status: str, rcpt: RecipientStatus) -> bool:
    if status:
        return status.startswith("5")
    if rcpt.action == "delayed" or _TEMPORARY.search(rcpt.diagnostic):
        return False
    return not (rcpt.smtp_reply or reply_in(rcpt.diagnostic)).startswith("4")


# Wording that says the failure was transient even where no 4xx code survives;
# Exim's "retry timeout exceeded" is only ever given for errors that were temporary.
_TEMPORARY = re.compile(
    r" (temporar|persistent)|will be retried|warning message only|retry timeout exceeded|all hosts have been failing", re.IGNORECASE
)
