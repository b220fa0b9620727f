"""The rendering pipeline dispatch, previews, the API and ``render_mjml`` share.

``compile_version`` turns a version's sources into Jinja templates once (MJML
runs here, cached by content hash); ``CompiledVersion.render`` is the
per-recipient path and runs Jinja only. ``render_direct`` renders the slow way
(Jinja over the MJML, then MJML) and exists as the reference the compile-once
path is tested against.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from jinja2 import meta, nodes
from jinja2.environment import Template
from markupsafe import escape

from templates_registry.rendering.errors import RenderError
from templates_registry.rendering.mjml import Placeholders, compile_mjml, compile_with_placeholders
from templates_registry.rendering.sandbox import (
    Limits,
    environment,
    render_prepared,
    render_prepared_parts,
    shared_budget,
    with_globals,
)
from templates_registry.rendering.text import html_to_text

PREHEADER_VAR = "sp_preheader"
# Sendplane's signed one-click link for this recipient (dispatch sets it per message; previews and the pre-send
# checks get a sample). A built-in: never declared, and a caller's value of that name is replaced, so the visible
# link always reaches the suppression list.
UNSUBSCRIBE_VAR = "unsubscribe_url"
BUILTIN_VARS = frozenset({UNSUBSCRIBE_VAR})
# The shape of a real token (uuid hex, a dot, 16 hex) whose signature never verifies: a preview click is refused.
_SAMPLE_TOKEN = f"{'0' * 32}.{'0' * 16}"


def sample_unsubscribe_url() -> str:
    """The unsubscribe link a preview or a pre-send check renders (the pre-send check looks for exactly this)."""
    return f"{settings.SENDPLANE_PUBLIC_URL}/u/{_SAMPLE_TOKEN}"
_PREHEADER_DIV = (
    '<div style="display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0px;'
    'max-width:0px;opacity:0;overflow:hidden;">{}</div>'
)
_BODY_OPEN = re.compile(r"<body[^>]*>", re.I)
_JINJA_OPENER = re.compile(r"\{(?=[{%#])")
# Controls have no place in a one-line header: CR and LF would start a header of the recipient's choosing, NUL
# ends strings, VT and FF (and NEL, U+2028, U+2029) are line breaks to some readers. A tab is white space: kept.
_HEADER_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# Longest rendered value, in characters. The subject: 998, as the field's source (an RFC 5322 line; folding makes the
# line limit moot, but no inbox shows more). The sender name: 200, as the field's source; a display name is a few words.
HEADER_MAX_CHARS = {"subject": 998, "sender_name": 200}
_SOURCE_FIELDS = ("mjml_body", "subject", "preheader", "text_body", "sender_name")
_HEADER_FIELDS = ("subject", "sender_name", "preheader")
# Joins the text parts of one combined render. Random per process, so no
# recipient value can forge it; the newline keeps the text part at a line start.
_PART_SEPARATOR = f"\x00{secrets.token_hex(16)}\n"


@dataclass(frozen=True)
class VersionContent:
    """The renderable sources of one version, and its declared variables with sample values."""

    mjml_body: str
    subject: str
    sender_name: str = ""
    preheader: str = ""
    text_body: str = ""
    variables: Mapping[str, Any] = field(default_factory=dict)

    def sources(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in _SOURCE_FIELDS}

    @property
    def render_key(self) -> str:
        """Hash of what compiles (not the sample values): the compile cache key."""
        return hashlib.sha256(json.dumps(self.sources(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    sender_name: str
    preheader: str
    html: str
    text: str
    # The same two parts as the template yielded them (constant text and values; empty: not known). The MIME
    # encoder encodes each constant once per process instead of the whole part per recipient (rendering/mime.py).
    html_parts: tuple[str, ...] = field(default=(), compare=False, repr=False)
    text_parts: tuple[str, ...] = field(default=(), compare=False, repr=False)


class CompiledVersion:
    """A version compiled once; ``render`` is the per-recipient hot path."""

    def __init__(self, content: VersionContent) -> None:
        html_env, text_env = environment(autoescape=True), environment(autoescape=False)
        self.html_env = html_env
        self.content = content
        self.limits = Limits.from_settings()
        for name in _HEADER_FIELDS:
            _refuse_assignments(text_env, getattr(content, name), name)
        self._mjml_jinja = _compile_field(html_env, content.mjml_body, "mjml_body")  # validates Jinja first
        html_with_placeholders, placeholders = _labelled("mjml_body", compile_with_placeholders, content.mjml_body)
        preheader_slot = "{{ %s }}" % PREHEADER_VAR if content.preheader else ""
        html_source = placeholders.restore(insert_preheader(_escape_jinja(html_with_placeholders), preheader_slot))
        self.html = _compile_field(html_env, html_source, "mjml_body")
        text_field = "text_body" if content.text_body else "mjml_body"
        text_source = content.text_body or placeholders.restore(
            _escape_jinja(_derive_text(html_with_placeholders, placeholders))
        )
        # Each text part compiled alone (for errors with the right field and line),
        # and all four as one template: one render instead of four per recipient.
        self._text_parts = [(name, _compile_field(text_env, getattr(content, name), name)) for name in _HEADER_FIELDS]
        self._text_parts.append((text_field, _compile_field(text_env, text_source, text_field)))
        sources = [getattr(content, name) for name in _HEADER_FIELDS] + [text_source]
        self._text_combined = _compile_field(text_env, _PART_SEPARATOR.join(sources), text_field)

    def render(self, context: Mapping[str, Any], *, unsubscribe_url: str | None = None) -> RenderedMessage:
        """One recipient's message; ``unsubscribe_url`` is theirs (None: the sample, for previews and checks)."""
        variables = with_globals(self.html_env, check_context(context))
        variables[UNSUBSCRIBE_VAR] = unsubscribe_url or sample_unsubscribe_url()
        with shared_budget(self.limits):
            return self._render(variables)

    def _render(self, variables: dict[str, Any]) -> RenderedMessage:
        try:
            (subject, sender_name, preheader, text), text_parts = self._render_text_parts(variables)
            variables[PREHEADER_VAR] = preheader  # the dict is this message's own (with_globals)
            html_parts = _render_field_parts(self.html, variables, "mjml_body", self.limits)
        except RenderError as exc:
            if exc.field != "mjml_body":
                raise
            raise self._located(exc, variables) from None
        return RenderedMessage(
            check_header(subject, "subject"), check_header(sender_name, "sender_name"), preheader, "".join(html_parts), text,
            html_parts=tuple(html_parts), text_parts=text_parts,
        )

    def _render_text_parts(self, variables: dict[str, Any]) -> tuple[list[str], tuple[str, ...]]:
        """Subject, sender name, preheader and text, and the text's chunks as the template yielded them."""
        try:
            chunks = _render_field_parts(self._text_combined, variables, "text", self.limits)
            # maxsplit stops the scan after the short header parts (a full split scans ~40 KB)
            parts = "".join(chunks).split(_PART_SEPARATOR, len(_HEADER_FIELDS))
        except RenderError:
            parts = []
        if len(parts) != len(self._text_parts):  # an error, or a value holding the separator
            parts = [_render_field(tpl, variables, name, self.limits) for name, tpl in self._text_parts]
            return parts, (parts[-1],)
        return parts, _suffix(chunks, len(parts[-1]))

    def _located(self, exc: RenderError, ctx: Mapping[str, Any]) -> RenderError:
        """Re-run Jinja over the MJML source to report the line there, not in generated HTML."""
        try:
            _render_field(self._mjml_jinja, ctx, "mjml_body", self.limits)
        except RenderError as located:
            return located.with_field("mjml_body")
        return RenderError(exc.message, field="mjml_body")


class _CompileCache:
    """LRU of compiled versions keyed by content hash, per process."""

    def __init__(self, size: int = 256) -> None:
        self.size, self.hits, self.misses = size, 0, 0
        self._items: OrderedDict[str, CompiledVersion] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, content: VersionContent) -> CompiledVersion:
        key = content.render_key
        with self._lock:
            if key in self._items:
                self.hits += 1
                self._items.move_to_end(key)
                return self._items[key]
        compiled = CompiledVersion(content)
        with self._lock:
            self.misses += 1
            self._items[key] = compiled
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return compiled

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0


compile_cache = _CompileCache()


def compile_version(content: VersionContent) -> CompiledVersion:
    return compile_cache.get(content)


def render_direct(content: VersionContent, context: Mapping[str, Any], *, unsubscribe_url: str | None = None) -> RenderedMessage:
    """The reference path: Jinja over the MJML, then MJML, for this one recipient."""
    html_env, text_env = environment(autoescape=True), environment(autoescape=False)
    limits = Limits.from_settings()
    ctx = with_globals(html_env, check_context(context))
    ctx[UNSUBSCRIBE_VAR] = unsubscribe_url or sample_unsubscribe_url()
    subject = render_header(_compile_field(text_env, content.subject, "subject"), ctx, "subject", limits)
    sender = render_header(_compile_field(text_env, content.sender_name, "sender_name"), ctx, "sender_name", limits)
    preheader = _render_field(_compile_field(text_env, content.preheader, "preheader"), ctx, "preheader", limits)
    mjml = _render_field(_compile_field(html_env, content.mjml_body, "mjml_body"), ctx, "mjml_body", limits)
    bare_html = _labelled("mjml_body", compile_mjml, mjml)
    if content.text_body:
        text = _render_field(_compile_field(text_env, content.text_body, "text_body"), ctx, "text_body", limits)
    else:
        text = html_to_text(bare_html)
    html = insert_preheader(bare_html, str(escape(preheader)) if content.preheader else "")
    return RenderedMessage(subject, sender, preheader, html, text)


def validate_content(content: VersionContent) -> RenderedMessage:
    """Everything a version must pass before it is saved; returns the sample render."""
    if not isinstance(content.variables, Mapping) or not all(isinstance(k, str) for k in content.variables):
        raise RenderError("variables must be an object of name: sample value", field="variables")
    if PREHEADER_VAR in content.variables:
        raise RenderError(f"{PREHEADER_VAR} is a reserved variable name", field="variables")
    if not content.subject.strip():
        raise RenderError("subject is empty", field="subject")
    check_declared(content)
    return compile_version(content).render(content.variables)


def check_declared(content: VersionContent) -> None:
    """Every variable a source reads must be declared with a sample value."""
    html_env = environment(autoescape=True)
    for name, source in content.sources().items():
        if not source:
            continue
        _labelled(name, html_env.compile_checked, source)  # syntax, nesting, refused statements
        tree = html_env.parse(source)
        undeclared = sorted(meta.find_undeclared_variables(tree) - set(content.variables) - BUILTIN_VARS)
        if undeclared:
            line = next((n.lineno for n in tree.find_all(nodes.Name) if n.name == undeclared[0]), None)
            raise RenderError(f"undeclared variable {undeclared[0]!r}", line=line, field=name)


def check_context(context: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(context, Mapping) or not all(isinstance(k, str) for k in context):
        raise RenderError("context must be an object with string keys")
    return dict(context)


def render_header(template: Template | str, ctx: Mapping[str, Any], name: str, limits: Limits) -> str:
    return check_header(_render_field(template, ctx, name, limits), name)


def check_header(value: str, name: str) -> str:
    """Subject and sender name, stripped; refused if rendering put a control character in them or made them too long.

    The trigger renders every recipient's message, so a value refused here
    refuses that recipient at the door, not at the receiving server.
    """
    control = _HEADER_FORBIDDEN.search(value)
    if control and control.group() in "\r\n\x00":
        raise RenderError("contains a line break or NUL after rendering (header injection)", field=name)
    if control:
        raise RenderError(f"contains the control character U+{ord(control.group()):04X} after rendering (header injection)", field=name)
    value = value.strip()
    limit = HEADER_MAX_CHARS.get(name, HEADER_MAX_CHARS["subject"])
    if len(value) > limit:
        raise RenderError(f"is {len(value)} characters after rendering, at most {limit}", field=name)
    return value


def _refuse_assignments(env: Any, source: str, name: str) -> None:
    """One-line fields may not ``{% set %}``: parts render together, and nothing may leak between them."""
    if "{%" not in source:
        return
    tree = _labelled(name, env.compile_checked, source) and env.parse(source)
    assignment = next(iter(tree.find_all(nodes.Assign)), None)
    if assignment is not None:
        raise RenderError("{% set %} is not allowed here", line=assignment.lineno, field=name)


def _derive_text(html: str, placeholders: Placeholders) -> str:
    """Text part from the placeholder HTML; a line holding only statements gives up
    the blank line after it, so a loop renders without runs of blank lines."""
    lines = html_to_text(html, keep=placeholders.statements_in).split("\n")
    kept: list[str] = []
    for line in lines:
        if not line and kept and placeholders.is_statement_line(kept[-1]):
            continue
        kept.append(line)
    return "\n".join(kept)


def insert_preheader(html: str, preheader_html: str) -> str:
    if not preheader_html:
        return html
    match = _BODY_OPEN.search(html)
    at = match.end() if match else 0
    return html[:at] + _PREHEADER_DIV.format(preheader_html) + html[at:]


def _escape_jinja(text: str) -> str:
    """Make text that came out of MJML (not from Jinja tags) inert to Jinja."""
    return _JINJA_OPENER.sub('{{ "{" }}', text)


def _compile_field(env: Any, source: str, name: str) -> Template | str:
    """A template, or the source itself when it holds no Jinja (most sender names)."""
    if not _JINJA_OPENER.search(source):
        return source
    return _labelled(name, env.compile_checked, source)


def _render_field(template: Template | str, variables: Mapping[str, Any], name: str, limits: Limits) -> str:
    """Render one part; ``variables`` must already hold the sandbox globals (see with_globals)."""
    if isinstance(template, str):
        return template
    return _labelled(name, render_prepared, template, variables, limits)


def _render_field_parts(template: Template | str, variables: Mapping[str, Any], name: str, limits: Limits) -> list[str]:
    """``_render_field``'s output as the chunks the template yielded."""
    if isinstance(template, str):
        return [template]
    return _labelled(name, render_prepared_parts, template, variables, limits)


def _suffix(chunks: list[str], length: int) -> tuple[str, ...]:
    """The chunks that make up the last ``length`` characters of their concatenation (the first one cut)."""
    tail: list[str] = []
    for chunk in reversed(chunks):
        if length <= 0:
            break
        tail.append(chunk if len(chunk) <= length else chunk[-length:])
        length -= len(chunk)
    return tuple(reversed(tail))


def _labelled(name: str, func: Any, *args: Any) -> Any:
    """Call ``func``; label any RenderError with the field it came from."""
    try:
        return func(*args)
    except RenderError as exc:
        raise exc.with_field(name) from None
