"""``retention_purge [--dry-run] [--max-batches N]``: run retention now and print what each data class lost.

Beat runs the same every 10 minutes (``dispatch.tasks.retention``); this is for
a first run over a long history, or to see what the next run would do.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dispatch.services.retention import MAX_BATCHES, data_classes, retention_pending, retention_run


class Command(BaseCommand):
    help = "Blank or delete recipient data past its retention (SENDPLANE_RETENTION_*); print the rows per data class."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count what would change; change nothing")
        parser.add_argument("--max-batches", type=int, default=MAX_BATCHES, help="batches per data class at most (default %(default)s)")

    def handle(self, *args: Any, **options: Any) -> None:
        unfinished: tuple[str, ...] = ()
        if options["dry_run"]:
            counts, verb = retention_pending(), "would be"
        else:
            report = retention_run(max_batches=max(1, options["max_batches"]), actor="command:retention_purge")
            counts, unfinished, verb = report.changed, report.unfinished, ""
        for data_class in data_classes():
            days = data_class.days()
            if not days:
                self.stdout.write(f"{data_class.name}: kept for ever")
                continue
            action = f"{verb} {data_class.action}".strip()
            self.stdout.write(f"{data_class.name}: {counts[data_class.name]} {action} (older than {days} days)")
        if unfinished:
            self.stdout.write(f"more left in {', '.join(unfinished)}: run again (or let beat go on)")
