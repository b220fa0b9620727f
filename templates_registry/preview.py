"""What the admin's preview adds to a render: where Gmail clips it, and dark clients emulated.

Pure functions over one rendered message (nothing here reads the database);
``selectors.version_preview`` composes them with the render and the admin's
preview page shows the result in sandboxed iframes.

Also the one way a real recipient's context reaches the preview. Messages are
dispatch's, and the registry never imports dispatch (imports run dispatch ->
deliverability -> templates_registry), so dispatch hands the registry its
lookup when its app is ready (``recipient_lookup_register``, called from
dispatch/apps.py) instead of the registry reaching for dispatch's model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from html.parser import HTMLParser
from typing import Any

from controlplane.errors import ServiceError
from templates_registry.checks import GMAIL_CLIP_BYTES
from templates_registry.rendering import RenderedMessage, sample_unsubscribe_url

CLIP_LABEL = "Gmail clips here (102 KB)"
CLIP_ATTRIBUTE = "data-sendplane-clip"
# Inline styles only: the email's own CSS must not restyle the line, and its containers often set font-size:0
# (MJML's columns) or a dark background, hence every property set and the label on a white chip of its own.
CLIP_MARKER = (
    f'<div {CLIP_ATTRIBUTE}="" role="separator" aria-label="{CLIP_LABEL}" style="display:block;clear:both;'
    "box-sizing:border-box;width:100%;margin:10px 0;padding:0;border:0;border-top:3px dashed #c21b2f;"
    'text-align:left;font:bold 13px/1.5 Arial,Helvetica,sans-serif;letter-spacing:0;text-transform:none;">'
    '<span style="display:inline-block;margin:0;padding:1px 8px;background:#ffffff;color:#a3101f;'
    f'font:bold 13px/1.5 Arial,Helvetica,sans-serif;">{CLIP_LABEL}</span></div>'
)


# --- Gmail's clipping --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """Where Gmail's 102 KB falls in one rendered HTML."""

    size: int  # bytes of the HTML in UTF-8, as checks.html_size counts them
    cut: int | None  # characters of the HTML inside the limit; None: it all fits
    marker: int | None  # where the line is drawn (characters): the last place at or before ``cut`` a block may stand

    @property
    def clipped(self) -> bool:
        return self.cut is not None

    @property
    def kb(self) -> str:
        return f"{self.size / 1024:.1f} KB"


def clip_of(html: str, limit: int = GMAIL_CLIP_BYTES) -> Clip:
    encoded = html.encode("utf-8", "surrogatepass")  # surrogatepass: a lone surrogate must not raise (as checks.py)
    if len(encoded) <= limit:
        return Clip(len(encoded), None, None)
    end = limit
    while end and encoded[end] & 0xC0 == 0x80:  # a continuation byte: that character straddles the limit, so it is out
        end -= 1
    cut = len(encoded[:end].decode("utf-8", "surrogatepass"))
    return Clip(len(encoded), cut, _Boundaries.nearest(html, cut))


def with_clip_marker(html: str, clip: Clip) -> str:
    if clip.marker is None:
        return html
    return f"{html[:clip.marker]}{CLIP_MARKER}{html[clip.marker:]}"


# Elements whose content takes a <div> where it stands: the parser neither moves it (out of a table, between rows)
# nor closes an element for it (a <p>). Elements whose content is not markup, or not shown as the page's.
_FLOW = frozenset("body div td th li center section article header footer main aside blockquote dd figure".split())
_OPAQUE = frozenset("head title textarea template svg math select option iframe object noscript xmp".split())
_CELLS = frozenset({"td", "th", "body"})
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_SPACE = re.compile(r"\s")


class _Boundaries(HTMLParser):
    """The places between tokens (and after white space in text) where a block may be inserted.

    Only token starts are candidates: never inside a tag, a comment, a character
    reference or an element's raw text (``<style>``). Inside text only after
    white space, which no character reference contains, and a ``str`` index
    never splits a character.
    """

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.starts = [0, *(m.end() for m in re.finditer("\n", html))]  # HTMLParser reports (line, column)
        self.stack: list[str] = []
        self.tokens: list[tuple[int, bool, bool]] = []  # (where, a block may go there, text follows)

    @classmethod
    def nearest(cls, html: str, cut: int) -> int | None:
        """The last candidate at or before ``cut``; when none (all of <body> is past it), the first one."""
        parser = cls(html)
        parser.feed(html)
        parser.close()
        ends = [where for where, _, _ in parser.tokens[1:]] + [len(html)]
        best = first = None
        for (where, takes_block, text), end in zip(parser.tokens, ends, strict=True):
            if not takes_block:
                continue
            first = where if first is None else first
            if where > cut:
                break
            best = where
            if text:
                best = max((m.end() for m in _SPACE.finditer(html, where, min(end, cut))), default=where)
        return first if best is None else best

    def _token(self, text: bool = False) -> None:
        line, column = self.getpos()
        self.tokens.append((self.starts[line - 1] + column, self._takes_block(), text))

    def _takes_block(self) -> bool:
        if not self.stack or self.stack[-1] not in _FLOW or "body" not in self.stack or _OPAQUE.intersection(self.stack):
            return False
        for tag in reversed(self.stack):  # a <p> still open in this cell would be closed by the <div>
            if tag in _CELLS:
                return True
            if tag == "p":
                return False
        return True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._token()
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._token()

    def handle_endtag(self, tag: str) -> None:
        self._token()
        if tag in self.stack:  # else a stray end tag, which a browser ignores too
            del self.stack[len(self.stack) - 1 - self.stack[::-1].index(tag):]

    def handle_data(self, data: str) -> None:
        self._token(text=True)

    def handle_comment(self, data: str) -> None:
        self._token()

    def handle_decl(self, decl: str) -> None:
        self._token()

    def handle_pi(self, data: str) -> None:
        self._token()

    def unknown_decl(self, data: str) -> None:
        self._token()


# --- dark clients --------------------------------------------------------------------------------------------------


class Appearance(StrEnum):
    LIGHT = "light"
    DARK = "dark"  # a client that applies the template's own dark rules (Apple Mail, iOS Mail)
    INVERTED = "inverted"  # a client that forces dark by inverting colours and ignores the rules (the Gmail apps)


APPEARANCE_LABELS = {
    Appearance.LIGHT: "Light",
    Appearance.DARK: "Dark: the template's own dark rules (as Apple Mail)",
    Appearance.INVERTED: "Dark: colours inverted (as the Gmail apps)",
}

_STYLE_BLOCK = re.compile(r"(<style\b[^>]*>)(.*?)(</style\s*>)", re.I | re.S)
_MEDIA_RULE = re.compile(r"(@media\s+)([^{;]*?)(\s*\{)", re.I)
_MEDIA_ATTRIBUTE_TAG = re.compile(r"<(?:style|link|source)\b[^>]*>", re.I)
_MEDIA_ATTRIBUTE = re.compile(r"""(\bmedia\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.I)
_SCHEME = re.compile(r"\(\s*prefers-color-scheme\s*:\s*(dark|light)\s*\)", re.I)
_HEAD_END = re.compile(r"</head\s*>", re.I)
# Widths are never 0 in a frame: an always true and an always false feature, which compose inside a longer query.
_TRUE, _FALSE = "(min-width: 0px)", "(max-width: 0px)"
_INVERT = "filter: invert(1) hue-rotate(180deg) !important;"
# Gmail's forced dark mode: the whole message inverted (hue kept), its pictures (and our clip line) turned back.
_FORCED_DARK_CSS = (
    f"<style>html {{ {_INVERT} background-color: #ffffff; }} "
    f'img, picture, video, svg, [background], [style*="background-image"], [{CLIP_ATTRIBUTE}] {{ {_INVERT} }}</style>'
)


def as_appearance(html: str, appearance: Appearance) -> str:
    """The HTML as a client in ``appearance`` shows it: ``prefers-color-scheme`` answered, colours forced or not.

    Only the DARK copy answers "dark"; the light copy answers "light", so the frames never follow the admin's own
    scheme, and the inverted one too, as Gmail ignores those rules.
    """
    dark = appearance == Appearance.DARK
    html = _STYLE_BLOCK.sub(lambda m: m[1] + _MEDIA_RULE.sub(lambda r: r[1] + _answer(r[2], dark) + r[3], m[2]) + m[3], html)
    html = _MEDIA_ATTRIBUTE_TAG.sub(lambda m: _MEDIA_ATTRIBUTE.sub(lambda a: _media_attribute(a, dark), m[0]), html)
    if appearance == Appearance.INVERTED:
        head_end = _HEAD_END.search(html)
        at = head_end.start() if head_end else 0
        html = f"{html[:at]}{_FORCED_DARK_CSS}{html[at:]}"
    return html


def _media_attribute(match: re.Match[str], dark: bool) -> str:
    quote = '"' if match[2] is not None else "'"
    return f"{match[1]}{quote}{_answer(match[2] if match[2] is not None else match[3], dark)}{quote}"


def _answer(query: str, dark: bool) -> str:
    """``query`` with each prefers-color-scheme feature answered; that feature alone becomes ``all`` or ``not all``."""
    alone = _SCHEME.fullmatch(query.strip())
    if alone:
        return "all" if (alone[1].lower() == "dark") == dark else "not all"
    return _SCHEME.sub(lambda m: _TRUE if (m[1].lower() == "dark") == dark else _FALSE, query)


# --- the whole preview ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """One render as the preview page shows it: the message, where Gmail clips it, and a copy per appearance."""

    rendered: RenderedMessage
    clip: Clip
    frames: dict[Appearance, str]  # the HTML each frame shows: the clip line drawn, the appearance applied
    unsubscribe_clipped: bool  # the (sample) unsubscribe link is past Gmail's cut


def preview_of(rendered: RenderedMessage) -> Preview:
    clip = clip_of(rendered.html)
    marked = with_clip_marker(rendered.html, clip)
    hidden = clip.cut is not None and rendered.html.find(sample_unsubscribe_url()) >= clip.cut
    return Preview(rendered, clip, {a: as_appearance(marked, a) for a in Appearance}, hidden)


# --- a real recipient's context ---------------------------------------------------------------------------------------


class PreviewError(ServiceError):
    """A real recipient's context could not be had: one line, and the preview shows the sample values instead."""


@dataclass(frozen=True)
class RecipientContext:
    """What dispatch stored for one message: whom it went to and the context it was rendered with."""

    message: str  # the message's uuid
    version_id: int  # the version it used
    recipient: str  # "" once erased
    context: dict[str, Any] = field(default_factory=dict)  # {} once erased, or past its retention
    sender_address: str = ""  # the From address its sending domain uses

    @property
    def erased(self) -> bool:
        return not self.context


# (version, reference) -> the newest message of that version named by ``reference`` (a uuid or an address), or None.
RecipientLookup = Callable[..., "RecipientContext | None"]
_lookups: list[RecipientLookup] = []


def recipient_lookup_register(lookup: RecipientLookup) -> None:
    """dispatch's AppConfig.ready hands its lookup here; called again (a test's reload), it replaces the first."""
    _lookups[:] = [lookup]


def recipient_lookup() -> RecipientLookup | None:
    return _lookups[0] if _lookups else None
