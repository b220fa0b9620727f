"""Load on the trigger API: N concurrent clients on loopback for a fixed time.

Each client posts triggers of 10 recipients with distinct Idempotency-Keys;
one request in ten repeats one of its earlier keys with the same body and
must get the first answer back (202, ``Idempotent-Replayed: true``, the same
trigger id). Latency is from sending the request to reading the answer.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ops.faults import fixtures
from ops.faults.api_client import Client
from ops.faults.checks import Ledger

RECIPIENTS = 10
REPEAT_SHARE = 0.1


@dataclass
class Figures:
    clients: int
    seconds: float
    server: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    repeats: int = 0
    accepted: int = 0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    def summary(self) -> str:
        n = len(self.latencies)
        return (
            f"load: {self.clients} clients x {self.seconds:.0f} s on {self.server}: {n} requests ({n / self.seconds:.0f}/s, "
            f"{self.repeats} repeats), {self.accepted} recipients accepted, p50 {self.quantile(0.5):.1f} ms, "
            f"p99 {self.quantile(0.99):.1f} ms, errors {self.errors} ({100 * self.errors / max(n, 1):.2f}%)"
        )


def generate(run: Any, ledger: Ledger, campaign_ids: list[int], *, clients: int, seconds: float) -> Figures:
    figures = Figures(clients, seconds, run.api.kind)
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    threads = [threading.Thread(target=_client, args=(run, ledger, campaign_ids, n, stop, figures, lock)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return figures


def _client(run: Any, ledger: Ledger, campaign_ids: list[int], n: int, stop: float, figures: Figures, lock: threading.Lock) -> None:
    api = Client(run.api.port, run.tokens["marketer"])
    rng = random.Random(n)
    sent: list[tuple[str, int, dict[str, Any], Any]] = []  # key, campaign, body, first trigger id
    while time.monotonic() < stop:
        repeat = bool(sent) and rng.random() < REPEAT_SHARE
        if repeat:
            key, campaign_id, body, first = rng.choice(sent)
        else:
            key, campaign_id = f"load-{n}-{len(sent)}", rng.choice(campaign_ids)
            body, first = {"recipients": fixtures.recipients(f"ld{n}x{len(sent)}", len(sent) * RECIPIENTS, RECIPIENTS)}, None
        answer = api.post(f"/api/v1/campaigns/{campaign_id}/triggers", body, {"Idempotency-Key": key})
        ok = answer.status == 202 and isinstance(answer.body, dict)
        if ok and repeat:
            ok = answer.headers.get("idempotent-replayed") == "true" and answer.body.get("trigger") == first
        elif ok:
            sent.append((key, campaign_id, body, answer.body.get("trigger")))
        with lock:
            figures.latencies.append(answer.seconds)
            figures.repeats += repeat
            figures.errors += not ok
            figures.accepted += answer.body.get("accepted", 0) if ok and not repeat else 0
        if not ok:
            ledger.fail(f"load: {key} got {answer.status} {str(answer.body)[:160]}")
    api.close()
