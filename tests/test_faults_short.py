"""The fault suite's short form (ops/faults/run --short): every scenario, fewer messages, against a receiver 30-100 ms away.

It starts its own PostgreSQL, Redis, SMTP sink, API server and workers
(ops/faults/README.md), so it needs nothing from this test process but the
checkout; it runs in the default test command.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from ops.faults.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 900  # the short form takes ~3 minutes on two cores; this is for a machine under heavy load
RESULT = re.compile(
    r"^RESULT scenarios=(?P<scenarios>\d+) accepted=(?P<accepted>\d+) lost=(?P<lost>\d+) duplicates=(?P<duplicates>\d+) "
    r"sent_while_paused=(?P<paused>\d+) sent_to_suppressed=(?P<suppressed>\d+) unknown=(?P<unknown>\d+) latency_ms=(?P<latency>[\d.,-]+)$"
)


@pytest.mark.slow
def test_the_short_fault_suite_loses_nothing_duplicates_nothing_and_honours_pauses_and_suppressions() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_", "SENDPLANE_", "EMAIL_"))}
    proc = subprocess.Popen(
        [str(ROOT / "ops/faults/run"), "--short"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the runner kills its own process groups on the way out
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"the short fault suite did not finish in {TIMEOUT} s:\n{output[-6000:]}")
    lines = output.strip().splitlines()
    found = RESULT.match(lines[-1]) if lines else None
    assert found, f"no RESULT line last:\n{output[-6000:]}"
    counts = {k: int(v) for k, v in found.groupdict().items() if k != "latency"}
    assert proc.returncode == 0, output[-6000:]
    assert counts["scenarios"] == len(SCENARIOS) and counts["accepted"] > 2000, lines[-1]
    assert found["latency"] == "30-100", lines[-1]  # every scenario against a receiver 30-100 ms away
    assert (counts["lost"], counts["duplicates"], counts["paused"], counts["suppressed"]) == (0, 0, 0, 0), output[-6000:]
