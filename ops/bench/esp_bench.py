"""ESP transport throughput: BackendTransport.send_many against a Postmark-speaking sink that answers after a delay.

Run (from the repository root, any DATABASE_URL/SECRET_KEY the settings accept; no database is touched):

    .venv/bin/python ops/bench/esp_bench.py [--delay-ms 100] [--messages 400] [--concurrency 1,8,32,64,128]

Each run sends the messages in chunks of SENDPLANE_DISPATCH_RECHECK_EVERY
(as the worker does) through anymail's real Postmark backend to
tests/esp_sink.py on loopback, and prints msg/s, the most calls the sink held
at once, and the ratio to concurrency 1 measured in the same run. Messages are
built in memory (a ~20 KB HTML body, our headers and metadata): what is
measured is the overlap of the network and the per-call CPU of anymail and
requests, not rendering. Figures are for people to judge; nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import uuid
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


def prepared(n: int) -> list[Prepared]:
    out = []
    for i in range(n):
        message = Message(pk=i + 1, uuid=uuid.uuid4(), recipient=f"user{i}@example.org", sending_domain=DOMAIN)
        email = EmailMultiAlternatives("Hi", "Two picks for you", DOMAIN.default_sender, [message.recipient])
        email.extra_headers = {"Message-ID": message.message_id(), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
        email.attach_alternative(HTML, "text/html")
        email.metadata = {ESP_METADATA_KEY: message.uuid.hex}  # type: ignore[attr-defined]
        out.append(Prepared(message, email))
    return out


def serve(delay_seconds: float, urls: multiprocessing.Queue[str]) -> None:
    """The sink in a process of its own: in ours it would take the GIL from the sender it measures."""
    with EspSink(delay_seconds) as sink:
        urls.put(sink.url)
        while True:
            time.sleep(3600)


def run(url: str, concurrency: int, n: int) -> float:
    settings.SENDPLANE_ESP = {"CONCURRENCY": concurrency}
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": TOKEN, "POSTMARK_API_URL": url}
    transport = BackendTransport(get_connection())
    chunk_size = settings.SENDPLANE_DISPATCH["RECHECK_EVERY"]
    transport.send_many(prepared(1), outcomes={}, deadline=float("inf"))  # warm: threads and the first connection
    messages = prepared(n)
    outcomes: dict[int, Outcome] = {}
    started = time.perf_counter()
    for start in range(0, n, chunk_size):
        transport.send_many(messages[start : start + chunk_size], outcomes=outcomes, deadline=float("inf"))
    elapsed = time.perf_counter() - started
    esp_pools_close(wait_calls=True)
    if len(outcomes) != n or set(outcomes.values()) != {SENT}:
        sys.exit(f"concurrency {concurrency}: {len(outcomes)} outcomes of {n}, {set(outcomes.values())}")
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-ms", type=float, default=100.0)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--concurrency", default="1,8,32,64,128")
    args = parser.parse_args()
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    levels = [int(c) for c in args.concurrency.split(",")]
    base = None
    chunk = settings.SENDPLANE_DISPATCH["RECHECK_EVERY"]
    print(f"ESP send_many, Postmark API at {args.delay_ms:.0f} ms, chunks of {chunk}, cpus {os.cpu_count()}")
    urls: multiprocessing.Queue[str] = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(args.delay_ms / 1000, urls), daemon=True)
    server.start()
    url = urls.get(timeout=30)
    try:
        for concurrency in levels:
            n = args.messages if concurrency > 1 else max(20, args.messages // 20)  # one at a time is slow: fewer, same rate
            rate = run(url, concurrency, n)
            base = base or rate
            print(f"concurrency {concurrency:4d}: {n:5d} msgs  {rate:8.1f} msg/s  x{rate / base:5.1f}")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
