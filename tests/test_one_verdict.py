"""Issue 16, "one bounce verdict": the three paths that read a failure decide it with one rule.

A receiving server's reply reaches us three ways: in our own SMTP session
(``smtp_reply.classify_reply``), quoted in a DSN (``classify_message``), or in
an ESP's webhook event (``webhooks.event_verdict``). Each path reads the reply
and how final it was, then ``vocabulary.failure_verdict`` decides kind, reason
and status. This table of replies is walked through all three: the same reply,
equally final, gets the same verdict. Before, a delayed "4.1.1 user unknown"
DSN was hard (and suppressed the address everywhere) while the same 450 in
our session was soft, and a permanent null-MX refusal differed too.
"""

from __future__ import annotations

import pytest
from anymail.signals import AnymailTrackingEvent

from deliverability.bounces import classify_message
from deliverability.bounces import vocabulary as v
from deliverability.bounces.smtp_reply import classify_reply
from dispatch.services.webhooks import event_verdict

# (SMTP reply as the receiving server wrote it, the kind every path must give)
REPLIES: list[tuple[str, str]] = [
    ("550 5.1.1 <ana@example.org>: Recipient address rejected: User unknown in virtual alias table", v.Kind.HARD),
    ("450 4.1.1 <ana@example.org>: Recipient address rejected: User unknown in local recipient table", v.Kind.SOFT),
    ("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", v.Kind.HARD),
    ("556 5.1.10 Recipient address has null MX", v.Kind.HARD),
    ("550 5.7.27 Sender address has null MX", v.Kind.SOFT),  # about our sender's domain, not the recipient
    ("554 5.3.2 System not accepting network messages", v.Kind.HARD),
    ("550 5.1.2 Host unknown: the domain has no mail exchanger", v.Kind.HARD),
    ("451 4.4.0 DNS temporary failure looking up example.org", v.Kind.SOFT),
    ("550 5.1.6 Mailbox has moved to ana@new.example.org", v.Kind.HARD),
    ("552 5.2.2 Mailbox full: quota exceeded", v.Kind.SOFT),
    ("452 4.2.2 The email account that you tried to reach is over quota", v.Kind.SOFT),
    ("421 4.7.28 Our system has detected an unusual rate of unsolicited mail", v.Kind.SOFT),
    ("550 5.7.26 Unauthenticated email from example.com is not accepted due to its DMARC policy", v.Kind.SOFT),
    ("554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org", v.Kind.SOFT),
    ("550 5.7.1 Message rejected as spam by Content Filtering", v.Kind.SOFT),
    ("550 5.2.1 The email account that you tried to reach is disabled", v.Kind.SOFT),
    ("451 4.3.0 Temporary system error, try again later", v.Kind.SOFT),
    ("550 Requested action not taken: mailbox unavailable (no such user)", v.Kind.HARD),
]


def our_session(reply: str) -> tuple[str, str, str]:
    verdict = classify_reply(int(reply[:3]), reply)
    return verdict.kind, verdict.reason, verdict.status


def a_dsn(reply: str) -> tuple[str, str, str]:
    """The reply quoted by the reporting MTA; "failed" when it was permanent, "delayed" while it is retried."""
    action = "failed" if reply.startswith("5") else "delayed"
    status = next((word for word in reply.split()[1:2] if word[:1] in "45" and word.count(".") == 2), "")
    raw = (
        "From: MAILER-DAEMON@mx.example.net\r\nTo: bounces@mail.example.com\r\nSubject: Delivery Status Notification\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nA message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; ana@example.org\r\nAction: {action}\r\n"
        + (f"Status: {status}\r\n" if status else f"Status: {reply[0]}.0.0\r\n")
        + f"Diagnostic-Code: smtp; {reply}\r\n--B--\r\n"
    ).encode()
    (verdict,) = classify_message(raw)
    return verdict.kind, verdict.reason, verdict.status


def an_esp_event(reply: str) -> tuple[str, str, str]:
    event = AnymailTrackingEvent(
        event_type="bounced" if reply.startswith("5") else "deferred", recipient="ana@example.org", mta_response=reply,
        esp_event={},
    )
    verdict = event_verdict("Postmark", event)
    assert verdict is not None
    return verdict.kind, verdict.reason, verdict.status


@pytest.mark.parametrize(("reply", "kind"), REPLIES, ids=[r[:24] for r, _ in REPLIES])
def test_every_path_gives_the_same_verdict(reply: str, kind: str) -> None:
    session, dsn, esp = our_session(reply), a_dsn(reply), an_esp_event(reply)
    if not reply.split()[1][:1].isdigit():  # no enhanced status in the reply: a DSN's own Status field ("5.0.0") stands
        session, dsn, esp = session[:2], dsn[:2], esp[:2]
    assert session == dsn == esp, f"session {session}, DSN {dsn}, ESP {esp}"
    assert session[0] == kind


def test_a_temporary_address_answer_becomes_hard_only_once_the_reporting_mta_gave_up() -> None:
    """ "Action: failed" with 4.1.1: the queue retried for days and the server never knew the address."""
    reply = "450 4.1.1 <ana@example.org>: Recipient address rejected: User unknown"
    text = (
        "From: MAILER-DAEMON@mx.example.net\r\nTo: bounces@mail.example.com\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nx\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
        "Final-Recipient: rfc822; ana@example.org\r\nAction: {action}\r\nStatus: 4.1.1\r\n"
        f"Diagnostic-Code: smtp; {reply}\r\n--B--\r\n"
    )
    kinds = {action: classify_message(text.format(action=action).encode())[0].kind for action in ("delayed", "failed")}
    assert kinds == {"delayed": v.Kind.SOFT, "failed": v.Kind.HARD}
    # A temporary failure of anything but the address stays soft when the MTA gives up (DNS, a full mailbox).
    for status, words in (("4.4.0", "DNS temporary failure"), ("4.2.2", "mailbox full")):
        given_up = text.replace("Status: 4.1.1", f"Status: {status}").replace(reply, f"451 {status} {words}")
        assert classify_message(given_up.format(action="failed").encode())[0].kind == v.Kind.SOFT
