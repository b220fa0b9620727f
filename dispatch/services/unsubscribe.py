"""Signed unsubscribe tokens and the one-click unsubscribe (RFC 8058)."""

from __future__ import annotations

import hmac
import uuid

from django.conf import settings
from django.utils.crypto import salted_hmac

from deliverability.models import EventType, MatchedBy
from deliverability.services import Feedback
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
    return Message.objects.select_related("sending_domain").filter(uuid=parsed).first()


def unsubscribe_one_click(*, token: str) -> Message | None:
    """Record the unsubscribe (which suppresses the recipient for its domain); idempotent. None for a bad token."""
    message = message_for_token(token)
    if message is not None:
        message_event_record(
            Feedback(
                event_type=EventType.UNSUBSCRIBED,
                recipient=message.recipient,
                source="unsubscribe",
                dedupe=f"unsubscribe:{message.uuid.hex}",  # one per message, however often the link is used
                sending_domain=message.sending_domain,
                message_uuid=message.uuid,
                provider=message.provider,
                matched_by=MatchedBy.TOKEN,
            ),
            message,
        )
    return message


def _mac(ident: str) -> str:
    return salted_hmac(_SALT, ident, algorithm="sha256").hexdigest()[:16]
