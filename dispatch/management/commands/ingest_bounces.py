"""``ingest_bounces FILE... | --maildir DIR``: record raw bounces, complaints and auto-replies.

Each message goes through the same service as the API upload (classified,
tied to its outbox message, suppressed by policy, counted). With ``--maildir``
every message not yet seen (in ``new/``, or in ``cur/`` without the S flag) is
ingested and then marked seen, so a cron job can run it every minute; a
message read twice records nothing new anyway. A file that cannot be read or
is refused is one line on stderr; the others still go in; the exit status is 1.
On a terminal, stderr also shows a progress bar; the summary always prints.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.progress import ProgressBar
from dispatch.services.feedback import FeedbackError
from dispatch.services.inbound import mail_ingest


class Command(BaseCommand):
    help = "Ingest raw bounce/complaint messages from files or a Maildir; prints one line per message and a summary."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="*", metavar="FILE")
        parser.add_argument("--maildir", metavar="DIR", help="read the unseen messages of this Maildir and mark them seen")

    def handle(self, *args: Any, **options: Any) -> None:
        if bool(options["files"]) == bool(options["maildir"]):
            raise CommandError("give either FILE... or --maildir DIR")
        sources = list(_maildir_unseen(Path(options["maildir"])) if options["maildir"] else _files(options["files"]))
        totals: Counter[str] = Counter()
        self._bar = ProgressBar(self.stderr, len(sources), label="ingest")
        for done, (label, path) in enumerate(sources, start=1):
            if self._ingest(label, path, totals) and options["maildir"]:
                _mark_seen(path)
            self._bar.update(done, f"{totals['events']} new, {totals['failed']} refused")
        self._bar.clear()
        self.stdout.write(
            f"{totals['messages']} message(s): {totals['events']} new event(s), {totals['duplicates']} already recorded, "
            f"{totals['suppressed']} recipient(s) suppressed, {totals['failed']} refused."
        )
        if totals["failed"]:
            raise SystemExit(1)

    def _ingest(self, label: str, path: Path, totals: Counter[str]) -> bool:
        try:
            results = mail_ingest(raw=path.read_bytes(), source="mailbox")
        except (OSError, FeedbackError) as exc:
            totals["failed"] += 1
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._bar.clear()
            self.stderr.write(" ".join(f"{label}: {reason}".split()))
            return False
        totals["messages"] += 1
        totals["events"] += sum(r.created for r in results)
        totals["duplicates"] += sum(not r.created for r in results)
        totals["suppressed"] += sum(r.suppressed for r in results)
        kinds = ", ".join(f"{r.event.recipient or '-'} {r.event.kind}/{r.event.reason}" for r in results)
        self._bar.clear()
        self.stdout.write(f"{label}: {kinds}")
        return True


def _files(names: list[str]) -> Iterator[tuple[str, Path]]:
    for name in names:
        yield name, Path(name)


def _maildir_unseen(root: Path) -> Iterator[tuple[str, Path]]:
    if not (root / "new").is_dir() or not (root / "cur").is_dir():
        raise CommandError(f"{root}: not a Maildir (no new/ and cur/)")
    for sub in ("new", "cur"):
        for name in sorted(os.listdir(root / sub)):
            if name.startswith(".") or (sub == "cur" and "S" in _flags(name)):
                continue
            yield f"{sub}/{name}", root / sub / name


def _flags(name: str) -> str:
    return name.partition(":2,")[2]


def _mark_seen(path: Path) -> None:
    """Maildir spec: cur/<unique>:2,<flags in ASCII order>."""
    base, _, _ = path.name.partition(":2,")
    flags = "".join(sorted(set(_flags(path.name)) | {"S"}))
    try:
        path.rename(path.parent.parent / "cur" / f"{base}:2,{flags}")
    except FileNotFoundError:
        pass  # an overlapping run marked it first; its events were recorded once either way
