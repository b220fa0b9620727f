"""An SMTP fault sink: a real server on loopback that records what it accepts and misbehaves by rule.

Every (Message-ID, recipient) the sink accepts is recorded with the time the
message's data arrived (before the 250 is written, as a real MTA commits
before answering). Rules, switchable at run time from any thread, make it
answer 4xx or 5xx at RCPT or after DATA, answer slowly, or drop the
connection (at RCPT, or after the data arrived and before the reply: the
client cannot tell whether it was taken). ``until`` bounds a rule in time, so
a 4xx storm for N seconds is one call; ``every`` applies it to one matching
message in N; ``match`` narrows it to recipients. ``offer_smtputf8(False)``
withdraws SMTPUTF8 (RFC 6531) from the EHLO answer, as many relays still
lack it, and refuses it at MAIL from sessions that heard the offer before.

``tests/smtp_sink.py`` stays the small sink of the unit tests; this one is
the fault suite's (``ops/faults/runner.py``).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
ACTIONS = ("tempfail", "reject", "slow", "drop")
PHASES = ("rcpt", "data")


@dataclass
class Rule:
    """One misbehaviour. ``code``/``text`` answer tempfail and reject; ``delay`` is for slow."""

    action: str
    phase: str = "rcpt"
    match: Callable[[str], bool] | None = None  # by recipient address
    every: int = 1  # one matching message in ``every``
    until: float | None = None  # time.time() after which the rule is off
    code: int = 0
    text: str = ""
    delay: float = 0.0
    record_before_drop: bool = False  # drop after DATA: the sink took the message, the client never hears so
    hits: int = 0
    _seen: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS or self.phase not in PHASES:
            raise ValueError(f"unknown rule {self.action!r} at {self.phase!r}")
        if self.action == "slow" and self.phase != "data":
            raise ValueError("slow replies are given after DATA")
        if not self.code:
            self.code = {"tempfail": 451, "reject": 550}.get(self.action, 0)

    def fires(self, recipients: list[str], now: float) -> bool:
        """Counts the message against ``every``; True when the rule applies to it."""
        if self.until is not None and now >= self.until:
            return False
        if self.match is not None and not any(self.match(r) for r in recipients):
            return False
        self._seen += 1
        if (self._seen - 1) % self.every:
            return False
        self.hits += 1
        return True

    def reply(self) -> str:
        default = "4.7.1 Try again later" if self.code < 500 else "5.1.1 No such user"
        return f"{self.code} {self.text or default}"


@dataclass(frozen=True)
class Record:
    message_id: str
    recipient: str
    at: float


@dataclass
class FaultHandler:
    accepted: list[Record] = field(default_factory=list)
    dropped: list[Record] = field(default_factory=list)  # connections dropped after the data arrived
    refused: Counter[int] = field(default_factory=Counter)
    rules: list[Rule] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    smtputf8: bool = True  # offered in the EHLO answer (aiosmtpd's Controller enables it)

    def _firing(self, phase: str, recipients: list[str]) -> Rule | None:
        now = time.time()
        with self.lock:
            for rule in self.rules:
                if rule.phase == phase and rule.fires(recipients, now):
                    return rule
        return None

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]) -> list[str]:  # noqa: N802
        session.host_name = hostname  # what aiosmtpd does itself when no hook is set
        return responses if self.smtputf8 else [r for r in responses if r != "250-SMTPUTF8"]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:  # noqa: N802
        if "SMTPUTF8" in options and not self.smtputf8:
            return "555 5.5.4 SMTPUTF8 is not offered here"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:  # noqa: N802
        rule = self._firing("rcpt", [address])
        if rule is not None and rule.action == "drop":
            await _drop(server)
        if rule is not None:
            self.refused[rule.code] += 1
            return rule.reply()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or b""
        found = _MESSAGE_ID.search(raw.split(b"\r\n\r\n", 1)[0])
        message_id = found.group(1).decode("ascii", "replace") if found else ""
        rule = self._firing("data", list(envelope.rcpt_tos))
        if rule is not None and rule.action == "slow":
            await asyncio.sleep(rule.delay)
        elif rule is not None and rule.action == "drop":
            self._record(message_id, envelope.rcpt_tos, self.dropped)
            if rule.record_before_drop:
                self._record(message_id, envelope.rcpt_tos, self.accepted)
            await _drop(server)
        elif rule is not None:
            self.refused[rule.code] += 1
            return rule.reply()
        self._record(message_id, envelope.rcpt_tos, self.accepted)
        return "250 OK queued"

    def _record(self, message_id: str, recipients: list[str], into: list[Record]) -> None:
        now = time.time()
        with self.lock:
            into.extend(Record(message_id, r, now) for r in recipients)


async def _drop(server: SMTP) -> None:
    """Close the connection without a reply; aiosmtpd then cancels this handler."""
    if server.transport is not None:
        server.transport.abort()
    await asyncio.sleep(3600)


class FaultSink:
    """Start, add and clear rules at run time, read what was accepted. Thread-safe."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.handler = FaultHandler()
        # One thread serves every connection: a handful of workers' batches fit easily.
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port, decode_data=False, ready_timeout=10)

    def __enter__(self) -> FaultSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()

    def add(self, **rule: Any) -> Rule:
        made = Rule(**rule)
        with self.handler.lock:
            self.handler.rules.append(made)
        return made

    def storm(self, *, seconds: float, code: int = 451, phase: str = "rcpt") -> Rule:
        """Every message refused with ``code`` for ``seconds``, then recovery."""
        return self.add(action="tempfail" if code < 500 else "reject", phase=phase, code=code, until=time.time() + seconds)

    def clear(self) -> None:
        with self.handler.lock:
            self.handler.rules.clear()

    def offer_smtputf8(self, offered: bool) -> None:
        self.handler.smtputf8 = offered

    def accepted(self) -> list[Record]:
        with self.handler.lock:
            return list(self.handler.accepted)

    def latest(self) -> Record | None:
        with self.handler.lock:
            return self.handler.accepted[-1] if self.handler.accepted else None

    def dropped(self) -> list[Record]:
        with self.handler.lock:
            return list(self.handler.dropped)

    def duplicates(self) -> dict[tuple[str, str], int]:
        seen = Counter((r.message_id, r.recipient.lower()) for r in self.accepted())
        return {pair: n for pair, n in seen.items() if n > 1}
