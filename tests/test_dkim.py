"""DKIM: a domain with a selector and key signs; the signature verifies with dkimpy."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import recipients

pytestmark = pytest.mark.django_db


def test_signed_message_verifies_against_the_public_key(campaign: Any, smtp_sink: Any, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path = tmp_path / "dkim.pem"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    key_path.write_bytes(pem)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    domain = campaign.sending_domain
    domain.dkim_selector, domain.dkim_key_path = "s2026", str(key_path)
    domain.save()
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(1))
    batch_send(domain_id=domain.pk)
    raw = smtp_sink.received[0].raw
    assert raw.startswith(b"DKIM-Signature:") or b"\nDKIM-Signature:" in raw

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s2026._domainkey.mail.example.com."
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    assert dkim.verify(raw, dnsfunc=dns)


def _key_pair(tmp_path: Path) -> tuple[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "k.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"sel._domainkey.news.example.com."
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    return str(path), dns


@pytest.mark.parametrize(
    "subject, to",
    [
        ("plain", "a@example.org"),
        ("Ünïcödé — a subject long enough to be folded over several encoded-words " * 3, "a@example.org"),
        ("x", "josé@example.org"),  # a UTF-8 header (RFC 6532), as sent over SMTPUTF8
    ],
)
def test_every_signature_verifies_with_dkimpy_and_a_changed_message_does_not(tmp_path: Path, subject: str, to: str) -> None:
    from deliverability.dkim_signing import dkim_sign
    from templates_registry.rendering.mime import build_mime, encode_headers

    key_path, dns = _key_pair(tmp_path)
    headers = encode_headers([("From", "News <n@news.example.com>"), ("To", to), ("Subject", subject), ("Message-ID", "<1@x>")])
    raw = build_mime(headers=headers, text="Hello  there\n\n.dot\n", html="<p>é</p>" * 500)
    signed = dkim_sign(raw, domain="news.example.com", selector="sel", key_path=key_path)
    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"=C3=A9", b"=C3=A8", 1), dnsfunc=dns), "a changed body still verified"
    assert not dkim.verify(signed.replace(b"Message-ID: <1@x>", b"Message-ID: <2@x>"), dnsfunc=dns), "a changed header still verified"
    # Relaxed headers: a relay that re-folds a header or changes a name's case does not break the signature.
    refolded = signed.replace(b"Message-ID: <1@x>", b"message-id:\r\n   <1@x>")
    assert dkim.verify(refolded, dnsfunc=dns)


def test_a_key_that_is_not_rsa_is_a_domain_fault_named_in_one_line(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from deliverability.dkim_signing import DkimKeyError, dkim_key_check

    path = tmp_path / "ed.pem"
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(DkimKeyError, match=r"is not an RSA private key: it is \w+"):
        dkim_key_check(str(path))
