"""The VERP bounce address, its one owner: ``bounces+<uuid hex>.<signature>@<sending domain>``.

Every message's Return-Path names the message, so bounces come back tied to
it. The address is public (any recipient sees it, a forward shows it), so the
token carries an HMAC of the message uuid keyed from ``SECRET_KEY``: a report
sent to a token we did not sign (made up, or the unsigned ``bounces+<uuid>@``
form of mail sent before signing) ties to nothing on its own and is kept as
unverified evidence. ``SECRET_KEY_FALLBACKS`` still verify, so bounces of mail
sent before a key rotation keep their tie.

The classifier (``deliverability.bounces.parse.VERP``) finds the token in a
report; ``verp_message_uuid`` here decides whether it is ours.
"""

from __future__ import annotations

import base64
import uuid

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

_SALT = "sendplane.dispatch.verp"
# 16 base32 characters: 80 bits of the HMAC. The local part stays at 57 of SMTP's 64 octets.
SIGNATURE_CHARS = 16
LOCAL_PREFIX = "bounces+"


def verp_address(message_uuid: uuid.UUID, domain: str) -> str:
    """The envelope sender of one message."""
    return f"{LOCAL_PREFIX}{verp_token(message_uuid)}@{domain}"


def verp_token(message_uuid: uuid.UUID) -> str:
    return f"{message_uuid.hex}.{_signature(message_uuid.hex, _secrets()[0])}"


def verp_message_uuid(token: str) -> uuid.UUID | None:
    """The message a token names, only if we signed it (case-insensitive: some MTAs lower-case local parts)."""
    ident, _, signature = (token or "").strip().lower().partition(".")
    if len(ident) != 32 or not signature:
        return None
    try:
        parsed = uuid.UUID(hex=ident)
    except ValueError:
        return None
    for secret in _secrets():
        if constant_time_compare(signature, _signature(parsed.hex, secret)):
            return parsed
    return None


def verp_claimed_uuid(token: str) -> uuid.UUID | None:
    """The uuid a token names whether or not it is signed: evidence for operators, never a tie."""
    ident = (token or "").strip().lower().partition(".")[0]
    try:
        return uuid.UUID(hex=ident) if len(ident) == 32 else None
    except ValueError:
        return None


def _secrets() -> list[str]:
    """The current key signs; it and the fallbacks verify (Django's own rotation setting)."""
    return [str(settings.SECRET_KEY), *(str(key) for key in getattr(settings, "SECRET_KEY_FALLBACKS", ()))]


def _signature(ident: str, secret: str | bytes) -> str:
    digest = salted_hmac(_SALT, ident, secret=secret, algorithm="sha256").digest()
    return base64.b32encode(digest).decode("ascii")[:SIGNATURE_CHARS].lower()
