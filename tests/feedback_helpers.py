"""Shared helpers of the feedback tests: real corpus bounces, sent messages to bounce, counter totals."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from deliverability.models import DomainMinute
from dispatch.models import Message, MessageStatus
from dispatch.services.delivery import envelope_sender
from dispatch.services.triggers import trigger_accept
from dispatch.services.verp import verp_address
from dispatch.services.worker import batch_send
from tests.conftest import CORPORA, recipients

BOUNCES = CORPORA / "bounces"
GMAIL_USER_UNKNOWN = "lhost-gmail-01.eml"  # labelled userunknown, hard, 5.1.1
GMAIL_ORIGINAL_ID = b"<D992C2C3-F175-4C4D-97E2-53A90E4E5BF5@gmail.com>"
SES_MAILBOX_FULL = "lhost-amazonses-03.eml"  # labelled mailboxfull, soft; recipient kijitora@example.jp
ARF_ABUSE = "arf-01.eml"  # complaint about redacted@example.net
ARF_ORIGINAL_TO = b"\nTo: redacted@example.net\n"  # in its message/rfc822 part, which quotes no Message-ID


def corpus(name: str) -> bytes:
    path = BOUNCES / name
    if not path.exists():
        pytest.skip(f"bounce corpus not found at {BOUNCES}")
    return path.read_bytes()


def sent_message(campaign: Any, address: str, key: str = "k") -> Message:
    """A message of ours to ``address``, handed over (status sent) as the worker would leave it."""
    trigger_accept(campaign=campaign, idempotency_key=key, recipients=[{"address": address, "context": recipients(1)[0]["context"]}])
    message = Message.objects.filter(recipient=address).latest("pk")
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.SENT, sent_at=timezone.now())
    return Message.objects.select_related("sending_domain").get(pk=message.pk)


def bounce_of(message: Message) -> bytes:
    """The Gmail user-unknown bounce, quoting our Message-ID instead of its original one."""
    raw = corpus(GMAIL_USER_UNKNOWN)
    assert GMAIL_ORIGINAL_ID in raw
    return raw.replace(GMAIL_ORIGINAL_ID, message.message_id().encode())


def complaint_of(message: Message) -> bytes:
    """The corpus ARF abuse report, its original message part quoting our Message-ID and our recipient."""
    raw = corpus(ARF_ABUSE)
    assert ARF_ORIGINAL_TO in raw
    return raw.replace(ARF_ORIGINAL_TO, f"\nMessage-ID: {message.message_id()}\nTo: {message.recipient}\n".encode())


def verp_of(message: Message) -> str:
    """The signed bounce address the message was sent with (``delivery.envelope_sender``, the format's one owner)."""
    return envelope_sender(message)


def counters(domain_id: int) -> dict[str, int]:
    rows = DomainMinute.objects.filter(sending_domain_id=domain_id)
    return {name: sum(getattr(row, name) for row in rows) for name in DomainMinute.COUNTS}


def send_all(campaign: Any) -> None:
    """Batches of the campaign's domain until one leaves nothing due."""
    for _ in range(100):
        if not batch_send(domain_id=campaign.sending_domain_id).more:
            return


def dsn(message: Message, status: str, diagnostic: str) -> bytes:
    """A DSN for ``message`` as a receiving MTA returns it: to its signed VERP address, one failed recipient."""
    return (
        f"From: MAILER-DAEMON@mx.example.net\r\nTo: {verp_address(message.uuid, 'mail.example.com')}\r\n"
        "Subject: Delivery Status Notification (Failure)\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {message.recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n--B--\r\n"
    ).encode()
