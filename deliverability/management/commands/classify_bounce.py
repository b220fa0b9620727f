"""``classify_bounce FILE...``: one JSON line per recipient found in each message.

Fields: file, recipient, kind, reason, status, feedback_type (plus smtp_reply,
message_id, verp). A file that cannot be read exits 1 with one line on stderr,
after the files before it have been printed; bad *content* is never an error,
it classifies as ``unknown``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from deliverability.bounces import classify_message

MAX_FILE_BYTES = 50 * 1024 * 1024  # refuse to slurp something that cannot be a bounce into memory


class Command(BaseCommand):
    help = "Classify raw bounce / complaint / auto-reply messages: one JSON line per recipient."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", metavar="FILE")

    def handle(self, *args: Any, **options: Any) -> None:
        for path in options["files"]:
            raw = self._read(path)
            for verdict in classify_message(raw) or classify_message(b"\n"):
                line = {"file": path, **verdict.as_dict()}
                self.stdout.write(json.dumps(line, ensure_ascii=False))

    def _read(self, path: str) -> bytes:
        try:
            file = Path(path)
            if file.stat().st_size > MAX_FILE_BYTES:
                self._fail(f"{path}: too large to be a bounce ({file.stat().st_size} bytes)")
            return file.read_bytes()
        except OSError as exc:
            self._fail(f"{path}: cannot read: {exc.strerror or exc}")
        raise AssertionError("unreachable")

    def _fail(self, line: str) -> None:
        self.stderr.write(" ".join(line.split()))
        sys.exit(1)
