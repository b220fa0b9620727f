"""DKIM signatures with dkimpy, when a sending domain has a selector and a key file."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

SIGNED_HEADERS = [
    b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe", b"list-unsubscribe-post", b"mime-version", b"content-type"
]


class DkimKeyError(RuntimeError):
    """The configured key cannot be read or is not a private key: a fault of the whole domain, not of one message.

    Its text is the reason shown to the operator (the domain is paused with it), e.g.
    ``DKIM key /etc/dkim/mail.pem unreadable: No such file or directory``.
    """


def dkim_key_check(key_path: str) -> None:
    """Raise DkimKeyError unless the key file reads and parses as a private key (the worker asks once per batch)."""
    _key(key_path)


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


def _key(path: str) -> bytes:
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise DkimKeyError(f"DKIM key {path} unreadable: {exc.strerror}") from None
    # Cached by the file's identity too: a key the operator fixes in place is read again, not served from the cache.
    return _key_read(path, stat.st_ino, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _key_read(path: str, inode: int, mtime_ns: int, size: int) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"DKIM key {path} unreadable: {exc.strerror}") from None
    try:
        parse_pem_private_key(data)
    except (UnparsableKeyError, ValueError) as exc:  # binascii.Error (bad base64) is a ValueError
        detail = " ".join(str(exc).split())[:200]  # dkimpy's text spans lines; the reason is one
        raise DkimKeyError(f"DKIM key {path} is not an RSA private key: {detail}") from None
    return data
