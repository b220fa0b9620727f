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
