"""Suppression writes, timed, from a process of their own (what an API or webhook process is to the workers).

Usage: python ops/faults/timed_writes.py (the environment configures Django; SIGTERM stops it).

It writes ``suppression_add`` of an unrelated address every 20 ms and, on the
same connection right after, a ``SELECT 1``: the peer that shows what the
busy machine alone costs a round trip to PostgreSQL. One line a write on
stdout, ``write_ms peer_ms``. Not in the runner: the fault sink's event loop
shares the runner's GIL, and under 16 workers' traffic every wake-up of a
thread there waits for it (up to the 5 ms switch interval a round trip),
which would be measured as the write's time.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

_stop = False


def _on_term(signum: int, frame: FrameType | None) -> None:
    global _stop
    _stop = True


def main() -> int:
    import django

    django.setup()
    from django.db import connection

    from deliverability.services import suppression_add

    signal.signal(signal.SIGTERM, _on_term)
    print("ready", flush=True)
    n = 0
    while not _stop:
        n += 1
        began = time.perf_counter()
        suppression_add(address=f"unrelated-{time.time_ns()}-{n}@elsewhere.example.net", reason="manual", source="fault suite")
        wrote = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        print(f"{(wrote - began) * 1000:.3f} {(time.perf_counter() - wrote) * 1000:.3f}", flush=True)
        time.sleep(0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main())
