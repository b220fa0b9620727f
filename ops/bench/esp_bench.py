"""ESP transport throughput: BackendTransport.send_many against a Postmark-speaking sink that answers after a delay.

Run: ops/bench/esp [--delay-ms 100] [--messages 400] [--concurrency 1,8,32,64,128] [--smoke]
(no database, no services: the entry needs only the virtualenv).

Each run sends the messages in chunks of SENDPLANE_DISPATCH_RECHECK_EVERY
(as the worker does) through anymail's real Postmark backend to
tests/esp_sink.py on loopback (in a process of its own), and prints msg/s,
the most calls the sink held at once, and the ratio to concurrency 1 measured
in the same run: concurrency 1 is the peer, the old transport's one call at a
time. Messages are built in memory (a ~20 KB HTML body, our headers and
metadata): what is measured is the overlap of the network and the per-call
CPU of anymail and requests, not rendering. The last line is RESULT ... for
scripts. Figures are for people to judge; nothing is asserted on them. Exit
status 1 when the path broke: a message not sent (at the transport or at the
sink), nothing measured, or calls never overlapped at a concurrency above 1.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.mail import EmailMultiAlternatives, get_connection  # noqa: E402

from deliverability.models import SendingDomain  # noqa: E402
from dispatch.models import Message  # noqa: E402
from dispatch.services.delivery import ESP_METADATA_KEY, SENT, Outcome, Prepared  # noqa: E402
from dispatch.services.esp import BackendTransport, esp_pools_close  # noqa: E402
from tests.esp_sink import TOKEN, EspSink  # noqa: E402

DOMAIN = SendingDomain(domain="mail.example.com", default_sender="news@mail.example.com")
HTML = "<html><body>" + "<p>Two picks for you, chosen this week.</p>" * 500 + "</body></html>"

# ``--smoke``: the same path (the sink process, anymail's backend, the transport's pool) at a size that takes
# seconds: the peer and one concurrency above it (CI runs it so the bench cannot rot).
SMOKE = {"messages": 100, "delay_ms": 50.0, "concurrency": "1,32"}


def prepared(n: int, first_pk: int) -> list[Prepared]:
    out = []
    for i in range(n):
        message = Message(pk=first_pk + i, uuid=uuid.uuid4(), recipient=f"user{first_pk + i}@example.org", sending_domain=DOMAIN)
        email = EmailMultiAlternatives("Hi", "Two picks for you", DOMAIN.default_sender, [message.recipient])
        email.extra_headers = {"Message-ID": message.message_id(), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
        email.attach_alternative(HTML, "text/html")
        email.metadata = {ESP_METADATA_KEY: message.uuid.hex}  # type: ignore[attr-defined]
        out.append(Prepared(message, email))
    return out


def serve(delay_seconds: float, control: Connection) -> None:
    """The sink in a process of its own (in ours it would take the GIL from the sender it measures), driven over a pipe.

    ``"reset"`` starts a measurement: the most calls held at once from now on;
    ``"stats"`` answers (most calls held at once, calls accepted so far).
    """
    with EspSink(delay_seconds) as sink:
        control.send(sink.url)
        while True:
            try:
                command = control.recv()
            except EOFError:  # the driver is gone
                return
            if command == "reset":
                sink.most_in_flight = sink.in_flight
            control.send((sink.most_in_flight, sum(1 for call in sink.calls() if call.accepted)))


@dataclass
class Level:
    concurrency: int
    messages: int
    rate: float  # messages / second, timed
    sent: int  # outcomes SENT, timed messages
    failed: int  # timed or warm-up messages without a SENT outcome
    received: int  # calls the sink accepted during the timed part
    max_in_flight: int  # the most calls the sink held at once during the timed part


def ask(control: Connection, command: str) -> tuple[int, int]:
    control.send(command)
    most, accepted = control.recv()
    return most, accepted


def run(url: str, control: Connection, concurrency: int, n: int, first_pk: int) -> Level:
    settings.SENDPLANE_ESP = {"CONCURRENCY": concurrency}
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": TOKEN, "POSTMARK_API_URL": url}
    transport = BackendTransport(get_connection())
    chunk_size = settings.SENDPLANE_DISPATCH["RECHECK_EVERY"]
    warm: dict[int, Outcome] = {}
    transport.send_many(prepared(1, first_pk), outcomes=warm, deadline=float("inf"))  # warm: threads and the first connection
    messages = prepared(n, first_pk + 1)
    outcomes: dict[int, Outcome] = {}
    _, accepted_before = ask(control, "reset")
    started = time.perf_counter()
    for start in range(0, n, chunk_size):
        transport.send_many(messages[start : start + chunk_size], outcomes=outcomes, deadline=float("inf"))
    elapsed = time.perf_counter() - started
    esp_pools_close(wait_calls=True)
    most, accepted_after = ask(control, "stats")
    sent = sum(1 for outcome in outcomes.values() if outcome == SENT)
    failed = (n - sent) + (0 if list(warm.values()) == [SENT] else 1)
    if failed:
        others = sorted({str(o) for o in outcomes.values() if o != SENT} | {str(o) for o in warm.values() if o != SENT})
        print(f"concurrency {concurrency}: {sent} of {n} sent ({len(outcomes)} outcomes), warm-up {list(warm.values())}; {others[:3]}")
    return Level(concurrency, n, n / elapsed if elapsed > 0 and sent else 0.0, sent, failed, accepted_after - accepted_before, most)


def args_parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help=f"seconds: {SMOKE} unless given; exits 1 on a broken path")
    parser.add_argument("--delay-ms", type=float, default=100.0, help="the sink's wait before each answer")
    parser.add_argument("--messages", type=int, default=400, help="messages per level above 1 (concurrency 1 sends a 20th, at least 20)")
    parser.add_argument("--concurrency", default="1,8,32,64,128", help="comma-separated levels; the first must be 1 (the peer)")
    if parser.parse_known_args()[0].smoke:
        parser.set_defaults(**SMOKE)  # explicit options still win
    args = parser.parse_args()
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.levels or args.levels[0] != 1 or min(args.levels) < 1:
        parser.error("--concurrency must start with 1, the one-call-at-a-time peer the others are compared with")
    return args


def broken(levels: list[Level]) -> list[str]:
    """What makes the exit status 1: nothing measured, a message not sent or not received, calls that never overlapped."""
    problems = []
    if not levels or any(level.rate <= 0 for level in levels):
        problems.append("nothing measured at some concurrency")
    for level in levels:
        if level.failed or level.sent != level.messages:
            problems.append(f"concurrency {level.concurrency}: {level.sent} of {level.messages} sent, {level.failed} failed")
        if level.received != level.messages:
            problems.append(f"concurrency {level.concurrency}: the sink accepted {level.received} of {level.messages}")
        if level.concurrency > 1 and level.messages > 1 and level.max_in_flight < 2:
            problems.append(f"concurrency {level.concurrency}: the sink never held two calls at once")
    return problems


def main() -> int:
    args = args_parse()
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    chunk = settings.SENDPLANE_DISPATCH["RECHECK_EVERY"]
    print(f"ESP send_many, Postmark API at {args.delay_ms:.0f} ms, chunks of {chunk}, cpus {os.cpu_count()}")
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(args.delay_ms / 1000, theirs), daemon=True)
    server.start()
    levels: list[Level] = []
    try:
        if not ours.poll(30):
            print("FAILED: the sink did not start", file=sys.stderr)
            return 2
        url = ours.recv()
        first_pk = 1
        for concurrency in args.levels:
            n = args.messages if concurrency > 1 else max(20, args.messages // 20)  # one at a time is slow: fewer, same rate
            level = run(url, ours, concurrency, n, first_pk)
            first_pk += n + 1
            levels.append(level)
            ratio = level.rate / levels[0].rate if levels[0].rate else 0.0
            print(f"concurrency {concurrency:4d}: {n:5d} msgs  {level.rate:8.1f} msg/s  x{ratio:5.1f}  "
                  f"most in flight at the sink {level.max_in_flight:4d}  sent {level.sent}  failed {level.failed}")
    finally:
        ours.close()
        server.terminate()
        server.join(10)
    base, top = levels[0], levels[-1]
    rates = " ".join(f"concurrency_{level.concurrency}_per_s={level.rate:.1f}" for level in levels)
    print(f"RESULT messages={sum(level.messages for level in levels)} delay_ms={args.delay_ms:g} {rates} "
          f"speedup={top.rate / base.rate if base.rate else 0.0:.1f} top_concurrency={top.concurrency} max_in_flight={top.max_in_flight} "
          f"sent={sum(level.sent for level in levels)} failed={sum(level.failed for level in levels)} "
          f"received={sum(level.received for level in levels)}")
    problems = broken(levels)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
