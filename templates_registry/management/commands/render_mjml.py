"""``render_mjml FILE [--context JSON_FILE]``: HTML on stdout, through the dispatch pipeline.

A bad template exits 1 with one line on stderr naming the problem (and line).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from templates_registry.rendering import RenderError, VersionContent, compile_version


class Command(BaseCommand):
    help = "Render an MJML file (Jinja allowed) to HTML with the same sandboxed pipeline dispatch uses."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="MJML source file")
        parser.add_argument("--context", help="JSON file with the template variables")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            html = render_file(options["file"], options["context"])
        except (CommandError, RenderError) as exc:
            self.stderr.write(_one_line(exc))  # one line, no "CommandError:" prefix, no traceback
            sys.exit(1)
        sys.stdout.write(html)


def render_file(path: str, context_path: str | None) -> str:
    source = _read(path)
    context = _load_context(context_path) if context_path else {}
    try:
        return compile_version(VersionContent(mjml_body=source, subject="")).render(context).html
    except RenderError as exc:
        where = f" (line {exc.line})" if exc.line else ""
        raise CommandError(f"{path}: {exc.message}{where}") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def _load_context(path: str) -> dict[str, Any]:
    try:
        context = json.loads(_read(path))
    except json.JSONDecodeError as exc:
        raise CommandError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(context, dict):
        raise CommandError(f"{path}: the context must be a JSON object")
    return context
