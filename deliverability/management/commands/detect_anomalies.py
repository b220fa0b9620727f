"""``detect_anomalies --counts FILE.csv``: replay per-minute counts through the detector the beat task runs.

Input columns ``minute,domain,sent,bounced,complained`` (``reputation``
optional), minute an integer from 0; rows in any order, missing minutes are
zero. Prints one JSON line per domain the detector would pause: ``domain``,
``minute`` (the first minute it pauses, using only data up to that minute),
``signal``, ``evidence``. The replay starts cold. Bad input: one line on
stderr naming the row, exit 1, nothing printed. On a terminal, stderr shows a
progress bar over the minutes; stdout stays JSON lines only.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandParser

from controlplane.errors import ServiceError
from controlplane.progress import ProgressBar
from deliverability import detector

REQUIRED = ("minute", "domain", "sent", "bounced", "complained")
COUNTS = ("sent", "bounced", "complained", "reputation")
MAX_MINUTES = 60 * 24 * 31  # a month of minutes: beyond that the input is a mistake, not a replay


class BadCounts(ServiceError):
    """A counts file the replay refuses: one line naming the line and the problem."""


class Command(BaseCommand):
    help = "Replay per-minute counts through the anomaly detector; one JSON line per domain it would pause."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--counts", required=True, metavar="FILE.csv")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            domains, arrays = read_counts(Path(options["counts"]))
        except (OSError, BadCounts, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.stderr.write(" ".join(f"{options['counts']}: {reason}".split()))
            sys.exit(1)
        bar = ProgressBar(self.stderr, arrays[0].shape[1], label="minutes")
        sent, bounced, complained, reputation = arrays
        paused = detector.replay(sent, bounced, complained, reputation, on_minute=bar.update)
        bar.clear()
        for index, minute, signal, evidence in paused:
            line = {"domain": domains[index], "minute": minute, "signal": signal, "evidence": _plain(evidence)}
            self.stdout.write(json.dumps(line))


def read_counts(path: Path) -> tuple[list[str], list[np.ndarray]]:
    """Domain names in first-seen order, and (sent, bounced, complained, reputation) as (domains, minutes) arrays."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in REQUIRED if name not in (reader.fieldnames or [])]
        if missing:
            raise BadCounts(f"missing column(s) {', '.join(missing)}; expected {','.join(REQUIRED)}")
        rows = [_row(number, raw) for number, raw in enumerate(reader, start=2)]
    if not rows:
        raise BadCounts("no rows")
    domains = list(dict.fromkeys(domain for domain, *_ in rows))
    index = {name: i for i, name in enumerate(domains)}
    minutes = max(minute for _, minute, _ in rows) + 1
    arrays = [np.zeros((len(domains), minutes), dtype=np.int64) for _ in COUNTS]
    for domain, minute, values in rows:
        for array, value in zip(arrays, values, strict=True):
            array[index[domain], minute] += value
    return domains, arrays


def _row(number: int, raw: dict[str, str | None]) -> tuple[str, int, tuple[int, ...]]:
    domain = (raw.get("domain") or "").strip()
    if not domain:
        raise BadCounts(f"line {number}: empty domain")
    minute = _count(number, "minute", raw.get("minute"))
    if minute >= MAX_MINUTES:
        raise BadCounts(f"line {number}: minute {minute} is beyond {MAX_MINUTES - 1}")
    values = tuple(_count(number, name, raw.get(name) or "0") for name in COUNTS)
    return domain, minute, values


def _count(number: int, name: str, text: str | None) -> int:
    try:
        value = int((text or "").strip())
    except ValueError:
        raise BadCounts(f"line {number}: {name} must be a whole number, got {text!r}") from None
    if value < 0:
        raise BadCounts(f"line {number}: {name} must not be negative, got {value}")
    return value


def _plain(evidence: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars to JSON numbers."""
    return {key: value.item() if isinstance(value, np.generic) else value for key, value in evidence.items()}
