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

``latency(lo_ms, hi_ms)`` puts the receiver at a distance: every reply (the
greeting, EHLO, MAIL, RCPT, DATA's 354, the end-of-data answer, RSET, QUIT)
is written a delay drawn uniformly in [lo, hi] after the server produced it,
without holding up the commands behind it. So a pipelined MAIL, RCPT and
DATA (RFC 2920: the sink offers PIPELINING, as Postfix does) are answered
after about one wait, as from a real relay 30-100 ms away, and replies never
overtake each other. ``slow`` rules add a server's own wait on top.

``tests/smtp_sink.py`` stays the small sink of the unit tests; this one is
the fault suite's (``ops/faults/runner.py``).
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import Counter, deque
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
    pipelining: bool = True  # aiosmtpd reads pipelined commands in order but does not say so; real relays do
    latency_ms: tuple[float, float] = (0.0, 0.0)  # each reply's wait, drawn uniformly in [lo, hi]

    def reply_delay(self) -> float:
        lo, hi = self.latency_ms  # one tuple, swapped whole from other threads
        return random.uniform(lo, hi) / 1000 if hi > 0 else 0.0

    def _firing(self, phase: str, recipients: list[str]) -> Rule | None:
        now = time.time()
        with self.lock:
            for rule in self.rules:
                if rule.phase == phase and rule.fires(recipients, now):
                    return rule
        return None

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]) -> list[str]:  # noqa: N802
        session.host_name = hostname  # what aiosmtpd does itself when no hook is set
        answer = responses if self.smtputf8 else [r for r in responses if r != "250-SMTPUTF8"]
        return answer[:-1] + ["250-PIPELINING"] + answer[-1:] if self.pipelining else answer

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


def latency_text(latency: tuple[float, float]) -> str:
    """``30-100`` for a range of milliseconds, ``100`` for one value (the RESULT line's ``latency_ms``)."""
    lo, hi = latency
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


async def _drop(server: SMTP) -> None:
    """Close the connection without a reply; aiosmtpd then cancels this handler."""
    if server.transport is not None:
        server.transport.abort()
    await asyncio.sleep(3600)


_CLOSING = (b"221", b"421")  # replies after which aiosmtpd closes the connection at once


class _DistantSMTP(SMTP):
    """aiosmtpd's server with each reply written after the handler's ``reply_delay``, in order, never blocking the reader.

    aiosmtpd answers by ``push`` (one call a reply line); here a reply's first
    line draws its delay, the continuation lines of a multi-line reply (EHLO)
    go with it, and no reply is written before an earlier one. A reply that
    aiosmtpd follows with closing the connection (QUIT) is awaited, so the
    close does not discard it.
    """

    def __init__(self, handler: FaultHandler, **options: Any) -> None:
        super().__init__(handler, **options)
        self._delay = handler.reply_delay
        self._pending: deque[tuple[float, bytes]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._continued = False  # the last line pushed was a "250-" line: the next belongs to the same reply

    async def push(self, status: Any) -> None:
        line = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") if isinstance(status, str) else status
        if not self._continued:
            delay = self._delay()
            if delay <= 0 and not self._pending:
                await super().push(line)
                return
            self._due = max(self.loop.time() + delay, self._due)
        self._continued = line[3:4] == b"-"
        self._pending.append((self._due, line + b"\r\n"))
        if self._timer is None:
            self._timer = self.loop.call_at(self._pending[0][0], self._flush)
        if line[:3] in _CLOSING:
            await asyncio.sleep(max(0.0, self._due - self.loop.time()))
            self._flush()

    def _flush(self) -> None:
        """Write every reply now due, in one write; wait for the next."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self.loop.time()
        due = []
        while self._pending and self._pending[0][0] <= now + 0.0005:
            due.append(self._pending.popleft()[1])
        if due and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(due))
        if self._pending:
            self._timer = self.loop.call_at(self._pending[0][0], self._flush)

    def connection_lost(self, error: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(error)


class _DistantController(Controller):
    def factory(self) -> SMTP:
        return _DistantSMTP(self.handler, **self.SMTP_kwargs)


class FaultSink:
    """Start, add and clear rules at run time, read what was accepted. Thread-safe."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.handler = FaultHandler()
        # One thread serves every connection: a handful of workers' batches fit easily.
        self.controller = _DistantController(self.handler, hostname="127.0.0.1", port=port, decode_data=False, ready_timeout=10)

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

    def latency(self, lo_ms: float, hi_ms: float) -> None:
        """Every reply from now on waits a delay drawn uniformly in [lo_ms, hi_ms]; (0, 0) answers at once."""
        if not 0 <= lo_ms <= hi_ms:
            raise ValueError(f"latency {lo_ms}-{hi_ms} ms: need 0 <= lo <= hi")
        self.handler.latency_ms = (lo_ms, hi_ms)

    @property
    def latency_ms(self) -> tuple[float, float]:
        return self.handler.latency_ms

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
