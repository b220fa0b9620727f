"""Run one scenario, check it, print what it found; and the suite's last line."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

from ops.faults.checks import Ledger, Verdict, conservation
from ops.faults.sink import latency_text

FIELDS = ("accepted", "lost", "duplicates", "sent_while_paused", "sent_to_suppressed", "unknown")


def report_scenario(name: str, scenario: Callable[[Any, Ledger], None], run: Any) -> Verdict:
    from django.db import connections

    latency = latency_text(run.sink.latency_ms)
    print(f"--- {name} (receiver {latency} ms): {(scenario.__doc__ or '').strip().splitlines()[0]}", flush=True)
    ledger = Ledger(name)
    run.sink.clear()
    run.sink.add(action="reject", phase="rcpt", match=lambda address: address.startswith("hard"), text="5.1.1 No such user")
    began = time.monotonic()
    try:
        scenario(run, ledger)
    except Exception as exc:  # noqa: BLE001 - a scenario that breaks is a failure to report, not the end of the suite
        traceback.print_exc()
        ledger.fail(f"the scenario raised {type(exc).__name__}: {exc}")
    run.sink.clear()
    connections.close_all()  # the database may have restarted under this process's connection
    verdict = conservation(ledger, run.sink.accepted(), run.sink.dropped())
    for note in ledger.notes:
        print(f"  {note}", flush=True)
    for line in verdict.details:
        print(f"  check: {line}", flush=True)
    for failure in verdict.failures:
        print(f"  FAILED: {failure}", flush=True)
    counts = " ".join(f"{f}={verdict.counts[f]}" for f in FIELDS)
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(verdict.statuses.items()))
    print(f"  {'ok' if verdict.ok else 'FAIL'} {name} at {latency} ms in {time.monotonic() - began:.1f} s: {counts} ({statuses})",
          flush=True)  # fmt: skip
    return verdict


def result_line(verdicts: list[Verdict], latencies: str) -> tuple[str, bool]:
    """The suite's last line; ``latency_ms`` names the receiver of each pass (``30-100``, or ``0,30-100``)."""
    totals = {f: sum(v.counts[f] for v in verdicts) for f in FIELDS}
    line = f"RESULT scenarios={len(verdicts)} " + " ".join(f"{f}={totals[f]}" for f in FIELDS) + f" latency_ms={latencies}"
    return line, all(v.ok for v in verdicts)
