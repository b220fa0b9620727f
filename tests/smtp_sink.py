"""A real SMTP server on loopback that records every (Message-ID, recipient) it accepts.

``replies_by_domain`` answers every RCPT to a domain with one reply (a
provider refusing or rate limiting the sender). Rules by recipient local part: ``tempfail*`` gets 451 at RCPT, ``reject*``
gets 550 at RCPT, ``datafail*`` gets 552 after DATA, ``garbled*`` gets a
reply line without a code at RCPT (a broken middlebox). Everything else is
accepted and recorded with the time it arrived. ``delay_seconds`` makes the
server slow: it waits that long after each message's data before answering
(and recording), as a loaded MTA does. ``smtputf8=False`` makes a server that
does not offer SMTPUTF8 (aiosmtpd's Controller offers it by default).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message as EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    message_id: str
    recipient: str
    mail_from: str
    at: float
    raw: bytes
    smtputf8: bool = False  # MAIL FROM carried the SMTPUTF8 parameter
    peer: Any = None  # the client's (address, port): one per SMTP session

    def parsed(self) -> EmailMessage:
        return message_from_bytes(self.raw)


@dataclass
class SinkHandler:
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay_seconds: float = 0.0
    sessions_open: int = 0  # SMTP connections open now, and the most ever open at once (_CountingSmtp)
    most_sessions_at_once: int = 0
    pipelining: bool = False  # advertise PIPELINING (RFC 2920); aiosmtpd reads pipelined commands one by one either way
    # Recipient domain -> the reply every RCPT to it gets (a provider refusing or rate limiting us); change it at will.
    replies_by_domain: dict[str, str] = field(default_factory=dict)

    async def handle_EHLO(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves it to a handler that takes over EHLO
        return responses[:-1] + ["250-PIPELINING", responses[-1]] if self.pipelining else responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:  # noqa: N802
        local = address.partition("@")[0].lower()
        by_domain = self.replies_by_domain.get(address.rpartition("@")[2].lower())
        if by_domain:
            return by_domain
        if local.startswith("tempfail"):
            return "451 4.7.1 Try again later"
        if local.startswith("reject"):
            return "550 5.1.1 No such user"
        if local.startswith("garbled"):
            return "hello, this is not an SMTP reply"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        if any(r.partition("@")[0].lower().startswith("datafail") for r in envelope.rcpt_tos):
            return "552 5.3.4 Message too big"
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)
        raw = envelope.original_content or b""
        message_id = message_from_bytes(raw).get("Message-ID", "")
        now = time.time()
        with self.lock:
            for recipient in envelope.rcpt_tos:
                self.received.append(
                    Received(message_id, recipient, envelope.mail_from or "", now, raw, bool(envelope.smtp_utf8), session.peer)
                )
        return "250 OK queued"


class _CountingSmtp(SMTP):
    """aiosmtpd's SMTP protocol, counting the connections open at once on its handler."""

    def connection_made(self, transport: Any) -> None:
        handler = self.event_handler
        with handler.lock:
            handler.sessions_open += 1
            handler.most_sessions_at_once = max(handler.most_sessions_at_once, handler.sessions_open)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        with self.event_handler.lock:
            self.event_handler.sessions_open -= 1
        super().connection_lost(exc)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _CountingSmtp(self.handler, **self.SMTP_kwargs)


class SmtpSink:
    def __init__(self, delay_seconds: float = 0.0, *, smtputf8: bool = True, pipelining: bool = False) -> None:
        self.handler = SinkHandler(delay_seconds=delay_seconds, pipelining=pipelining)
        self.port, self.smtputf8 = _free_port(), smtputf8
        self.controller = self._controller()

    def _controller(self) -> Controller:
        return _Controller(self.handler, hostname="127.0.0.1", port=self.port, decode_data=False, enable_SMTPUTF8=self.smtputf8)

    def restart(self) -> None:
        """Stop and start again on the same port, as a relay restarting does: every open session is closed."""
        self.controller.stop()
        self.controller = self._controller()
        self.controller.start()

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    @property
    def most_sessions_at_once(self) -> int:
        return self.handler.most_sessions_at_once

    def pairs(self) -> list[tuple[str, str]]:
        return [(r.message_id, r.recipient) for r in self.received]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
