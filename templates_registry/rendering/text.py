"""Derive the plain-text part from HTML.

Written over the standard library's HTMLParser rather than taken from a
library (inscriptis was tried) because it runs on HTML that still holds Jinja
placeholders: text must come out strictly in document order, or a
``{% for %}`` placeholder would be separated from the rows it wraps. It skips
``<head>``, ``<style>``, ``<script>`` and ``display:none`` elements (the
preheader), shows links as ``text (url)`` and images by their ``alt``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

_SKIPPED = frozenset({"head", "style", "script", "title"})
_BLOCKS = frozenset(
    "p div table tr h1 h2 h3 h4 h5 h6 ul ol li blockquote section article header footer hr pre".split()
)
_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())
_HIDDEN = re.compile(r"display\s*:\s*none", re.I)


class _TextExtractor(HTMLParser):
    def __init__(self, keep: Callable[[str], list[str]] | None) -> None:
        super().__init__(convert_charrefs=True)
        self.keep = keep
        self.out: list[str] = []
        self.hidden: list[bool] = []  # one per open non-void element: does it hide its content?
        self.links: list[tuple[str, int]] = []

    @property
    def skipping(self) -> bool:
        return any(self.hidden)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag not in _VOID:
            self.hidden.append(tag in _SKIPPED or bool(_HIDDEN.search(attributes.get("style", ""))))
        if self.skipping:
            return
        if tag in _BLOCKS or tag == "br":
            self.out.append("\n")
        if tag == "img" and attributes.get("alt"):
            self.out.append(attributes["alt"])
        if tag == "a":
            self.links.append((attributes.get("href", ""), len(self.out)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        was_skipping = self.skipping
        if self.hidden:
            self.hidden.pop()
        if was_skipping:
            return
        if tag == "a" and self.links:
            self._close_link(*self.links.pop())
        if tag in _BLOCKS:
            self.out.append("\n")

    def _close_link(self, href: str, start: int) -> None:
        label = " ".join("".join(self.out[start:]).split())
        if href and not href.startswith("#") and href != label:
            self.out.append(f" ({href})" if label else href)

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(re.sub(r"\s+", " ", data))
        elif self.keep is not None:
            self.out.extend(self.keep(data))

    def handle_comment(self, data: str) -> None:
        # MJML puts some raw content inside Outlook conditional comments.
        if self.keep is not None:
            self.out.extend(self.keep(data))


def html_to_text(html: str, keep: Callable[[str], list[str]] | None = None) -> str:
    """Visible text of ``html``. ``keep`` picks what must survive from comments and
    hidden parts too (the Jinja statements a compiled template still holds)."""
    parser = _TextExtractor(keep)
    parser.feed(html)
    parser.close()
    return normalize_text("".join(parser.out))


def normalize_text(text: str) -> str:
    """Trim each line and keep at most one blank line; applied after every render too."""
    lines = [line.strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()

