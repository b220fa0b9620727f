"""``demo``: the README's main job on the embedded default.

Today: load the example templates and render every variant through the
dispatch pipeline, writing the HTML next to the database for a look.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from templates_registry.examples import examples_load
from templates_registry.rendering import RenderError
from templates_registry.services import RegistryError
from templates_registry.selectors import version_render


class Command(BaseCommand):
    help = "Run the Sendplane demo on the embedded default."

    def handle(self, *args: Any, **options: Any) -> None:
        out_dir = Path(settings.DATA_DIR) / "demo"
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            versions = examples_load()
        except (RenderError, RegistryError) as exc:
            raise CommandError(f"an example template is invalid: {exc}") from None
        self.stdout.write(f"Loaded {len(versions)} example variants.\n")
        for version in versions:
            self._show(version, out_dir)
        self.stdout.write(self.style.SUCCESS(f"Rendered {len(versions)} variants; HTML written to {out_dir}"))

    def _show(self, version: Any, out_dir: Path) -> None:
        start = time.perf_counter()
        message = version_render(version=version)
        elapsed_ms = (time.perf_counter() - start) * 1000
        path = out_dir / f"{version.variant.template.slug}-{version.variant.slug}-v{version.number}.html"
        path.write_text(message.html, encoding="utf-8")
        origin = f"AI ({version.model_name})" if version.origin == "ai" else "human"
        self.stdout.write(f"\n{version} [{origin}, {version.status}] rendered in {elapsed_ms:.1f} ms")
        self.stdout.write(f"  From:    {message.sender_name}\n  Subject: {message.subject}\n  Preview: {message.preheader}")
        self.stdout.write(f"  HTML:    {len(message.html.encode()) / 1024:.1f} KB -> {path.name}")
        excerpt = "\n".join("    " + line for line in message.text.splitlines()[:8])
        self.stdout.write(f"  Text part (first lines):\n{excerpt}")
