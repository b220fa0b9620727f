"""An SMTP sink at a distance: every reply leaves MS after the command it answers arrived.

Postfix's ``smtp-sink`` answers at once; a real relay is 5-100 ms away. This
sink models the distance, not a slow server: each reply is due MS after its
command arrived, so commands a client pipelines (RFC 2920) are answered
together after one wait, in order, and a thousand sessions wait side by side.
It waits before the greeting, EHLO, MAIL, RCPT, DATA's 354, the end-of-data
250, RSET, NOOP and QUIT alike, and advertises PIPELINING, 8BITMIME and
SMTPUTF8.

What arrived is kept in memory (envelope recipient, Message-ID, arrival time
of the end of data, one tuple a message): no disk writes per message. A
control port answers one line per request:

``COUNT``    messages received and not yet collected
``COLLECT``  those messages as one JSON line ``[[recipient, message_id, unix_time], ...]``, then forgets them
``LAST``     unix time of the newest message not yet collected (0 if none)
``STATS``    a JSON line of counters (sessions, messages, bytes, the delay)
``DELAY MS`` change the delay for replies not yet scheduled

It is a module (``LatencySink``, ``SinkControl``) and a program::

    python ops/bench/latency_sink.py --latency-ms 30 --port 2525 --control-port 2526

One process, asyncio, on uvloop when it is installed. No Django.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

TERMINATOR = b"\r\n.\r\n"
HEAD_MAX = 16384  # the Message-ID is read from the first bytes of the content, as the bench read smtp-sink's dumps
LINE_MAX = 8192  # a command line longer than this is refused (RFC 5321 allows 512)
EXTENSIONS = ("PIPELINING", "8BITMIME", "SMTPUTF8")
_MSGID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.MULTILINE | re.IGNORECASE)
_ADDRESS = re.compile(rb"<([^>]*)>")


@dataclass
class Stats:
    sessions: int = 0
    open_sessions: int = 0
    peak_sessions: int = 0
    messages: int = 0
    bytes: int = 0
    aborted: int = 0  # sessions that ended in the middle of DATA: nothing recorded for them
    commands: int = 0


@dataclass
class LatencySink:
    """The SMTP server and its record; ``start`` binds it, ``start_control`` binds the control port."""

    latency_ms: float = 0.0
    hostname: str = "latency-sink"
    arrivals: list[tuple[str, str, float]] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    servers: list[asyncio.AbstractServer] = field(default_factory=list)

    @property
    def delay(self) -> float:
        return self.latency_ms / 1000.0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Session(self), host, port, backlog=2048, reuse_address=True)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def start_control(self, host: str = "127.0.0.1", port: int = 0) -> int:
        server = await asyncio.start_server(self._control, host, port, reuse_address=True)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()

    def record(self, recipients: list[str], head: bytes, size: int) -> None:
        """One message accepted: one arrival per envelope recipient, stamped when its end of data arrived."""
        end = head.find(b"\r\n\r\n")
        found = _MSGID.search(head, 0, end if end >= 0 else len(head))
        message_id = found.group(1).decode(errors="replace") if found else ""
        at = time.time()
        self.arrivals.extend((r, message_id, at) for r in recipients)
        self.stats.messages += 1
        self.stats.bytes += size

    def take(self) -> list[tuple[str, str, float]]:
        taken, self.arrivals = self.arrivals, []
        return taken

    def answer(self, request: str) -> str:
        """One control request, one line back."""
        verb, _, arg = request.strip().partition(" ")
        verb = verb.upper()
        if verb == "COUNT":
            return str(len(self.arrivals))
        if verb == "COLLECT":
            return json.dumps(self.take(), separators=(",", ":"))
        if verb == "LAST":
            return repr(self.arrivals[-1][2] if self.arrivals else 0.0)
        if verb == "STATS":
            return json.dumps(self.stats.__dict__ | {"latency_ms": self.latency_ms})
        if verb == "DELAY":
            self.latency_ms = float(arg)
            return "OK"
        return "ERR unknown request"

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(self.answer(line.decode(errors="replace")).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()


class _Session(asyncio.Protocol):
    """One SMTP session. Replies to the commands of one read go out together, MS after that read."""

    def __init__(self, sink: LatencySink) -> None:
        self.sink = sink
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.replies: list[bytes] = []  # answers to what the current read brought
        self.closing = False
        self.pending: deque[tuple[float, bytes, bool]] = deque()  # (due, replies, close after)
        self.timer: asyncio.TimerHandle | None = None
        self.mail = False
        self.recipients: list[str] = []
        self.in_data = False
        self.tail = b""  # the last bytes of the content so far: a terminator may be split across reads
        self.head = bytearray()
        self.size = 0

    # --- the connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
        stats = self.sink.stats
        stats.sessions += 1
        stats.open_sessions += 1
        stats.peak_sessions = max(stats.peak_sessions, stats.open_sessions)
        self.replies.append(f"220 {self.sink.hostname} ESMTP latency-sink\r\n".encode())
        self._commit(self.loop.time())

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.stats.open_sessions -= 1
        if self.in_data:
            self.sink.stats.aborted += 1
        if self.timer:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        arrived = self.loop.time()  # the commands of this read are all answered MS after it
        if not self.closing:
            self._feed(data)
        self._commit(arrived)

    # --- replies, each MS after its command arrived ------------------------------------------

    def _commit(self, arrived: float) -> None:
        if not self.replies:
            return
        out, self.replies = b"".join(self.replies), []
        if self.sink.delay <= 0 and not self.pending:
            self._write(out, self.closing)
            return
        self.pending.append((arrived + self.sink.delay, out, self.closing))
        if self.timer is None:
            self.timer = self.loop.call_at(self.pending[0][0], self._flush)

    def _flush(self) -> None:
        """Send every reply now due, in order, in one write; wait for the next one."""
        self.timer = None
        now = self.loop.time()
        due: list[bytes] = []
        close = False
        while self.pending and self.pending[0][0] <= now + 0.0005:
            _, out, close = self.pending.popleft()
            due.append(out)
            if close:
                break
        if due:
            self._write(b"".join(due), close)
        if self.pending and not close:
            self.timer = self.loop.call_at(self.pending[0][0], self._flush)

    def _write(self, out: bytes, close: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(out)
        if close:
            self.transport.close()

    # --- commands and content ------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        while data and not self.closing:
            if self.in_data:
                data = self._content(data)
                continue
            self.buf += data
            data = b""
            self._lines()
            if self.in_data and self.buf:  # content pipelined right behind DATA (clients wait for 354; tolerate it)
                data, self.buf = bytes(self.buf), bytearray()

    def _lines(self) -> None:
        while not self.in_data and not self.closing:
            end = self.buf.find(b"\n")
            if end < 0:
                if len(self.buf) > LINE_MAX:
                    self.buf.clear()
                    self.replies.append(b"500 5.5.2 Error: line too long\r\n")
                return
            line = bytes(self.buf[:end]).rstrip(b"\r")
            del self.buf[: end + 1]
            self.sink.stats.commands += 1
            self.replies.append(self._command(line))

    def _command(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        handler = _COMMANDS.get(verb)
        return handler(self, line) if handler else b"502 5.5.2 Error: command not recognized\r\n"

    def _ehlo(self, line: bytes) -> bytes:
        self._reset()
        lines = [self.sink.hostname, *EXTENSIONS]
        return b"".join(f"250{'-' if i < len(lines) - 1 else ' '}{text}\r\n".encode() for i, text in enumerate(lines))

    def _helo(self, line: bytes) -> bytes:
        self._reset()
        return f"250 {self.sink.hostname}\r\n".encode()

    def _mail_from(self, line: bytes) -> bytes:
        if not line[4:].lstrip().upper().startswith(b"FROM:"):
            return b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
        if self.mail:
            return b"503 5.5.1 Error: nested MAIL command\r\n"
        self.mail, self.recipients = True, []
        return b"250 2.1.0 Ok\r\n"

    def _rcpt_to(self, line: bytes) -> bytes:
        if not self.mail:
            return b"503 5.5.1 Error: need MAIL command\r\n"
        rest = line[4:].lstrip()
        if not rest.upper().startswith(b"TO:"):
            return b"501 5.5.4 Syntax: RCPT TO:<address>\r\n"
        found = _ADDRESS.search(rest)
        address = found.group(1) if found else rest[3:].strip().split(b" ")[0]
        self.recipients.append(address.decode("utf-8", errors="replace").lower())
        return b"250 2.1.5 Ok\r\n"

    def _data(self, line: bytes) -> bytes:
        if not self.recipients:
            return b"554 5.5.1 Error: no valid recipients\r\n"
        self.in_data, self.tail, self.size = True, b"\r\n", 0  # the CRLF after DATA: an empty message ends at once
        self.head = bytearray()
        return b"354 End data with <CR><LF>.<CR><LF>\r\n"

    def _rset(self, line: bytes) -> bytes:
        self._reset()
        return b"250 2.0.0 Ok\r\n"

    def _noop(self, line: bytes) -> bytes:
        return b"250 2.0.0 Ok\r\n"

    def _quit(self, line: bytes) -> bytes:
        self.closing = True
        return b"221 2.0.0 Bye\r\n"

    def _reset(self) -> None:
        self.mail, self.recipients = False, []

    def _content(self, chunk: bytes) -> bytes:
        """Take message content; at its end, record it and return what follows (pipelined commands)."""
        end = self._content_end(chunk)
        body = chunk if end < 0 else chunk[:end]
        if len(self.head) < HEAD_MAX:
            self.head += body[: HEAD_MAX - len(self.head)]
        self.size += len(body)
        if end < 0:
            self.tail = (self.tail + chunk[-4:])[-4:]
            return b""
        self.sink.record(self.recipients, bytes(self.head), self.size)
        self.in_data = False
        self._reset()
        self.replies.append(b"250 2.0.0 Ok: queued\r\n")
        return chunk[end:]

    def _content_end(self, chunk: bytes) -> int:
        """Index just past the terminator in ``chunk``, or -1; the terminator may begin in the previous read."""
        joined = self.tail + chunk[: len(TERMINATOR) - 1]
        at = joined.find(TERMINATOR)
        if at >= 0:
            return at + len(TERMINATOR) - len(self.tail)
        at = chunk.find(TERMINATOR)
        return at + len(TERMINATOR) if at >= 0 else -1


_COMMANDS: dict[bytes, Callable[[_Session, bytes], bytes]] = {
    b"EHLO": _Session._ehlo, b"HELO": _Session._helo, b"MAIL": _Session._mail_from, b"RCPT": _Session._rcpt_to,
    b"DATA": _Session._data, b"RSET": _Session._rset, b"NOOP": _Session._noop, b"QUIT": _Session._quit,
}


class SinkControl:
    """The control port from another process (the bench driver, the fault suite): blocking, one request at a time."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.address, self.timeout = (host, port), timeout
        self.sock: socket.socket | None = None

    def ask(self, request: str) -> str:
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=self.timeout)
            self.reader = self.sock.makefile("rb")
        self.sock.sendall(request.encode() + b"\n")
        return self.reader.readline().decode().rstrip("\n")

    def count(self) -> int:
        return int(self.ask("COUNT"))

    def collect(self) -> list[tuple[str, str, float]]:
        return [(str(r), str(m), float(t)) for r, m, t in json.loads(self.ask("COLLECT"))]

    def last(self) -> float:
        return float(self.ask("LAST"))

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(self.ask("STATS")))

    def set_delay(self, latency_ms: float) -> None:
        self.ask(f"DELAY {latency_ms:g}")

    def close(self) -> None:
        if self.sock is not None:
            self.reader.close()
            self.sock.close()
            self.sock = None


def event_loop_run(main: Any) -> Any:
    """Run a coroutine on uvloop when it is installed (cheaper per read and write), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def _serve(args: argparse.Namespace) -> None:
    sink = LatencySink(latency_ms=args.latency_ms)
    port = await sink.start(args.host, args.port)
    control = await sink.start_control(args.host, args.control_port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"latency-sink ready: smtp {args.host}:{port}, control {args.host}:{control}, {args.latency_ms:g} ms a reply, "
          f"{loop_name} loop", flush=True)
    await stop.wait()
    await sink.close()
    print(f"latency-sink stopped: {json.dumps(sink.stats.__dict__)}", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=0.0, help="wait before each reply, from its command's arrival")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--control-port", type=int, default=0, help="0: any free port (printed)")
    event_loop_run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
