"""The anchor: prebuilt messages over hundreds of concurrent SMTP sessions, as fast as this machine can send them.

The dispatch bench runs it in the same run as Sendplane, against the same
sink, with the same rendered newsletter bytes (built before timing by
Sendplane's own rendering and written to a file with ``messages_write``):
nothing to claim, render or record, so its rate is the upper bound a sending
design could reach on this machine against that receiver.

The default client is a small raw asyncio one: per session the greeting and
EHLO once, then per message MAIL, RCPT and DATA in one write when the server
offers PIPELINING (RFC 2920), one wait for their three replies, the content
(dot-stuffed once, at load) and one wait for its 250: two round trips a
message. ``--client aiosmtplib`` sends through aiosmtplib instead, which
does not pipeline (four round trips a message): what pipelining is worth.

    python ops/bench/anchor.py --port 2525 --messages FILE --count 5000 --connections 200

Envelope recipients are ``{prefix}{i}@{domain i mod len}`` for i in [0,
count), the bench's naming, so the sink's record tells lost and duplicated
messages apart. The last stdout line (and ``--out``) is a JSON summary. No Django.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_sink import event_loop_run  # noqa: E402

_LENGTH = struct.Struct(">I")


def messages_write(path: Path, raws: list[bytes]) -> None:
    """Prebuilt messages, each as a 4-byte length and the exact bytes (CRLF line ends, not dot-stuffed)."""
    with path.open("wb") as f:
        for raw in raws:
            f.write(_LENGTH.pack(len(raw)))
            f.write(raw)


def messages_read(path: Path) -> list[bytes]:
    data = path.read_bytes()
    raws, at = [], 0
    while at < len(data):
        (size,) = _LENGTH.unpack_from(data, at)
        raws.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return raws


def content_of(raw: bytes) -> bytes:
    """What follows DATA's 354: the message dot-stuffed (RFC 5321 4.5.2), ending in CRLF.CRLF."""
    stuffed = raw.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


@dataclass
class Work:
    """The shared queue of message numbers, cut off at a deadline."""

    count: int
    deadline: float
    taken: int = 0

    def take(self) -> int | None:
        if self.taken >= self.count or time.time() > self.deadline:
            return None
        self.taken += 1
        return self.taken - 1


@dataclass
class Tally:
    sent: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    pipelining: int = 0  # sessions that pipelined
    failed_recipients: list[str] = field(default_factory=list)  # refused or cut mid-exchange: the sink may not have them

    def fail(self, reason: str, recipient: str = "") -> None:
        self.failed += 1
        self.errors[reason[:80]] += 1
        if recipient:
            self.failed_recipients.append(recipient)


@dataclass
class Options:
    host: str
    port: int
    mail_from: str
    prefix: str
    domains: list[str]

    def recipient(self, i: int) -> str:
        return f"{self.prefix}{i}@{self.domains[i % len(self.domains)]}"


class Refused(Exception):
    """The server answered a command with something other than what the exchange needs."""


async def _reply(reader: asyncio.StreamReader) -> list[bytes]:
    """One reply, all its lines."""
    lines = []
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError("the server closed the connection")
        lines.append(line)
        if line[3:4] != b"-":
            return lines


async def _expect(reader: asyncio.StreamReader, code: int) -> list[bytes]:
    lines = await _reply(reader)
    if not lines[-1].startswith(str(code).encode()):
        raise Refused(lines[-1].decode(errors="replace").strip())
    return lines


class RawSession:
    """One SMTP session over asyncio streams, pipelining MAIL, RCPT and DATA when offered."""

    def __init__(self, opts: Options, contents: list[bytes], eight_bit: list[bool]) -> None:
        self.opts, self.contents, self.eight_bit = opts, contents, eight_bit
        self.pipelining = self.bit8 = False

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.opts.host, self.opts.port, limit=1 << 16)
        await _expect(self.reader, 220)
        self.writer.write(b"EHLO anchor.bench.test\r\n")
        features = {line[4:].split()[0].upper() for line in (await _expect(self.reader, 250))[1:] if line[4:].split()}
        self.pipelining, self.bit8 = b"PIPELINING" in features, b"8BITMIME" in features

    async def send(self, i: int) -> None:
        k = i % len(self.contents)
        body = b" BODY=8BITMIME" if self.bit8 and self.eight_bit[k] else b""
        mail = b"MAIL FROM:<" + self.opts.mail_from.encode() + b">" + body + b"\r\n"
        rcpt = b"RCPT TO:<" + self.opts.recipient(i).encode() + b">\r\n"
        if self.pipelining:
            self.writer.write(mail + rcpt + b"DATA\r\n")
            replies = [(await _reply(self.reader))[-1] for _ in range(3)]
        else:
            replies = []
            for command in (mail, rcpt, b"DATA\r\n"):
                self.writer.write(command)
                replies.append((await _reply(self.reader))[-1])
                if replies[-1][:1] != b"2":
                    break
        if not (len(replies) == 3 and replies[0][:1] == b"2" and replies[1][:1] == b"2" and replies[2][:3] == b"354"):
            self.writer.write(b"RSET\r\n")
            await _reply(self.reader)
            raise Refused(b" / ".join(r.strip() for r in replies).decode(errors="replace"))
        self.writer.write(self.contents[k])
        await _expect(self.reader, 250)

    async def close(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            await _reply(self.reader)
        except (OSError, ConnectionError):
            pass
        self.writer.close()


@dataclass
class Prebuilt:
    """The messages as loaded, and what the raw client sends of each: prepared once for every session."""

    raws: list[bytes]
    contents: list[bytes] = field(default_factory=list)
    eight_bit: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.contents = [content_of(r) for r in self.raws]
        self.eight_bit = [max(r, default=0) > 127 for r in self.raws]


async def raw_worker(opts: Options, prebuilt: Prebuilt, work: Work, tally: Tally) -> None:
    session = RawSession(opts, prebuilt.contents, prebuilt.eight_bit)
    try:
        await session.open()
    except (OSError, ConnectionError, Refused) as exc:
        tally.fail(f"connect: {exc}")
        return
    tally.pipelining += session.pipelining
    while (i := work.take()) is not None:
        try:
            await session.send(i)
            tally.sent += 1
        except Refused as exc:
            tally.fail(str(exc), opts.recipient(i))
        except (OSError, ConnectionError) as exc:
            tally.fail(f"connection: {exc}", opts.recipient(i))
            return
    await session.close()


async def aiosmtplib_worker(opts: Options, prebuilt: Prebuilt, work: Work, tally: Tally) -> None:
    import aiosmtplib

    raws = prebuilt.raws
    smtp = aiosmtplib.SMTP(hostname=opts.host, port=opts.port, timeout=120)
    try:
        await smtp.connect()
    except aiosmtplib.SMTPException as exc:
        tally.fail(f"connect: {exc}")
        return
    while (i := work.take()) is not None:
        try:
            await smtp.sendmail(opts.mail_from, [opts.recipient(i)], raws[i % len(raws)])
            tally.sent += 1
        except aiosmtplib.SMTPServerDisconnected as exc:
            tally.fail(f"connection: {exc}", opts.recipient(i))
            return
        except aiosmtplib.SMTPException as exc:
            tally.fail(str(exc), opts.recipient(i))
    try:
        await smtp.quit()
    except aiosmtplib.SMTPException:
        pass


WORKERS: dict[str, Callable[[Options, Prebuilt, Work, Tally], Awaitable[None]]] = {
    "raw": raw_worker, "aiosmtplib": aiosmtplib_worker,
}


async def anchor_run(opts: Options, raws: list[bytes], *, count: int, connections: int, client: str = "raw",
                     timeout: float = 600.0) -> dict[str, object]:
    """Send ``count`` messages over ``connections`` sessions; the summary (times are unix seconds)."""
    tally, worker, prebuilt = Tally(), WORKERS[client], Prebuilt(raws)  # stuffing is preparation: not timed
    started = time.time()
    work = Work(count, started + timeout)
    await asyncio.gather(*(worker(opts, prebuilt, work, tally) for _ in range(min(connections, count))))
    finished = time.time()
    return {
        "client": client, "connections": connections, "count": count, "sent": tally.sent, "failed": tally.failed,
        "not_started": count - work.taken, "errors": dict(tally.errors.most_common(5)), "pipelining_sessions": tally.pipelining,
        "failed_recipients": tally.failed_recipients,
        "started": started, "finished": finished, "per_s": tally.sent / max(finished - started, 1e-9),
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=Path, required=True, help="prebuilt messages (messages_write's format)")
    parser.add_argument("--count", type=int, required=True, help="messages to send (the prebuilt ones in turn)")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--client", choices=sorted(WORKERS), default="raw")
    parser.add_argument("--mail-from", default="bounces@anchor.bench.test")
    parser.add_argument("--prefix", default="an", help="envelope recipients are PREFIX<i>@<domain>")
    parser.add_argument("--rcpt-domains", default="example.org", help="comma-separated, used in turn")
    parser.add_argument("--timeout", type=float, default=600.0, help="no new message starts after this many seconds")
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = parser.parse_args(argv)
    raws = messages_read(args.messages)
    if not raws:
        parser.error(f"{args.messages} holds no message")
    opts = Options(args.host, args.port, args.mail_from, args.prefix, args.rcpt_domains.split(","))
    summary = event_loop_run(anchor_run(opts, raws, count=args.count, connections=args.connections, client=args.client,
                                        timeout=args.timeout))
    line = json.dumps(summary)
    if args.out:
        args.out.write_text(line)
    print(line, flush=True)
    return 0 if summary["sent"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
