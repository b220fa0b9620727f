"""A small keep-alive JSON client for the API on loopback (one per thread)."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]
    seconds: float  # request sent to answer read


class Client:
    def __init__(self, port: int, token: str, timeout: float = 60.0) -> None:
        self.port, self.token, self.timeout = port, token, timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Answer:
        data = json.dumps(body).encode()
        sent = {"Authorization": f"Token {self.token}", "Content-Type": "application/json", **(headers or {})}
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            began = time.perf_counter()
            try:
                self.conn.request("POST", path, body=data, headers=sent)
                response = self.conn.getresponse()
                raw = response.read()
            except (http.client.HTTPException, ConnectionError) as exc:
                self.close()  # a kept-alive connection the server closed: once more on a new one
                if attempt == 2:
                    return Answer(0, {"error": f"{type(exc).__name__}: {exc}"}, {}, time.perf_counter() - began)
                continue
            parsed = json.loads(raw) if raw and response.getheader("Content-Type", "").startswith("application/json") else raw
            return Answer(response.status, parsed, {k.lower(): v for k, v in response.getheaders()}, time.perf_counter() - began)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
