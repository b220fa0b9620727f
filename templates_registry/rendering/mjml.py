"""Compile MJML that contains Jinja into a Jinja template of HTML, once.

MRML would choke on ``{% for %}`` between ``mj-section`` elements, and running
MJML per recipient costs milliseconds. So each Jinja tag is swapped for an
inert placeholder before MJML runs, and swapped back afterwards:

* expressions (``{{ x }}``) become a bare placeholder, in text or attributes;
* statements (``{% if %}``, ``{% for %}``...) inside text-like elements
  (``mj-text``, ``mj-button``, ``mj-raw``...) stay bare; between elements of
  ``mj-body``, ``mj-wrapper``, ``mj-column`` or ``mj-hero`` they are wrapped in
  ``<mj-raw>``, which MRML emits exactly in place (between whole sections,
  between the rows of a column), so a loop there repeats complete markup;
* statements directly inside ``mj-section``/``mj-group`` are refused: MJML
  fixes column widths from the column count at compile time, so a loop over
  columns cannot be compiled once. ``mj-head`` and attribute positions are
  refused too.

The result renders per recipient with Jinja only. ``render_direct`` in
pipeline.py is the slow reference (Jinja, then MJML, per recipient); tests
prove both give the same HTML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mjml import mjml2html

from templates_registry.rendering.errors import RenderError

# Elements whose content MRML passes through as raw HTML.
ENDING_TAGS = frozenset(
    "mj-text mj-button mj-raw mj-table mj-navbar-link mj-accordion-title mj-accordion-text "
    "mj-social-element mj-title mj-preview mj-style".split()
)
# Containers where a statement may sit between child elements (wrapped in mj-raw).
STATEMENT_CONTAINERS = frozenset({"mj-body", "mj-wrapper", "mj-column", "mj-hero"})
_COLUMN_COUNTERS = frozenset({"mj-section", "mj-group"})
_MRML_POSITION = re.compile(r"^(?P<msg>.*?)(?: in root template)?(?: at position (?P<start>\d+):\d+)?$")
_TAG_START = re.compile(r"<(/?)([A-Za-z][\w:.-]*)")


@dataclass(frozen=True)
class JinjaChunk:
    start: int
    end: int
    kind: str  # "expr", "stmt" or "comment"; {% raw %} blocks count as "stmt"


@dataclass
class _MarkupState:
    """Where in the MJML document a position is: open elements, inside a tag, inside a comment."""

    stack: list[str] = field(default_factory=list)
    in_tag: bool = False
    in_comment: bool = False
    quote: str = ""
    tag_name: str = ""
    closing: bool = False
    last_char: str = ""

    @property
    def raw(self) -> bool:
        return bool(self.stack) and self.stack[-1] in ENDING_TAGS

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            i = self._comment(text, i) if self.in_comment else self._tag(text, i) if self.in_tag else self._data(text, i)

    def _comment(self, text: str, i: int) -> int:
        end = text.find("-->", i)
        if end < 0:
            return len(text)
        self.in_comment = False
        return end + 3

    def _data(self, text: str, i: int) -> int:
        lt = text.find("<", i)
        if lt < 0:
            return len(text)
        if text.startswith("<!--", lt):
            self.in_comment = True
            return lt + 4
        match = _TAG_START.match(text, lt)
        if match is None:
            return lt + 1
        closing, name = match.group(1) == "/", match.group(2).lower()
        if self.raw and not (closing and name == self.stack[-1]):
            return match.end()  # HTML inside text-like elements is content, not structure
        self.in_tag, self.tag_name, self.closing, self.last_char = True, name, closing, ""
        return match.end()

    def _tag(self, text: str, i: int) -> int:
        while i < len(text):
            char = text[i]
            i += 1
            if self.quote:
                self.quote = "" if char == self.quote else self.quote
            elif char in "\"'":
                self.quote = char
            elif char == ">":
                self._end_tag(self_closing=self.last_char == "/")
                return i
            if not char.isspace():
                self.last_char = char
        return i

    def _end_tag(self, *, self_closing: bool) -> None:
        self.in_tag = False
        if not self.tag_name.startswith("mj"):
            return
        if self.closing:
            if self.tag_name in self.stack:
                while self.stack and self.stack.pop() != self.tag_name:
                    pass
        elif not self_closing:
            self.stack.append(self.tag_name)


def find_jinja_chunks(source: str) -> list[JinjaChunk]:
    """Spans of ``{{ }}``, ``{% %}`` and ``{# #}``; quotes are honoured, raw blocks kept whole."""
    chunks: list[JinjaChunk] = []
    i = 0
    while True:
        start = _next_open(source, i)
        if start < 0:
            return chunks
        opener = source[start : start + 2]
        if opener == "{#":
            end = source.find("#}", start + 2)
            end = len(source) if end < 0 else end + 2
            chunks.append(JinjaChunk(start, end, "comment"))
        else:
            end = _tag_end(source, start + 2, "}}" if opener == "{{" else "%}")
            if opener == "{%" and re.match(r"\{%-?\s*raw\s*-?%\}", source[start:end]):
                close = re.compile(r"\{%-?\s*endraw\s*-?%\}").search(source, end)
                end = len(source) if close is None else close.end()
            chunks.append(JinjaChunk(start, end, "expr" if opener == "{{" else "stmt"))
        i = end


def _next_open(source: str, i: int) -> int:
    positions = [p for p in (source.find(o, i) for o in ("{{", "{%", "{#")) if p >= 0]
    return min(positions) if positions else -1


def _tag_end(source: str, i: int, closer: str) -> int:
    quote = ""
    while i < len(source):
        char = source[i]
        if quote:
            if char == "\\":
                i += 2
                continue
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif source.startswith(closer, i):
            return i + 2
        i += 1
    return len(source)


@dataclass
class Placeholders:
    """The MJML with Jinja swapped out, and what to swap back."""

    mjml: str
    marker: str
    originals: list[str]
    statement_ids: list[int]
    # (offset in the transformed text, offset in the source, verbatim?) per piece, for error lines.
    pieces: list[tuple[int, int, bool]]
    source: str

    def token(self, index: int) -> str:
        return f"{self.marker}{index}Z"

    def restore(self, text: str) -> str:
        pattern = re.compile(re.escape(self.marker) + r"(\d+)Z")
        return pattern.sub(lambda m: self.originals[int(m.group(1))], text)

    def statements_in(self, text: str) -> list[str]:
        tokens = re.findall(re.escape(self.marker) + r"(\d+)Z", text)
        return [self.token(int(i)) for i in tokens if int(i) in self.statement_ids]

    def is_statement_line(self, line: str) -> bool:
        ids = re.findall(re.escape(self.marker) + r"(\d+)Z", line)
        bare = re.sub(re.escape(self.marker) + r"\d+Z", "", line).strip()
        return bool(ids) and not bare and all(int(i) in self.statement_ids for i in ids)

    def source_line(self, transformed_byte_offset: int) -> int:
        prefix = self.mjml.encode("utf-8")[:transformed_byte_offset].decode("utf-8", "ignore")
        offset = len(prefix)
        origin = 0
        for t_start, o_start, verbatim in self.pieces:
            if t_start > offset:
                break
            origin = o_start + (offset - t_start if verbatim else 0)
        return self.source.count("\n", 0, origin) + 1


def _pick_marker(source: str) -> str:
    marker = "spjinja"
    while marker in source:
        marker += "q"
    return marker


def extract_placeholders(source: str) -> Placeholders:
    marker = _pick_marker(source)
    state = _MarkupState()
    out: list[str] = []
    pieces: list[tuple[int, int, bool]] = []
    originals: list[str] = []
    statements: list[int] = []
    cursor = length = 0

    def emit(text: str, origin: int, verbatim: bool) -> None:
        nonlocal length
        pieces.append((length, origin, verbatim))
        out.append(text)
        length += len(text)

    for chunk in find_jinja_chunks(source):
        data = source[cursor : chunk.start]
        emit(data, cursor, True)
        state.feed(data)
        cursor = chunk.end
        if chunk.kind == "comment":
            continue
        line = source.count("\n", 0, chunk.start) + 1
        index = len(originals)
        originals.append(source[chunk.start : chunk.end])
        token = f"{marker}{index}Z"
        if chunk.kind == "stmt":
            statements.append(index)
        emit(_placed(token, chunk.kind, state, line), chunk.start, False)
    emit(source[cursor:], cursor, True)
    return Placeholders("".join(out), marker, originals, statements, pieces, source)


def _placed(token: str, kind: str, state: _MarkupState, line: int) -> str:
    """The placeholder as it must appear at this point of the document."""
    if state.in_comment or state.raw:
        return token
    if state.in_tag:
        if kind == "stmt":
            raise RenderError("Jinja statements cannot sit inside an MJML tag; wrap whole elements", line=line)
        return token
    parent = state.stack[-1] if state.stack else "mjml"
    if parent in STATEMENT_CONTAINERS:
        return f"<mj-raw>{token}</mj-raw>"
    if parent in _COLUMN_COUNTERS:
        raise RenderError(
            f"Jinja directly inside <{parent}> would change its column count, which MJML fixes when it "
            "compiles; put the condition or loop inside <mj-column> or around the whole section",
            line=line,
        )
    raise RenderError(
        f"Jinja is not allowed directly inside <{parent}>; use it in <mj-body>, <mj-wrapper>, "
        "<mj-column>, <mj-hero> or inside text",
        line=line,
    )


def compile_mjml(mjml_source: str) -> str:
    """MJML to HTML with MRML. ``mj-include`` stays off: no include loader is given."""
    try:
        return mjml2html(mjml_source, disable_comments=True)
    except ValueError as exc:
        raise _mrml_error(str(exc), None) from None


def _mrml_error(message: str, placeholders: Placeholders | None) -> RenderError:
    match = _MRML_POSITION.match(message.strip())
    text = match.group("msg") if match else message
    line = None
    if match and match.group("start") is not None:
        offset = int(match.group("start"))
        line = placeholders.source_line(offset) if placeholders else None
    if "included template" in text:
        text = "mj-include is not allowed"
    return RenderError(f"MJML error: {text}", line=line)


def compile_with_placeholders(source: str) -> tuple[str, Placeholders]:
    """MJML with Jinja to HTML in which each Jinja tag is still a placeholder."""
    placeholders = extract_placeholders(source)
    try:
        html = mjml2html(placeholders.mjml, disable_comments=True)
    except ValueError as exc:
        raise _mrml_error(str(exc), placeholders) from None
    _check_survivors(html, placeholders)
    return html, placeholders


def _check_survivors(html: str, placeholders: Placeholders) -> None:
    """Every Jinja tag must come out of MJML; statements exactly once and in order."""
    positions: list[int] = []
    for index, original in enumerate(placeholders.originals):
        token = placeholders.token(index)
        count = html.count(token)
        line = placeholders.source.count("\n", 0, placeholders.source.find(original)) + 1
        if count == 0:
            raise RenderError(f"MJML dropped the Jinja tag {original[:40]!r} (is it in an attribute MJML ignores?)", line=line)
        if index in placeholders.statement_ids:
            if count != 1:
                raise RenderError(f"MJML repeated the Jinja statement {original[:40]!r}", line=line)
            positions.append(html.find(token))
    if positions != sorted(positions):
        raise RenderError("MJML reordered Jinja statements; keep them between body elements or inside text")
