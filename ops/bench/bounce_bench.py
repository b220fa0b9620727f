"""Bounce classifier throughput over the labelled corpus, against flufl.bounce in the same run.

Run: ops/bench/bounces [--passes N] [--corpus DIR] [--smoke]. Every raw message of the
corpus (../shared/corpora/bounces, 589 messages) is read into memory first, then
each side scans all of them N times in this one process:

- Sendplane: ``deliverability.bounces.classify_message(raw)`` (parse, find
  recipients, reason, kind, status).
- flufl.bounce (installed into .venv here when missing): ``email`` parse of the
  same bytes, then ``flufl.bounce.all_failures(msg)``. It only extracts the
  failed addresses (permanent and temporary), no reason or status, so the
  comparison is messages scanned per second, and how many recipients each finds.

Per-message times are pooled over all passes (median, p95); messages/s is the
median pass. Figures are wall-clock on this machine; compare ratios. The last
line is RESULT ... for scripts.

``--smoke`` (CI): one pass over every 5th message, both sides; exits 1 when
Sendplane raised on a message or found no recipient, or the peer could not run.
"""

from __future__ import annotations

import argparse
import email
import importlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.policy import compat32
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpora" / "bounces"


@dataclass
class Run:
    name: str
    per_message: list[float]  # seconds, pooled over passes
    pass_seconds: list[float]
    recipients: int  # found in one pass
    messages_with_recipients: int
    errors: int  # messages the scanner raised on, over all passes

    def rate(self, messages: int) -> float:
        return messages / statistics.median(self.pass_seconds)


def sendplane_scan(raw: bytes) -> list[str]:
    from deliverability.bounces import classify_message

    return [c.recipient for c in classify_message(raw) if c.recipient and c.kind != "unknown"]


def flufl_scan(raw: bytes) -> list[str]:
    from flufl.bounce import all_failures

    permanent, temporary = all_failures(email.message_from_bytes(raw, policy=compat32))
    return [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in (*permanent, *temporary)]


def measure(name: str, scan: Callable[[bytes], list[str]], messages: list[bytes], passes: int) -> Run:
    for raw in messages[:20]:
        scan(raw)  # warm-up: imports, regex compilation
    per_message: list[float] = []
    pass_seconds: list[float] = []
    found: list[list[str] | None] = []
    errors = 0
    for _ in range(passes):
        started = time.perf_counter()
        found = [_timed(scan, raw, per_message) for raw in messages]
        pass_seconds.append(time.perf_counter() - started)
        errors += sum(1 for f in found if f is None)
    return Run(name, per_message, pass_seconds, sum(len(f or []) for f in found), sum(1 for f in found if f), errors)


def _timed(scan: Callable[[bytes], list[str]], raw: bytes, sink: list[float]) -> list[str] | None:
    """The recipients found, or None when the scanner raised (a peer crashing on one message finds nothing there)."""
    started = time.perf_counter()
    try:
        result: list[str] | None = scan(raw)
    except Exception:  # noqa: BLE001 - counted, and reported by the caller
        result = None
    sink.append(time.perf_counter() - started)
    return result


def ensure_flufl() -> bool:
    try:
        importlib.import_module("flufl.bounce")
        return True
    except ImportError:
        print("installing flufl.bounce into .venv (bench-time peer, not a project dependency)")
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "flufl.bounce"], check=False)
        importlib.invalidate_caches()
        return done.returncode == 0


def p95(values: Iterable[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def report(runs: list[Run], messages: int, labelled: int, passes: int) -> None:
    print(f"\n{messages} messages ({labelled} labelled recipients in the whole corpus), {passes} passes, one process\n")
    print(f"{'scanner':14} {'messages/s':>11} {'median µs':>10} {'p95 µs':>9} {'recipients':>11} {'msgs w/ rcpt':>13} {'raised':>7}")
    for run in runs:
        print(
            f"{run.name:14} {run.rate(messages):11.0f} {statistics.median(run.per_message) * 1e6:10.0f} "
            f"{p95(run.per_message) * 1e6:9.0f} {run.recipients:11d} {run.messages_with_recipients:13d} {run.errors:7d}"
        )
    if len(runs) == 2:
        print(f"\nSendplane / flufl.bounce messages/s: {runs[0].rate(messages) / runs[1].rate(messages):.2f}x")
    print("(flufl.bounce only extracts addresses; Sendplane also decides kind, reason and status per recipient)")


def args_parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds: one pass over every 5th message; exits 1 on a broken path")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--every", type=int, default=1, help="take every k-th message of the corpus")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    if parser.parse_known_args()[0].smoke:
        parser.set_defaults(passes=1, every=5)  # explicit options still win
    return parser.parse_args()


def broken(runs: list[Run], smoke: bool) -> list[str]:
    """What makes the exit status 1: Sendplane raising or finding nothing; in a smoke, also a peer that did not run."""
    ours = runs[0]
    problems = [f"Sendplane raised on {ours.errors} messages"] if ours.errors else []
    if not ours.recipients:
        problems.append("Sendplane found no recipient: nothing was measured")
    if smoke and (len(runs) < 2 or not runs[1].recipients):
        problems.append("the flufl.bounce peer did not run or found nothing: the comparison is broken")
    return problems


def main() -> int:
    args = args_parse()
    files = sorted(args.corpus.glob("*.eml"))[:: max(1, args.every)]
    if not files:
        print(f"no .eml files in {args.corpus}", file=sys.stderr)
        return 2
    messages = [f.read_bytes() for f in files]
    labels = args.corpus / "labels.csv"
    labelled = max(0, len(labels.read_text().splitlines()) - 1) if labels.exists() else 0
    runs = [measure("sendplane", sendplane_scan, messages, args.passes)]
    if ensure_flufl():
        runs.append(measure("flufl.bounce", flufl_scan, messages, args.passes))
    else:
        print("flufl.bounce could not be installed: Sendplane figures only")
    report(runs, len(messages), labelled, args.passes)
    print("\ncommand: ops/bench/bounces " + " ".join(sys.argv[1:]))
    rates = " ".join(f"{r.name}_msgs_per_s={r.rate(len(messages)):.0f} {r.name}_recipients={r.recipients}" for r in runs)
    print(f"RESULT messages={len(messages)} passes={args.passes} {rates}")
    problems = broken(runs, args.smoke)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
