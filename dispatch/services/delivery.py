"""Render a claimed message into MIME and hand it to a transport.

Transports are Django email backends: SMTP (spoken phase by phase, so a
dropped connection is classified correctly) or any other backend, which is how
every ESP django-anymail supports works by setting ``EMAIL_BACKEND``.
"""

from __future__ import annotations

import logging
import math
import smtplib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend
from email_validator import EmailNotValidError, validate_email

from controlplane import metrics
from controlplane.errors import ServiceError
from deliverability.dkim_signing import DkimKeyError, dkim_key_check, dkim_sign
from deliverability.models import TRANSACTIONAL, SendingDomain
from dispatch.models import Message, MessageStatus
from dispatch.services.smtp_pool import Session, session_pool
from dispatch.services.unsubscribe import unsubscribe_urls
from dispatch.services.verp import verp_address
from templates_registry.checks import refuse_active_content
from templates_registry.rendering import CompiledVersion, RenderedMessage, RenderError, compile_version
from templates_registry.rendering.lint import MessageLintError, Problem, email_header_problems, header_problems
from templates_registry.rendering.mime import build_mime, encode_headers, standard_headers


@dataclass(frozen=True)
class Outcome:
    status: str  # a MessageStatus value
    code: int | None = None
    reply: str = ""

    def __post_init__(self) -> None:
        if "\x00" in self.reply:  # PostgreSQL text cannot hold NUL: one such reply would fail the whole batch's record
            object.__setattr__(self, "reply", self.reply.replace("\x00", "\ufffd"))


SENT = Outcome(MessageStatus.SENT, 250)
ESP_METADATA_KEY = "sendplane_message"
logger = logging.getLogger("sendplane.delivery")


class DomainFault(Exception):
    """No message of the sending domain can be prepared (its DKIM key is missing, unreadable or not a key).

    Not one message's problem: the worker releases the batch's rows and pauses
    the domain with this text as the reason, for the on-call engineer to fix.
    """


class UnsendableAddress(ServiceError):
    """The recipient cannot be written into an SMTP envelope at all (a refusal of that input, like any service's)."""


def one_line(exc: BaseException) -> str:
    """A reason for ``last_reply``: the exception named, on one line, bounded."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:1000]


def log_unexpected(message: Message, doing: str) -> None:
    """The traceback, with the message's uuid; its row keeps the one-line reason. Call from an ``except``."""
    logger.exception("message %s: unexpected error while %s", message.uuid.hex, doing, extra={"message_uuid": message.uuid.hex})


def envelope_recipient(address: str) -> tuple[str, bool]:
    """The recipient as the envelope carries it, and whether that needs SMTPUTF8.

    The domain goes as IDNA A-labels (any server takes ``user@xn--...``); a
    local part that is not ASCII has no ASCII form and needs a server that
    offers SMTPUTF8 (RFC 6531). The stored address is never changed: matching
    (suppression, unsubscribe, erase) keeps using it as it is.
    """
    if address.isascii():
        return address, False
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise UnsendableAddress(f"recipient address cannot be sent: {exc}") from None
    return (checked.ascii_email, False) if checked.ascii_email else (address, True)


def message_headers(message: Message, domain: SendingDomain, rendered: RenderedMessage) -> list[tuple[str, str]]:
    """The headers every message carries, whatever the transport (values not yet encoded)."""
    return standard_headers(
        sender_name=rendered.sender_name,
        sender_address=domain.default_sender,
        recipient=envelope_recipient(message.recipient)[0],  # A-labels where they suffice; else UTF-8 (RFC 6532)
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
    rendered = compiled.render(message.context, unsubscribe_url=unsubscribe_urls(message)[0])  # the link in the body too
    # The trigger checked this recipient's render for active content (the same render: version and context are
    # immutable); rows queued before that check existed are checked here (~0.02 ms a message).
    return rendered if message.content_checked else refuse_active_content(rendered)


_compiled_by_version: dict[int, CompiledVersion] = {}


def build_raw(message: Message, domain: SendingDomain) -> bytes:
    """The exact bytes an SMTP server receives (before DKIM). Raises RenderError (MessageLintError: ``lint_refuse``)."""
    rendered = render_message(message)
    headers = encode_headers(message_headers(message, domain, rendered))
    parts = {"text_parts": rendered.text_parts, "html_parts": rendered.html_parts}  # encoded part by part: see build_mime
    raw = build_mime(headers=headers, text=rendered.text, html=rendered.html, **parts)
    lint_refuse(header_problems(raw, **lint_mode(message)))
    return raw


def build_email(message: Message, domain: SendingDomain) -> EmailMultiAlternatives:
    """The same message as a Django EmailMessage, for non-SMTP backends (ESPs). Raises RenderError."""
    rendered = render_message(message)
    headers = dict(message_headers(message, domain, rendered))
    email = EmailMultiAlternatives(
        subject=headers.pop("Subject"), body=rendered.text, from_email=headers.pop("From"), to=[headers.pop("To")], headers=headers
    )
    email.attach_alternative(rendered.html, "text/html")
    lint_refuse(email_header_problems(email, **lint_mode(message)))
    return email


def lint_mode(message: Message) -> dict[str, bool]:
    """How strict the header lint is for this message: marketing mail needs One-Click unsubscribe (RFC 8058).

    An http List-Unsubscribe passes only where settings allowed an http public URL (the tests, the embedded
    installation): production refuses to start with one.
    """
    insecure = settings.EMBEDDED or settings.SENDPLANE_INSECURE_PUBLIC_URL
    return {"marketing": message.campaign.purpose != TRANSACTIONAL, "https_only": not insecure}


def lint_refuse(problems: list[Problem]) -> None:
    """A message whose header block fails the lint is not sent: counted by rule, refused like a render (``failed``)."""
    if problems:
        metrics.message_lint_failed(p.rule for p in problems)
        raise MessageLintError(problems)


def envelope_sender(message: Message) -> str:
    """VERP: bounces come back to an address that names the message, signed (``dispatch.services.verp``)."""
    return verp_address(message.uuid, message.sending_domain.domain)


def open_transport() -> Transport:
    from dispatch.services.esp import BackendTransport  # here, not at the top: esp.py imports this module

    backend = get_connection()
    return SmtpTransport(backend) if isinstance(backend, SmtpBackend) else BackendTransport(backend)


@dataclass(frozen=True)
class Prepared:
    """A message ready to hand over: rendering and signing are done, only the exchange is left."""

    message: Message
    payload: Any  # bytes for SMTP, an EmailMessage for other backends
    recipient: str = ""  # the envelope's form of message.recipient (envelope_recipient); empty: as stored
    smtputf8: bool = False  # the recipient needs SMTPUTF8 (a local part that is not ASCII)
    dot_free: bool = False  # no line of the payload starts with '.' (our own MIME: build_mime), so DATA needs no dot-stuffing


class Transport:
    """Prepare (render, serialize, sign: the slow part) then send (the exchange only).

    The worker prepares a whole batch before taking tokens, so the time from
    taking a token to handing the message over is as short and as even as it
    can be: the domain's rate then holds as measured at the receiving server.
    """

    def check(self, domain: SendingDomain) -> None:
        """Raise DomainFault when no message of the domain could be prepared; asked once per batch, before rendering."""

    def prepare(self, message: Message, domain: SendingDomain) -> Prepared | Outcome:
        raise NotImplementedError

    def open(self) -> None:
        """Connect before a batch's hand-overs; a transport without a connection has nothing to do."""

    def send(self, prepared: Prepared) -> Outcome:
        raise NotImplementedError

    def send_many(self, chunk: Sequence[Prepared], *, outcomes: dict[int, Outcome], deadline: float) -> None:
        """Hand a chunk over, writing each message's outcome into ``outcomes`` (by pk) as it is known.

        A message left without one was not handed over (it goes back to the
        queue); an ``Exception`` raised means the same for every message
        without an outcome. This one speaks one message at a time and starts
        no new one once ``deadline`` (``time.monotonic()``) has passed, so a
        slow provider cannot keep a chunk past its lease.
        """
        for n, prepared in enumerate(chunk):
            if n and time.monotonic() > deadline:
                return
            outcomes[prepared.message.pk] = self.send(prepared)

    def close(self) -> None:
        """Disconnect after the batch, whatever happened."""


class SmtpTransport(Transport):
    """SMTP to the relay of Django's EMAIL_* settings, a chunk's messages on many sessions at once.

    Sessions come from this process's pool for the relay (``smtp_pool.py``):
    kept open across batches, up to ``SENDPLANE_SMTP_CONNECTIONS`` in flight.
    """

    def __init__(self, backend: SmtpBackend) -> None:
        self.backend = backend

    def check(self, domain: SendingDomain) -> None:
        if domain.dkim_selector and domain.dkim_key_path:
            try:
                dkim_key_check(domain.dkim_key_path)
            except DkimKeyError as exc:
                raise DomainFault(str(exc)) from None

    def prepare(self, message: Message, domain: SendingDomain) -> Prepared | Outcome:
        try:
            recipient, smtputf8 = envelope_recipient(message.recipient)
            raw = build_raw(message, domain)
        except UnsendableAddress as exc:
            return Outcome(MessageStatus.FAILED, None, str(exc)[:1000])
        except RenderError as exc:
            return Outcome(MessageStatus.FAILED, None, f"render: {exc}")
        if domain.dkim_selector and domain.dkim_key_path:
            try:
                raw = dkim_sign(raw, domain=domain.domain, selector=domain.dkim_selector, key_path=domain.dkim_key_path)
            except DkimKeyError as exc:  # the key went away after check(): still the whole domain's fault
                raise DomainFault(str(exc)) from None
        return Prepared(message, raw, recipient, smtputf8, dot_free=True)  # build_mime's guarantee; DKIM's header is folded by tabs

    def send(self, prepared: Prepared) -> Outcome:
        outcomes: dict[int, Outcome] = {}
        self.send_many([prepared], outcomes=outcomes, deadline=math.inf)
        return outcomes[prepared.message.pk]

    def send_many(self, chunk: Sequence[Prepared], *, outcomes: dict[int, Outcome], deadline: float) -> None:
        """Every message of the chunk on its own session, up to the pool's limit at once.

        A session that cannot be opened leaves its message without an outcome
        (nothing was sent: it goes back to the queue); when no message got one,
        the relay is unreachable and that is the batch's error, raised.
        """
        if not chunk:
            return
        results = session_pool(self.backend, chunk[0].message.sending_domain).map(_exchange, chunk)  # a chunk is one domain's
        failure: BaseException | None = None
        for prepared, result in zip(chunk, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                outcomes[prepared.message.pk] = result
        if failure is not None and not any(p.message.pk in outcomes for p in chunk):
            raise failure


class _StaleSession(Exception):
    """A kept session the relay had closed: it failed at its first command, before anything of this message was sent.

    With PIPELINING the first reply read is MAIL's, after MAIL, RCPT and DATA
    were written: a relay that drops the line there (closed while idle, or a
    fault at RCPT) is told apart by nothing, and either way no byte of the
    message went out, so one retry on a fresh session is safe; a second drop
    defers the message as usual.
    """


@metrics.timed_send("smtp")
def _exchange(session: Session, prepared: Prepared) -> Outcome:
    """One message over one session; a kept session found closed is reopened once (nothing was sent on it)."""
    try:
        return _transaction(session, prepared, reused=session.deliveries > 0)
    except _StaleSession:
        session.backend.open()  # raises when the relay cannot be reached: the pool's caller hears of it
        session.healthy, session.deliveries = True, 0
        return _transaction(session, prepared, reused=False)


def _transaction(session: Session, prepared: Prepared, *, reused: bool) -> Outcome:
    """One message over one session, each way it can end named (a drop during DATA is ``unknown``)."""
    smtp = session.smtp
    phase = "first command"
    try:
        smtp.ehlo_or_helo_if_needed()
        if prepared.smtputf8 and not smtp.has_extn("smtputf8"):
            return Outcome(MessageStatus.FAILED, None, f"recipient needs SMTPUTF8, which {session.backend.host} does not offer")
        smtp.command_encoding = "ascii"  # smtplib leaves UTF-8 on after an SMTPUTF8 transaction: nothing 8-bit without it
        if smtp.has_extn("pipelining"):
            _pipelined_envelope(smtp, prepared)
            mail = smtp.getreply()
            phase = "envelope"
            rcpt, data = smtp.getreply(), smtp.getreply()
            refused = _pipelined_refusal(smtp, mail, rcpt, data)
            if refused is not None:
                return _refused(session, *refused)
            phase = "data"
            code, reply = _data_body(smtp, _wire(prepared))
            return SENT if code == 250 else _refused(session, code, reply, after_data=True)
        code, reply = smtp.mail(envelope_sender(prepared.message), ["SMTPUTF8"] if prepared.smtputf8 else [])
        phase = "envelope"
        if code != 250:
            return _refused(session, code, reply)
        code, reply = smtp.rcpt(prepared.recipient or prepared.message.recipient)
        if code not in (250, 251):
            return _refused(session, code, reply)
        phase = "data"
        code, reply = _data(smtp, _wire(prepared))
        return SENT if code == 250 else _refused(session, code, reply, after_data=True)
    except smtplib.SMTPDataError as exc:
        return _refused(session, exc.smtp_code, exc.smtp_error)
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError) as exc:
        _drop(session)
        if reused and phase == "first command" and isinstance(exc, (smtplib.SMTPServerDisconnected, OSError)):
            raise _StaleSession from exc
        if phase == "data":
            # The server may have said 250 before the line died: never send again automatically.
            return Outcome(MessageStatus.UNKNOWN, None, f"connection lost during DATA: {exc}")
        return Outcome(MessageStatus.DEFERRED, None, f"connection lost before DATA: {exc}")
    except Exception as exc:  # noqa: BLE001 - one message's surprise ends that message, never the batch
        return _unexpected(session, prepared, exc, phase)


def _pipelined_envelope(smtp: smtplib.SMTP, prepared: Prepared) -> None:
    """MAIL, RCPT and DATA in one write (RFC 2920): one round trip instead of three; the replies are read after."""
    options = " SMTPUTF8" if prepared.smtputf8 else ""
    if prepared.smtputf8:
        smtp.command_encoding = "utf-8"
    sender = smtplib.quoteaddr(envelope_sender(prepared.message))
    recipient = smtplib.quoteaddr(prepared.recipient or prepared.message.recipient)
    smtp.send(f"MAIL FROM:{sender}{options}\r\nRCPT TO:{recipient}\r\nDATA\r\n")


def _pipelined_refusal(
    smtp: smtplib.SMTP, mail: tuple[int, bytes], rcpt: tuple[int, bytes], data: tuple[int, bytes]
) -> tuple[int, bytes] | None:
    """The reply that refused the pipelined envelope, or None after a 354 that follows an accepted MAIL and RCPT.

    A server that answers 354 although it refused the sender or the recipient
    gets an empty message ended at once (RFC 2920 section 3.1), then the RSET of ``_refused``.
    """
    refused = mail if mail[0] != 250 else rcpt if rcpt[0] not in (250, 251) else None
    if refused is None:
        return None if data[0] == 354 else data
    if data[0] == 354:
        smtp.send(b".\r\n")
        smtp.getreply()
    return refused


def _wire(prepared: Prepared) -> bytes:
    """The message as DATA carries it: dot-stuffed (RFC 5321 section 4.5.2), ending in CRLF . CRLF.

    Our own MIME has no line starting with '.' (``Prepared.dot_free``), so the
    search is skipped for it: ~0.1 ms over a 150 KB message, a seventh of a
    message's CPU. Any other payload is searched and stuffed.
    """
    raw: bytes = prepared.payload
    if not prepared.dot_free and (raw.startswith(b".") or b"\n." in raw):
        raw = (b"." + raw if raw.startswith(b".") else raw).replace(b"\n.", b"\n..")
    return (raw if raw.endswith(b"\r\n") else raw + b"\r\n") + b".\r\n"


def _data_body(smtp: smtplib.SMTP, wire: bytes) -> tuple[int, bytes]:
    """The message after a 354, in one write (a separate small write of the terminator would wait out the
    peer's delayed ACK, ~40 ms a message)."""
    smtp.send(wire)
    return smtp.getreply()


def _unexpected(session: Session, prepared: Prepared, exc: Exception, phase: str) -> Outcome:
    """An error no SMTP reply explains: the session's state is unknown, so it is dropped (the server discards a half message)."""
    log_unexpected(prepared.message, "sending")
    _drop(session)
    if phase == "data":  # the message may have been written whole: as with a line lost during DATA, never re-sent
        return Outcome(MessageStatus.UNKNOWN, None, f"unexpected error during DATA: {one_line(exc)}"[:1000])
    return Outcome(MessageStatus.FAILED, None, one_line(exc))


def _refused(session: Session, code: int, reply: bytes | str, *, after_data: bool = False) -> Outcome:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    if not 200 <= code < 600:  # not an SMTP reply (smtplib's -1 for a line without a code): the session cannot be trusted
        _drop(session)
        if after_data:  # the message was written whole; the server may have taken it
            return Outcome(MessageStatus.UNKNOWN, None, f"unreadable reply after DATA: {text}"[:1000])
        return Outcome(MessageStatus.DEFERRED, None, f"unreadable reply before DATA: {text}"[:1000])
    try:
        session.smtp.rset()
    except (smtplib.SMTPException, OSError):
        _drop(session)
    status = MessageStatus.DEFERRED if 400 <= code < 500 else MessageStatus.FAILED
    return Outcome(status, code, text[:1000])


def _drop(session: Session) -> None:
    session.healthy = False
    session.close()


def _data(smtp: smtplib.SMTP, wire: bytes) -> tuple[int, bytes]:
    """DATA, then the message (``_wire``: already dot-stuffed) when the server says 354."""
    code, reply = smtp.docmd("data")
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    return _data_body(smtp, wire)
