"""A real HTTP server on loopback speaking Postmark's send API (``POST /email``), as anymail's postmark backend calls it.

Point anymail at it with ``ANYMAIL = {"POSTMARK_SERVER_TOKEN": TOKEN, "POSTMARK_API_URL": sink.url}``.
Each request is answered after ``delay_seconds`` (an ESP's API is 50-200 ms
away), and the server counts how many requests it holds at once: that is what
shows a sender overlapping its calls.

Rules by the local part of ``To``, in Postmark's own formats: ``invalid*``
gets 422 with ErrorCode 300 (an address Postmark cannot parse), ``inactive*``
422 with ErrorCode 406 (a recipient suppressed after a hard bounce),
``error*`` a 500, ``throttled*`` a 429, ``dropped*`` the connection closed
with no answer. A wrong server token gets Postmark's 401. Everything else is
accepted (200, ErrorCode 0) and recorded.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "postmark-server-token-for-tests"


@dataclass(frozen=True)
class Call:
    recipient: str
    body: dict[str, Any]  # the JSON anymail posted
    accepted: bool
    peer: tuple[str, int]  # the client's address and port: one per kept connection


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API: a kept Session reuses its connection
    disable_nagle_algorithm = True  # headers and body are two writes: without it each answer waits out the client's delayed ACK
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        recipient = parseaddr(body.get("To", ""))[1]
        with self.server.sink.counting():
            self.server.sink.wait_to_answer()
            if self.headers.get("X-Postmark-Server-Token") != TOKEN:
                self._reply(401, {"ErrorCode": 10, "Message": "Request does not contain a valid Server token."})
                return
            self._answer(recipient, body)

    def _answer(self, recipient: str, body: dict[str, Any]) -> None:
        local = recipient.partition("@")[0].lower()
        self.server.sink.record(Call(recipient, body, not local.startswith(_REFUSED), self.client_address[:2]))
        if local.startswith("dropped"):
            self.close_connection = True  # no status line at all: the client sees the connection end
            return
        if local.startswith("invalid"):
            self._reply(422, {"ErrorCode": 300, "Message": f"Invalid 'To' address: '{recipient}'."})
        elif local.startswith("inactive"):
            self._reply(422, {"ErrorCode": 406, "Message": _inactive(recipient)})
        elif local.startswith("error"):
            self._reply(500, {"ErrorCode": 500, "Message": "Internal Server Error"})
        elif local.startswith("throttled"):
            self._reply(429, {"ErrorCode": 429, "Message": "Rate limit exceeded."})
        else:
            sent = {"To": recipient, "SubmittedAt": "2026-03-02T10:00:00.0000000-05:00", "MessageID": str(uuid.uuid4())}
            self._reply(200, sent | {"ErrorCode": 0, "Message": "OK"})

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass  # quiet: the test reads calls(), not the access log


_REFUSED = ("dropped", "invalid", "inactive", "error", "throttled")


def _inactive(recipient: str) -> str:
    return (
        "You tried to send to recipient(s) that have been marked as inactive.\n"
        f"Found inactive addresses: {recipient}.\n"
        "Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression. "
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 would make many clients connecting at once wait out SYN retries

    def __init__(self, sink: EspSink) -> None:
        self.sink = sink
        super().__init__(("127.0.0.1", 0), _Handler)


class EspSink:
    """The server, its calls and its concurrency; ``hold_until`` (time.monotonic()) keeps every answer until then.

    ``on_request`` runs as each request arrives, before its answer (a test
    uses it to stop the sender while its calls are in flight).
    """

    def __init__(self, delay_seconds: float = 0.0, *, hold_until: float = 0.0, on_request: Callable[[], None] | None = None) -> None:
        self.delay_seconds, self.hold_until, self.on_request = delay_seconds, hold_until, on_request
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="esp-sink", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def __enter__(self) -> EspSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def counting(self) -> _InFlight:
        return _InFlight(self)

    def wait_to_answer(self) -> None:
        if self.on_request is not None:
            self.on_request()
        time.sleep(self.delay_seconds)  # the ESP's latency: this is the server being slow, not the test waiting
        while time.monotonic() < self.hold_until:
            time.sleep(0.01)

    def record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)


class _InFlight:
    """Counts a request as held from its arrival to its answer."""

    def __init__(self, sink: EspSink) -> None:
        self.sink = sink

    def __enter__(self) -> None:
        with self.sink._lock:
            self.sink.in_flight += 1
            self.sink.most_in_flight = max(self.sink.most_in_flight, self.sink.in_flight)

    def __exit__(self, *exc: Any) -> None:
        with self.sink._lock:
            self.sink.in_flight -= 1
