"""Render a claimed message into MIME and hand it to a transport.

Transports are Django email backends: SMTP (spoken phase by phase, so a
dropped connection is classified correctly) or any other backend, which is how
every ESP django-anymail supports works by setting ``EMAIL_BACKEND``.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from typing import Any

from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend

from controlplane import metrics
from deliverability.dkim_signing import dkim_sign
from deliverability.models import SendingDomain
from dispatch.models import Message, MessageStatus
from dispatch.services.unsubscribe import unsubscribe_urls
from templates_registry.rendering import CompiledVersion, RenderedMessage, RenderError, compile_version
from templates_registry.rendering.mime import build_mime, encode_headers, standard_headers


@dataclass(frozen=True)
class Outcome:
    status: str  # a MessageStatus value
    code: int | None = None
    reply: str = ""


SENT = Outcome(MessageStatus.SENT, 250)
ESP_METADATA_KEY = "sendplane_message"


def message_headers(message: Message, domain: SendingDomain, rendered: RenderedMessage) -> list[tuple[str, str]]:
    """The headers every message carries, whatever the transport (values not yet encoded)."""
    return standard_headers(
        sender_name=rendered.sender_name,
        sender_address=domain.default_sender,
        recipient=message.recipient,
        subject=rendered.subject,
        message_id=message.message_id(),
        unsubscribe=unsubscribe_urls(message),
    )


def render_message(message: Message) -> RenderedMessage:
    """Render through the version's compiled template (immutable, so cached by id). Raises RenderError."""
    compiled = _compiled_by_version.get(message.version_id)
    if compiled is None:
        compiled = compile_version(message.version.content())
        if len(_compiled_by_version) >= 256:
            _compiled_by_version.clear()
        _compiled_by_version[message.version_id] = compiled
    return compiled.render(message.context)


_compiled_by_version: dict[int, CompiledVersion] = {}


def build_raw(message: Message, domain: SendingDomain) -> bytes:
    """The exact bytes an SMTP server receives (before DKIM). Raises RenderError."""
    rendered = render_message(message)
    headers = encode_headers(message_headers(message, domain, rendered))
    return build_mime(headers=headers, text=rendered.text, html=rendered.html)


def build_email(message: Message, domain: SendingDomain) -> EmailMultiAlternatives:
    """The same message as a Django EmailMessage, for non-SMTP backends (ESPs). Raises RenderError."""
    rendered = render_message(message)
    headers = dict(message_headers(message, domain, rendered))
    email = EmailMultiAlternatives(
        subject=headers.pop("Subject"), body=rendered.text, from_email=headers.pop("From"), to=[headers.pop("To")], headers=headers
    )
    email.attach_alternative(rendered.html, "text/html")
    return email


def envelope_sender(message: Message) -> str:
    """VERP: bounces come back to an address that names the message."""
    return f"bounces+{message.uuid.hex}@{message.sending_domain.domain}"


def open_transport() -> Transport:
    backend = get_connection()
    return SmtpTransport(backend) if isinstance(backend, SmtpBackend) else BackendTransport(backend)


@dataclass(frozen=True)
class Prepared:
    """A message ready to hand over: rendering and signing are done, only the exchange is left."""

    message: Message
    payload: Any  # bytes for SMTP, an EmailMessage for other backends


class Transport:
    """Prepare (render, serialize, sign: the slow part) then send (the exchange only).

    The worker prepares a whole batch before taking tokens, so the time from
    taking a token to handing the message over is as short and as even as it
    can be: the domain's rate then holds as measured at the receiving server.
    """

    def prepare(self, message: Message, domain: SendingDomain) -> Prepared | Outcome:
        raise NotImplementedError

    def open(self) -> None:
        """Connect before a batch's hand-overs; a transport without a connection has nothing to do."""

    def send(self, prepared: Prepared) -> Outcome:
        raise NotImplementedError

    def close(self) -> None:
        """Disconnect after the batch, whatever happened."""


class SmtpTransport(Transport):
    """One persistent SMTP connection per batch, configured by Django's EMAIL_* settings."""

    def __init__(self, backend: SmtpBackend) -> None:
        self.backend = backend

    def open(self) -> None:
        self.backend.open()

    def close(self) -> None:
        try:
            self.backend.close()
        except (smtplib.SMTPException, OSError):
            pass

    def prepare(self, message: Message, domain: SendingDomain) -> Prepared | Outcome:
        try:
            raw = build_raw(message, domain)
        except RenderError as exc:
            return Outcome(MessageStatus.FAILED, None, f"render: {exc}")
        if domain.dkim_selector and domain.dkim_key_path:
            raw = dkim_sign(raw, domain=domain.domain, selector=domain.dkim_selector, key_path=domain.dkim_key_path)
        return Prepared(message, raw)

    @metrics.timed_send("smtp")
    def send(self, prepared: Prepared) -> Outcome:
        return self._transaction(self._connection(), envelope_sender(prepared.message), prepared.message.recipient, prepared.payload)

    def _connection(self) -> smtplib.SMTP:
        """The open connection, reopened after a drop; open() raises when it cannot connect."""
        if self.backend.connection is None:
            self.open()
        if self.backend.connection is None:  # only with fail_silently, which get_connection() does not set
            raise smtplib.SMTPServerDisconnected("the SMTP connection could not be opened")
        return self.backend.connection

    def _transaction(self, smtp: smtplib.SMTP, sender: str, recipient: str, raw: bytes) -> Outcome:
        phase = "envelope"
        try:
            smtp.ehlo_or_helo_if_needed()
            code, reply = smtp.mail(sender)
            if code != 250:
                return self._refused(smtp, code, reply)
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                return self._refused(smtp, code, reply)
            phase = "data"
            code, reply = _data(smtp, raw)
            return SENT if code == 250 else self._refused(smtp, code, reply)
        except smtplib.SMTPDataError as exc:
            return self._refused(smtp, exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError) as exc:
            self._drop()
            if phase == "data":
                # The server may have said 250 before the line died: never send again automatically.
                return Outcome(MessageStatus.UNKNOWN, None, f"connection lost during DATA: {exc}")
            return Outcome(MessageStatus.DEFERRED, None, f"connection lost before DATA: {exc}")

    def _refused(self, smtp: smtplib.SMTP, code: int, reply: bytes | str) -> Outcome:
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        try:
            smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()
        status = MessageStatus.DEFERRED if 400 <= code < 500 else MessageStatus.FAILED
        return Outcome(status, code, text[:1000])

    def _drop(self) -> None:
        self.close()
        self.backend.connection = None


def _data(smtp: smtplib.SMTP, raw: bytes) -> tuple[int, bytes]:
    """DATA without smtplib's dot-stuffing regex over the whole message when no line starts with '.'.

    Our MIME escapes a leading dot in the body (=2E) and headers never start
    with one, so the regex (~0.5 ms on a 140 KB message) is almost never needed.
    """
    if raw.startswith(b".") or b"\n." in raw:
        return smtp.data(raw)
    code, reply = smtp.docmd("data")
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    # One write: a separate small write of the terminator would wait out the
    # peer's delayed ACK (Nagle), ~40 ms a message.
    smtp.send((raw if raw.endswith(b"\r\n") else raw + b"\r\n") + b".\r\n")
    return smtp.getreply()


class BackendTransport(Transport):
    """Any other Django backend (anymail ESPs, locmem, console): one call per message."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def open(self) -> None:
        self.backend.open()

    def close(self) -> None:
        self.backend.close()

    def prepare(self, message: Message, domain: SendingDomain) -> Prepared | Outcome:
        try:
            email = build_email(message, domain)
        except RenderError as exc:
            return Outcome(MessageStatus.FAILED, None, f"render: {exc}")
        email.extra_headers["Return-Path"] = envelope_sender(message)
        # ESPs echo metadata in their tracking webhooks: how a webhook event finds its message.
        email.metadata = {ESP_METADATA_KEY: message.uuid.hex}  # type: ignore[attr-defined]
        return Prepared(message, email)

    @metrics.timed_send("backend")
    def send(self, prepared: Prepared) -> Outcome:
        try:
            self.backend.send_messages([prepared.payload])
        except Exception as exc:  # noqa: BLE001 - every ESP error is a retryable provider failure here
            return Outcome(MessageStatus.DEFERRED, None, f"{type(exc).__name__}: {exc}"[:1000])
        return _anymail_outcome(prepared.payload)


def _anymail_outcome(email: EmailMultiAlternatives) -> Outcome:
    status = getattr(email, "anymail_status", None)
    statuses = set(getattr(status, "status", None) or {"sent"})
    # "unknown": the ESP took the message but reports no per-recipient status.
    if statuses & {"rejected", "invalid", "failed"}:
        return Outcome(MessageStatus.FAILED, None, f"ESP status {sorted(statuses)}")
    return SENT
