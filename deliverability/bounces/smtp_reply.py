"""A verdict for an SMTP server's answer during our own delivery (a synchronous bounce).

The receiving server refused at RCPT or DATA while we were connected: there
is no DSN, only the reply code and text, read with the same tables as a DSN's
Diagnostic-Code. A refusal of our message's form (a line too long, a syntax or
media error: ``vocabulary.own_form_reason``) is no verdict on the recipient.
"""

from __future__ import annotations

from dataclasses import dataclass

from deliverability.bounces import vocabulary as v
from deliverability.bounces.parse import status_in


@dataclass(frozen=True)
class ReplyVerdict:
    kind: str
    reason: str
    status: str
    permanent: bool
    own_form: bool = False  # the server refused our message's form or our session, not the recipient


def classify_reply(code: int | None, text: str) -> ReplyVerdict:
    """Kind, reason and enhanced status of a 4xx/5xx reply (the code decides permanence when the text has no status)."""
    status = status_in(text)
    permanent = status.startswith("5") if status else (code or 0) >= 500
    own = v.own_form_reason(code, status, text)
    if own:
        status = status or v.pseudo_status(own, permanent)
        return ReplyVerdict(kind=v.Kind.SOFT, reason=own, status=status, permanent=permanent, own_form=True)
    reason = (
        v.decisive_reason_from_status(status) or v.reason_from_text(text) or v.reason_from_status(status) or v.Reason.UNDEFINED
    )
    kind, reason, status = v.failure_verdict(reason, status, permanent)
    return ReplyVerdict(kind=kind, reason=reason, status=status, permanent=permanent)
