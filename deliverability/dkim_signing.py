"""DKIM signatures with dkimpy, when a sending domain has a selector and a key file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import dkim

SIGNED_HEADERS = [
    b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe", b"list-unsubscribe-post", b"mime-version", b"content-type"
]


class DkimKeyError(RuntimeError):
    """The configured key cannot be read: every message of the domain would go out unsigned."""


@lru_cache(maxsize=64)
def _key(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"cannot read DKIM key {path}: {exc.strerror}") from None


def dkim_sign(raw: bytes, *, domain: str, selector: str, key_path: str) -> bytes:
    """``raw`` with a DKIM-Signature header in front (relaxed/relaxed, rsa-sha256)."""
    signature = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        _key(key_path),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=SIGNED_HEADERS,
    )
    return signature + raw
