"""``spam_score FILE``: JSON with score, threshold, is_spam and rules (name, score, description).

spamd unreachable: exit 1 with one line on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from deliverability.spam import SpamdUnavailable, spam_score


class Command(BaseCommand):
    help = "Score an RFC 5322 message file with spamd and print the result as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            raw = Path(options["file"]).read_bytes()
            report = spam_score(raw)
        except OSError as exc:
            self._fail(f"{options['file']}: cannot read: {exc.strerror}")
        except SpamdUnavailable as exc:
            self._fail(f"not scored: {exc}")
        rules = [{"name": r.name, "score": r.points, "description": r.description} for r in report.rules]
        result = {"score": report.score, "threshold": report.threshold, "is_spam": report.is_spam, "rules": rules}
        self.stdout.write(json.dumps({**result, "spamd_version": report.spamd_version, "duration_ms": report.duration_ms}))

    def _fail(self, line: str) -> None:
        self.stderr.write(line)
        sys.exit(1)
