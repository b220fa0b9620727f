"""The shape of an API token: ``sp_<prefix>_<secret>``.

The prefix (8 hex characters) names a token in lists, logs and ``revoke_token``;
the secret (``secrets.token_urlsafe(32)``, 256 bits) is what authenticates, and
only its SHA-256 is stored. A fast hash is enough: the secret is random, not a
password, so there is nothing to guess from the digest.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import NamedTuple

SCHEME = "sp_"
PREFIX_LENGTH = 8


class TokenParts(NamedTuple):
    prefix: str
    secret: str


def new_token() -> tuple[TokenParts, str]:
    parts = TokenParts(secrets.token_hex(PREFIX_LENGTH // 2), secrets.token_urlsafe(32))
    return parts, f"{SCHEME}{parts.prefix}_{parts.secret}"


def parse(plaintext: str) -> TokenParts | None:
    """Split by position: the secret may itself contain ``_``."""
    head, prefix_end = len(SCHEME), len(SCHEME) + PREFIX_LENGTH
    if not plaintext.startswith(SCHEME) or plaintext[prefix_end : prefix_end + 1] != "_":
        return None
    parts = TokenParts(plaintext[head:prefix_end], plaintext[prefix_end + 1 :])
    return parts if parts.secret else None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
