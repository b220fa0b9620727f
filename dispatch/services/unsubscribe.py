"""Signed unsubscribe tokens, the one-click unsubscribe (RFC 8058) and the List-Unsubscribe mailto.

Both doors end in ``unsubscribe_by_token``: the recipient suppressed for the
message's domain (the ``unsubscribed`` event) and, for a marketing campaign,
their consent to its purpose withdrawn, in one transaction.
"""

from __future__ import annotations

import email
import hmac
import re
import time
import uuid
from email.header import decode_header, make_header
from email.policy import compat32
from email.utils import getaddresses

from django.conf import settings
from django.db import transaction
from django.utils.crypto import salted_hmac

from controlplane import metrics
from deliverability.models import TRANSACTIONAL, EventType, FeedbackEvent, MatchedBy
from deliverability.services import Feedback
from deliverability.services.consent import consent_withdraw
from dispatch.models import Message
from dispatch.services.feedback import message_event_record

_SALT = "sendplane.unsubscribe"


def unsubscribe_token(message: Message) -> str:
    """Short enough for a mailto local part (64 characters): uuid hex, a dot, 16 hex of HMAC."""
    return f"{message.uuid.hex}.{_mac(message.uuid.hex)}"


def unsubscribe_urls(message: Message) -> tuple[str, str]:
    token = unsubscribe_token(message)
    return f"{settings.SENDPLANE_PUBLIC_URL}/u/{token}", f"mailto:unsubscribe+{token}@{message.sending_domain.domain}"


def message_for_token(token: str) -> Message | None:
    """The message a token names, or None when it is malformed or its signature is wrong."""
    ident, _, mac = token.partition(".")
    try:
        parsed = uuid.UUID(hex=ident)
    except ValueError:
        return None
    if len(ident) != 32 or not hmac.compare_digest(mac, _mac(ident)):
        return None
    return Message.objects.select_related("sending_domain", "campaign").filter(uuid=parsed).first()


def unsubscribe_one_click(*, token: str, arrived: float | None = None) -> Message | None:
    """The one-click POST (RFC 8058); idempotent. None for a bad token."""
    done = unsubscribe_by_token(token=token, via="one_click", arrived=arrived)
    return done[0] if done is not None else None


def unsubscribe_by_token(*, token: str, via: str, arrived: float | None = None) -> tuple[Message, FeedbackEvent, bool] | None:
    """Suppress the recipient for the message's domain and withdraw their consent to the campaign's purpose.

    Returns (message, the unsubscribed event, created); idempotent (one event per
    message, however often the link is used or the mail sent). None for a bad
    token. ``arrived`` (time.monotonic()) times the path to the committed
    suppression (``sendplane_unsubscribe_suppression_seconds``).
    """
    message = message_for_token(token)
    if message is None:
        return None
    arrived = time.monotonic() if arrived is None else arrived
    with transaction.atomic():
        event, created = message_event_record(
            Feedback(
                event_type=EventType.UNSUBSCRIBED,
                recipient=message.recipient,
                source="unsubscribe",
                dedupe=f"unsubscribe:{message.uuid.hex}",  # one per message, however often the link is used
                sending_domain=message.sending_domain,
                message_uuid=message.uuid,
                provider=message.provider,
                matched_by=MatchedBy.TOKEN,
                detail={"via": via},
            ),
            message,
        )
        purpose = message.campaign.purpose
        if purpose != TRANSACTIONAL and message.recipient:  # an erased message's recipient is blank: the suppression holds
            consent_withdraw(address=message.recipient, purpose=purpose, source=f"unsubscribe:{via}:{message.uuid.hex}")
        metrics.unsubscribe_committed(via=via, arrived=arrived)
    return message, event, created


# "unsubscribe+<token>@<domain>" (``unsubscribe_urls``); the local part is case-insensitive in practice.
_MAILTO_LOCAL = re.compile(r"unsubscribe\+([0-9a-f]{32}\.[0-9a-f]{16})@", re.I)
# Where a receiving MTA or the recipient's client leaves the address the mail was sent to.
_ADDRESSED_TO = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")
_HEADER_BYTES = 64 * 1024  # the header block of a mail to the mailto is small; never parse a body for it


def mailto_token(raw: bytes) -> str | None:
    """The signed token of a mail sent to our List-Unsubscribe mailto address, or None (a bounce, anything else).

    Only the header block is read; the token's signature is checked by
    ``message_for_token`` (a forged address unsubscribes nobody).
    """
    head = raw[:_HEADER_BYTES].split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    try:
        headers = email.message_from_bytes(head + b"\n\n", policy=compat32)
        # A header some client wrote as RFC 2047 encoded-words is read decoded.
        values = [str(make_header(decode_header(str(v)))) for name in _ADDRESSED_TO for v in headers.get_all(name, [])]
    except Exception:  # noqa: BLE001 - the email package raises anything on hostile input
        return None
    for _, address in getaddresses(values):
        found = _MAILTO_LOCAL.match(address.strip())
        if found:
            return found.group(1).lower()
    return None


def _mac(ident: str) -> str:
    return salted_hmac(_SALT, ident, algorithm="sha256").hexdigest()[:16]
