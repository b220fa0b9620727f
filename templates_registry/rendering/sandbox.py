"""Jinja's immutable sandbox, with the limits an AI-written template needs.

Jinja's sandbox already blocks unsafe attributes (``__class__``, ``__mro__``,
``__globals__``...) and mutation of lists and dicts. It does not bound time,
memory or loop counts, so this module adds, per render:

* a budget of loop iterations and calls (nested loops multiply, so iterations
  are summed over the whole render), and a wall-clock deadline checked at each
  loop step, call, filter and output chunk;
* a size cap on every intermediate string or collection (string repetition,
  ``+``, ``~``, filter and method results) and on the streamed output;
* a memory bound: every operation that can make a big string or list from
  small inputs (``replace``, ``join``, ``indent``, ``center``, ``wordwrap``,
  ``urlize``, ``tojson``, ``~``, printing a list, ``str.expandtabs``...) has
  the size of its result computed before it runs, and is refused when that
  would pass the value cap or what is left of the render's allocation budget
  (``ALLOC_FACTOR`` x the output cap, in characters and list slots, summed over
  everything the render builds). So no template within the limits can make a
  render hold more than a small multiple of the output cap;
* a compile-time allow-list of statements: ``if``, ``for`` (not recursive),
  ``set`` (expression form), ``with`` and ``raw``. Macros, call/filter blocks,
  block-``set``, ``autoescape`` and template loading are refused, because they
  either accumulate output outside the top-level stream (where the size cap
  applies) or switch escaping off;
* a nesting limit checked on the token stream, before the recursive parser
  and Python's compiler ever see a deeply nested template.

Guards are installed by rewriting the template AST before code generation:
every ``for`` iterable goes through ``_sp_iter`` and every ``~`` result through
``_sp_size``, both plain filters, so no Jinja internals are patched.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import islice
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.lexer import (
    TOKEN_BLOCK_BEGIN,
    TOKEN_BLOCK_END,
    TOKEN_DATA,
    TOKEN_NAME,
    TOKEN_OPERATOR,
    TOKEN_VARIABLE_BEGIN,
    TOKEN_VARIABLE_END,
    TOKEN_WHITESPACE,
)
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_eval_context
from jinja2.visitor import NodeTransformer
from markupsafe import escape

try:  # the C escaper markupsafe's escape() wraps; private, so keep a fallback
    from markupsafe import _escape_inner
except ImportError:  # pragma: no cover - older or future markupsafe

    def _escape_inner(value: str, /) -> str:
        return str(escape(value))

from templates_registry.rendering.errors import RenderError, RenderLimitError


@dataclass(frozen=True)
class Limits:
    max_source_bytes: int = 512 * 1024
    max_output_bytes: int = 1024 * 1024
    max_iterations: int = 10_000
    max_calls: int = 10_000
    timeout_ms: int = 250
    max_nesting: int = 12

    @classmethod
    def from_settings(cls) -> Limits:
        from django.conf import settings

        cfg = settings.SENDPLANE_RENDER
        return cls(
            max_source_bytes=cfg["MAX_SOURCE_BYTES"],
            max_output_bytes=cfg["MAX_OUTPUT_BYTES"],
            max_iterations=cfg["MAX_ITERATIONS"],
            max_calls=cfg["MAX_CALLS"],
            timeout_ms=cfg["TIMEOUT_MS"],
            max_nesting=cfg["MAX_NESTING"],
        )


class _Budget:
    """What one render may still spend. Lives in a context variable."""

    __slots__ = ("deadline", "iterations", "calls", "limits", "alloc")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout_ms / 1000
        self.iterations = limits.max_iterations
        self.calls = limits.max_calls
        self.alloc = ALLOC_FACTOR * limits.max_output_bytes

    def spend(self, units: int, what: str) -> None:
        """Take ``units`` (characters, or 8 a list slot) from the allocation budget, before allocating them."""
        self.alloc -= units
        if self.alloc < 0:
            total = ALLOC_FACTOR * self.limits.max_output_bytes
            raise RenderLimitError(f"{what} would take the render past {total} characters of values built")

    def step(self) -> None:
        self.iterations -= 1
        if self.iterations < 0:
            raise RenderLimitError(f"more than {self.limits.max_iterations} loop iterations")
        if self.iterations & 63 == 0:
            self.check_time()

    def call(self) -> None:
        self.calls -= 1
        if self.calls < 0:
            raise RenderLimitError(f"more than {self.limits.max_calls} calls")
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderLimitError(f"render took longer than {self.limits.timeout_ms} ms")


# What one render may build, summed over every value it makes, as a multiple of the output cap.
ALLOC_FACTOR = 8
_SLOT = 8  # a list slot is a pointer: charged as 8 characters
_SPLIT = 16  # splitting text into words or lines: a str object per piece, charged per input character
_BIG = 4096  # below this, a string is too small to bother measuring exactly

_budget: ContextVar[_Budget | None] = ContextVar("sendplane_render_budget", default=None)

_REFUSED_STATEMENTS: dict[type[nodes.Node], str] = {
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.FilterBlock: "{% filter %}",
    nodes.AssignBlock: "{% set %}...{% endset %}",
    nodes.Extends: "{% extends %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.Block: "{% block %}",
    nodes.EvalContextModifier: "{% autoescape %}",
    nodes.ScopedEvalContextModifier: "{% autoescape %}",
    nodes.ExprStmt: "{% do %}",
}
_ALLOWED_FILTERS = frozenset(
    "abs attr batch capitalize center count d default dictsort e escape filesizeformat first float "
    "groupby indent int items join last length list lower map max min reject rejectattr replace "
    "reverse round select selectattr slice sort string striptags sum title tojson trim truncate "
    "unique upper urlencode urlize wordcount wordwrap xmlattr".split()
)
_OPENERS = {"for", "if", "with", "macro", "call", "filter", "block", "autoescape", "raw", "trans"}
_IGNORED_TOKENS = {TOKEN_WHITESPACE, TOKEN_DATA}
_TAG_BOUNDARIES = {TOKEN_BLOCK_BEGIN, TOKEN_BLOCK_END, TOKEN_VARIABLE_BEGIN, TOKEN_VARIABLE_END}
_MAX_TAG_TOKENS = 2000
_MAX_INT_BITS = 4096


def _limits() -> Limits:
    budget = _budget.get()
    return budget.limits if budget is not None else Limits()


def _size_of(value: Any) -> int:
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        return len(value)
    return 0


def _check_size(value: Any) -> Any:
    limit = _limits().max_output_bytes
    if _size_of(value) > limit:
        raise RenderLimitError(f"a value grew past {limit} characters")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _MAX_INT_BITS:
        raise RenderLimitError("a number grew too large")
    return value


def _charged(value: Any, *sources: Any) -> Any:
    """``_check_size``, then charge a new value (not one of ``sources`` handed back) to the budget."""
    _check_size(value)
    budget = _budget.get()
    if budget is not None and value.__class__ not in _SCALARS and not any(value is s for s in sources):
        size = _size_of(value)
        budget.spend(size if isinstance(value, (str, bytes)) else size * _SLOT, "building values")
    return value


_SCALARS = frozenset({int, float, bool, type(None)})


def _spend(units: int, what: str) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.spend(units, what)


def _allow(size: int, what: str) -> None:
    """Refuse ``what`` before it runs when its result (``size`` characters) would pass the value cap."""
    limit = _limits().max_output_bytes
    if size > limit:
        raise RenderLimitError(f"{what} would make a value of more than {limit} characters")
    _spend(size, what)


def _text_len(value: Any, limit: int, depth: int = 0) -> int:
    """An upper bound on ``len(str(value))``, given up on (returned as is) once it passes ``limit``.

    A list holding the same 1 MB string a thousand times is small in memory and a GB once printed,
    so containers are walked, every reference counted; the walk stops as soon as the bound passes
    ``limit``, so it costs at most O(limit) however the value is shared.
    """
    if isinstance(value, str):
        return len(value)
    return _repr_len(value, limit, depth)


def _repr_len(value: Any, limit: int, depth: int) -> int:
    cls = value.__class__
    if cls in _SCALARS:
        return value.bit_length() // 3 + 2 if cls is int else 32
    if isinstance(value, str):  # repr() escapes: \\, \x00 (4), \U0001f600 (10)
        n = len(value)
        return 2 * n + 2 if n > _BIG and value.isprintable() else 10 * n + 2
    if isinstance(value, (bytes, bytearray)):
        return 4 * len(value) + 3
    if depth > 32:
        return limit + 1
    if isinstance(value, Namespace):
        value = object.__getattribute__(value, "_Namespace__attrs")
    if isinstance(value, Mapping):
        items: Iterable[Any] = (x for pair in value.items() for x in pair)
    elif isinstance(value, (list, tuple, set, frozenset)) or type(value).__name__.startswith("dict_"):
        items = value
    else:  # generators, range, loop objects, callables: a short repr
        return 200
    total = 16
    for item in items:
        total += _repr_len(item, limit, depth + 1) + 4
        if total > limit:
            break
    return total


def _escaped_len(value: str) -> int:
    """``len(escape(value))`` for a str: & and quotes grow by 4, < and > by 3."""
    if len(value) <= _BIG:
        return 5 * len(value)
    count = value.count
    return len(value) + 4 * (count("&") + count('"') + count("'")) + 3 * (count("<") + count(">"))


def _text_arg(value: Any, what: str, factor: int = 1) -> None:
    """A filter is about to turn ``value`` into text (and may grow it ``factor`` times): pay for it first."""
    if value.__class__ is not str:
        budget = _budget.get()
        remaining = budget.alloc if budget is not None else ALLOC_FACTOR * _limits().max_output_bytes
        _spend(factor * _text_len(value, remaining), what)
    elif factor > 1 and len(value) > _BIG:
        _spend(factor * len(value), what)


def _check_int_args(args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    """Width and count arguments (``center(10**9)``, ``ljust``) are capped before the call allocates."""
    limit = _limits().max_output_bytes
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limit:
            raise RenderLimitError(f"argument {value} is larger than the limit of {limit}")


def _guard_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _budget.get()
    for item in iterable:
        if budget is not None:
            budget.step()
        yield item


def _guard_filter(func: Callable[..., Any], name: str = "") -> Callable[..., Any]:
    skip = 2 if getattr(func, "jinja_pass_arg", None) is not None else 1  # context/env arg, then the value
    pre = _FILTER_PRECHECKS.get(name)

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja still passes the context
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _check_int_args(args[skip:], kwargs)
        budget = _budget.get()
        if budget is not None:
            budget.call()
        if pre is not None and len(args) >= skip:
            value = pre(args[0] if skip == 2 else None, *args[skip - 1 :], **kwargs)
            args = (*args[: skip - 1], value, *args[skip:])
        result = func(*args, **kwargs)
        if name in _LAZY_FILTERS:
            return _charged_iter(result)
        return _charged(result, *args[skip - 1 : skip])

    return guarded


def _charged_iter(items: Iterable[Any]) -> Iterator[Any]:
    """``batch`` and ``slice`` yield new lists: each is charged as it is made."""
    for item in items:
        _spend((_size_of(item) + 8) * _SLOT, "batching")
        yield item


def _autoescape(passed: Any) -> bool:
    return bool(getattr(passed, "autoescape", False))


def _as_text(value: Any, autoescape: bool, what: str) -> str:
    """``value`` as the text a filter would see (escaped when autoescaping), paid for before it is made."""
    if autoescape and not hasattr(value, "__html__"):
        _text_arg(value, what, 5)
        return escape(value)
    _text_arg(value, what)
    return value if isinstance(value, str) else str(value)


def _replace_size(s: str, old: str, new: str, count: int) -> int:
    hits = s.count(old) if old else len(s) + 1
    if count >= 0:
        hits = min(hits, count)
    return len(s) + hits * (len(new) - len(old))


def _pre_replace(passed: Any, s: Any, old: Any = "", new: Any = "", count: Any = None) -> Any:
    # the same conversions as Jinja's do_replace, paid for first; it redoes them as no-ops
    if _autoescape(passed):
        escape_s = hasattr(old, "__html__") or hasattr(new, "__html__") and not hasattr(s, "__html__")
        s = _as_text(s, escape_s, "replace")
    else:
        s = _as_text(s, False, "replace")
        s = str.__str__(s)
    markup = hasattr(s, "__html__")
    old, new = _as_text(old, markup, "replace"), _as_text(new, markup, "replace")
    _allow(_replace_size(s, old, new, -1 if count is None else int(count)), "replace")
    return s


def _pre_join(passed: Any, value: Any, d: Any = "", attribute: Any = None) -> Any:
    items = value = list(value)
    if attribute is not None:  # join maps the attribute again on the list returned
        from jinja2.filters import make_attrgetter

        getter = make_attrgetter(passed.environment, attribute)
        items = [getter(item) for item in items]
    budget = _budget.get()
    remaining = budget.alloc if budget is not None else ALLOC_FACTOR * _limits().max_output_bytes
    factor = 5 if _autoescape(passed) else 1
    size = _text_len(d, remaining) * factor * max(len(items) - 1, 0)
    for item in items:
        if size > remaining:
            break
        size += factor * _text_len(item, remaining)
    _allow(size, "join")
    return value


def _pre_indent(passed: Any, s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> Any:
    s = _as_text(s, False, "indent")
    w = len(width) if isinstance(width, str) else max(int(width), 0)
    lines = len(s) + 1 if len(s) <= _BIG else sum(map(s.count, _LINE_BREAKS)) + 1
    _spend(lines * _SLOT, "indent")
    _allow(len(s) + 1 + w * (lines + 1), "indent")
    return s


_LINE_BREAKS = ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _pre_center(passed: Any, value: Any, width: Any = 80) -> Any:
    value = _as_text(value, False, "center")
    _allow(max(len(value), int(width)), "center")
    return value


def _pre_wordwrap(
    passed: Any, s: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None, *a: Any, **k: Any
) -> Any:
    s = _as_text(s, False, "wordwrap")
    sep = len(wrapstring) if isinstance(wrapstring, str) else _text_len(wrapstring, 1 << 30) if wrapstring else 1
    _spend(_SPLIT * len(s) + (len(s) + 1) * sep, "wordwrap")
    return s


def _pre_urlize(
    passed: Any, value: Any, trim_url_limit: Any = None, nofollow: Any = False, target: Any = None, rel: Any = None,
    *a: Any, **k: Any,
) -> Any:
    text = _as_text(value, False, "urlize")
    links = sum(map(text.count, ".@:")) if len(text) > _BIG else len(text)
    per_link = 80 + _text_len(rel or "", 1 << 30) + 5 * _text_len(target or "", 1 << 30)
    _spend((_SPLIT + 10) * len(text) + links * per_link, "urlize")
    return value


def _pre_text(factor: int, split: bool = False) -> Callable[..., Any]:
    """Filters that turn their value into text of at most ``factor`` times its size."""

    def pre(passed: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        _text_arg(value, "a filter", factor)
        if split and isinstance(value, str):
            _spend(_SPLIT * len(value), "splitting text")
        return value

    return pre


def _pre_items_text(passed: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
    """sort, unique, min, max, groupby, dictsort lower-case every item at once (case_sensitive=False)."""
    if not isinstance(value, (list, tuple, dict, str)):
        value = list(value)
    budget = _budget.get()
    remaining = budget.alloc if budget is not None else ALLOC_FACTOR * _limits().max_output_bytes
    _spend(_text_len(value, remaining) + _size_of(value) * _SLOT, "sorting")
    return value


def _pre_sum(passed: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    items = list(iterable)
    if attribute is None and not isinstance(start, (int, float)) or any(not isinstance(i, (int, float)) for i in items):
        _allow(_size_of(start) + sum(map(_size_of, items)), "sum")
        _spend(_SLOT * (_size_of(start) + sum(map(_size_of, items))), "sum")
    return items


_FILTER_PRECHECKS: dict[str, Callable[..., Any]] = {
    "replace": _pre_replace,
    "join": _pre_join,
    "indent": _pre_indent,
    "center": _pre_center,
    "wordwrap": _pre_wordwrap,
    "urlize": _pre_urlize,
    "sum": _pre_sum,
    **dict.fromkeys(("sort", "unique", "min", "max", "groupby", "dictsort"), _pre_items_text),
    **dict.fromkeys(("e", "escape", "xmlattr"), _pre_text(5)),
    **dict.fromkeys(("string", "lower", "trim", "truncate", "capitalize"), _pre_text(1)),
    "upper": _pre_text(3),
    "tojson": _pre_text(12),
    "urlencode": _pre_text(12),
    **dict.fromkeys(("title", "striptags", "wordcount"), _pre_text(1, split=True)),
}
_LAZY_FILTERS = frozenset({"batch", "slice"})


class _GuardTransformer(NodeTransformer):
    """Route loop iterables and ``~`` results through guard filters; refuse what is not allowed."""

    def generic_visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        for node_type, what in _REFUSED_STATEMENTS.items():
            if type(node) is node_type:
                raise RenderError(f"{what} is not allowed in templates", line=node.lineno)
        return super().generic_visit(node, *args, **kwargs)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        if node.recursive:
            raise RenderError("{% for ... recursive %} is not allowed in templates", line=node.lineno)
        node = self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_sp_iter", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        pieces = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(pieces, "_sp_concat", [], [], None, None, lineno=node.lineno)


@pass_eval_context
def _concat(eval_ctx: Any, pieces: list[Any]) -> str:
    """``a ~ b ~ c``: Jinja's own join, once the size of the result is known to fit."""
    budget = _budget.get()
    remaining = budget.alloc if budget is not None else ALLOC_FACTOR * _limits().max_output_bytes
    size = 0
    for piece in pieces:
        size += _text_len(piece, remaining)
        if size > remaining:
            break
    if eval_ctx.autoescape and any(hasattr(p, "__html__") for p in pieces):
        size *= 5  # markup_join escapes the other pieces
    _allow(size, "~")
    return _check_size((markup_join if eval_ctx.autoescape else str_join)(pieces))


def _escape_to_str(value: Any) -> str:
    """``escape`` for the output stream: the same escaping, without a Markup object per value.

    Building a Markup costs ~0.3 us; a 50 KB newsletter outputs ~100 values.
    """
    cls = value.__class__
    if cls is str:
        if len(value) > _BIG:  # 128 values are escaped before the output cap is looked at
            _allow(_escaped_len(value), "output")
        return _escape_inner(value)
    if cls is int or cls is float:
        return str(value)
    _text_arg(value, "output", 1 if hasattr(value, "__html__") else 5)
    return str(escape(value))


def _to_str(value: Any) -> str:
    """``str`` for the plain-text output stream, paid for first when the value is not text already."""
    if isinstance(value, str):
        return value
    _text_arg(value, "output")
    return str(value)


class _GuardedCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        _GuardTransformer().visit(node)
        super().visit_Template(node, frame)

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        # Output only ever reaches the top-level stream (block capture is refused),
        # where a plain str is all that is needed.
        if frame.eval_ctx.autoescape and not frame.eval_ctx.volatile:
            self.write("environment.sp_escape(")
            if finalize.src is not None:
                self.write(finalize.src)
            return
        if not frame.eval_ctx.autoescape and not frame.eval_ctx.volatile:
            self.write("environment.sp_str(")
            if finalize.src is not None:
                self.write(finalize.src)
            return
        super()._output_child_pre(node, frame, finalize)


class SendplaneSandbox(ImmutableSandboxedEnvironment):
    """The only Jinja environment Sendplane renders with."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, autoescape: bool) -> None:
        # Plain text (subjects, text parts) drops the newline after a block tag
        # and the indentation before it, so loops leave no blank lines behind.
        super().__init__(
            autoescape=autoescape,
            undefined=StrictUndefined,
            cache_size=0,
            auto_reload=False,
            trim_blocks=not autoescape,
            lstrip_blocks=not autoescape,
        )
        self.sp_escape = _escape_to_str
        self.sp_str = _to_str
        self.globals = {"range": self._range, "dict": dict, "namespace": Namespace}
        self.filters = {name: _guard_filter(f, name) for name, f in self.filters.items() if name in _ALLOWED_FILTERS}
        self.filters["_sp_iter"] = _guard_iter
        self.filters["_sp_size"] = _check_size
        self.filters["_sp_concat"] = _concat

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Context values are JSON, so a dict key wins over a dict method (``item.name``).

        Jinja's default tries the attribute first and catches AttributeError,
        which costs a microsecond per lookup on the per-recipient path.
        """
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        _refuse_str_format(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _refuse_str_format(obj, argument)
        return super().getitem(obj, argument)

    @staticmethod
    def _range(*args: int) -> range:
        rng = range(*args)
        limit = _limits().max_iterations
        if len(rng) > limit:
            raise RenderLimitError(f"range of {len(rng)} items is larger than the limit of {limit}")
        return rng

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, (str, bytes, bytearray)):
            raise SecurityError("'%' string formatting is not allowed in templates")
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise RenderLimitError("exponent larger than 64")
        if operator in {"*", "+"}:
            _precheck_growth(operator, left, right)
        return _charged(self.binop_table[operator](left, right), left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_int_args(args, kwargs)
        budget = _budget.get()
        if budget is not None:
            budget.call()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes, bytearray)):
            pre = _METHOD_PRECHECKS.get(getattr(__obj, "__name__", ""))
            if pre is not None:
                args = pre(owner, *args, **kwargs) or args
        return _charged(super().call(__context, __obj, *args, **kwargs), owner)

    def compile_checked(self, source: str) -> Template:
        """Compile ``source`` or raise one-line ``RenderError``; nothing deeper leaks."""
        limits = Limits.from_settings()
        if len(source.encode("utf-8")) > limits.max_source_bytes:
            raise RenderLimitError(f"template is larger than {limits.max_source_bytes} bytes")
        check_nesting(self, source, limits.max_nesting)
        try:
            template = self.from_string(source)
        except TemplateSyntaxError as exc:
            raise RenderError(f"Jinja syntax error: {exc.message}", line=exc.lineno) from None
        except (RecursionError, MemoryError, SyntaxError):
            raise RenderLimitError("template nests too deeply to compile") from None
        return template


def _refuse_str_format(obj: Any, name: Any) -> None:
    """str.format reaches attributes through its format spec; templates have filters instead."""
    if isinstance(obj, str) and name in ("format", "format_map"):
        raise SecurityError("str.format is not allowed in templates; use filters")


def _precheck_growth(operator: str, left: Any, right: Any) -> None:
    """Refuse ``"x" * 10**9`` and big-int blow-ups before Python allocates them."""
    limit = _limits().max_output_bytes
    if operator == "*":
        seq, count = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(count, int) and _size_of(seq) and _size_of(seq) * abs(count) > limit:
            raise RenderLimitError(f"repetition would exceed {limit} characters")
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                raise RenderLimitError("a number grew too large")
    elif _size_of(left) + _size_of(right) > limit:
        raise RenderLimitError(f"concatenation would exceed {limit} characters")


def _m_replace(s: Any, old: Any = None, new: Any = None, count: Any = -1, *a: Any, **k: Any) -> None:
    if isinstance(old, type(s)) and isinstance(new, type(s)) and isinstance(count, int):
        _allow(_replace_size(s, old, new, count), "replace()")


def _m_join(sep: Any, iterable: Any = (), *a: Any, **k: Any) -> tuple[Any, ...]:
    items = list(iterable)  # str.join needs str items: their length is their size
    _allow(len(sep) * max(len(items) - 1, 0) + sum(map(_size_of, items)), "join()")
    return (items,)


def _m_pad(s: Any, width: Any = 0, *a: Any, **k: Any) -> None:
    if isinstance(width, int):
        _allow(max(len(s), width), "padding")


def _m_expandtabs(s: Any, tabsize: Any = 8, *a: Any, **k: Any) -> None:
    tabsize = k.get("tabsize", tabsize)
    tab = "\t" if isinstance(s, str) else b"\t"
    if isinstance(tabsize, int):
        _allow(len(s) + s.count(tab) * max(tabsize, 0), "expandtabs()")


def _m_translate(s: Any, table: Any = None, *a: Any, **k: Any) -> None:
    widest = 1
    if isinstance(s, str) and isinstance(table, Mapping):
        widest = max([_text_len(v, 1 << 30) for v in table.values() if isinstance(v, str)], default=1)
    _allow(len(s) * max(widest, 1), "translate()")


def _m_split(s: Any, *a: Any, **k: Any) -> None:
    _spend(_SPLIT * len(s), "splitting text")


def _m_grow(factor: int) -> Callable[..., None]:
    def pre(s: Any, *a: Any, **k: Any) -> None:
        _spend(factor * len(s), "a string method")

    return pre


_METHOD_PRECHECKS: dict[str, Callable[..., Any]] = {
    "replace": _m_replace,
    "join": _m_join,
    **dict.fromkeys(("center", "ljust", "rjust", "zfill"), _m_pad),
    "expandtabs": _m_expandtabs,
    "translate": _m_translate,
    **dict.fromkeys(("split", "rsplit", "splitlines"), _m_split),
    **dict.fromkeys(("upper", "lower", "title", "swapcase", "casefold", "capitalize"), _m_grow(3)),
    "encode": _m_grow(10),
    "hex": _m_grow(3),
}


def check_nesting(env: SendplaneSandbox, source: str, max_depth: int) -> None:
    """Bound block depth, bracket depth and tag length on the raw token stream.

    This runs before Jinja's recursive-descent parser and Python's compiler, so
    a deeply nested or enormous expression is refused in microseconds instead
    of exhausting the stack (or a second of CPU) first.
    """
    blocks = brackets = tag_tokens = 0
    previous = ""
    try:
        for lineno, token, value in env.lex(source):
            if token in _IGNORED_TOKENS:
                continue
            if token == TOKEN_OPERATOR:
                brackets += 1 if value in "([{" else -1 if value in ")]}" else 0
            elif token == TOKEN_NAME and previous == TOKEN_BLOCK_BEGIN:
                blocks += 1 if value in _OPENERS else -1 if value.startswith("end") else 0
            tag_tokens = 0 if token in _TAG_BOUNDARIES else tag_tokens + 1
            if blocks > max_depth or brackets > max_depth * 2:
                raise RenderLimitError(f"template nests deeper than {max_depth} levels", line=lineno)
            if tag_tokens > _MAX_TAG_TOKENS:
                raise RenderLimitError(f"a tag holds more than {_MAX_TAG_TOKENS} tokens", line=lineno)
            previous = token
    except TemplateSyntaxError as exc:
        raise RenderError(f"Jinja syntax error: {exc.message}", line=exc.lineno) from None


def render_limited(template: Template, context: Mapping[str, Any], limits: Limits) -> str:
    """Render under a budget, streaming so the output cap holds before memory is spent.

    Inside ``shared_budget`` all parts of one message draw on one budget.
    """
    return render_prepared(template, with_globals(template.environment, context), limits)


def with_globals(env: Any, context: Mapping[str, Any]) -> dict[str, Any]:
    """The variables a render sees. Merged once per message: new_context() would
    otherwise copy a ChainMap of globals for every part (~10 us each)."""
    return {**env.globals, **context}


def render_prepared(template: Template, variables: dict[str, Any], limits: Limits) -> str:
    return "".join(render_prepared_parts(template, variables, limits))


def render_prepared_parts(template: Template, variables: dict[str, Any], limits: Limits) -> list[str]:
    """The output as the template yields it: its constant text as the same string objects every time
    (the MIME encoder caches their encoding), each value between them on its own."""
    budget = _budget.get()
    token = None
    if budget is None:
        budget = _Budget(limits)
        token = _budget.set(budget)
    try:
        return _render_stream(template, variables, limits.max_output_bytes, budget)
    except RenderError:
        raise
    except Exception as exc:  # any template-caused error becomes one line, never a traceback
        raise _as_render_error(exc) from None
    finally:
        if token is not None:
            _budget.reset(token)


class shared_budget:  # noqa: N801 - used as a context manager, reads like one
    """One budget for every part (subject, HTML, text...) of one recipient's message."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def __enter__(self) -> None:
        self._token = _budget.set(_Budget(self.limits))

    def __exit__(self, *exc: object) -> None:
        _budget.reset(self._token)


_SLICE = 128


def _render_stream(template: Template, variables: dict[str, Any], max_output: int, budget: _Budget) -> list[str]:
    """Pull the output a slice of chunks at a time, checking size and time between slices.

    Checking every chunk costs ~0.1 us each (a 50 KB newsletter yields ~120);
    a slice holds at most 128 values each capped by the sandbox, so the output
    cap still holds long before memory is at risk.
    """
    parts: list[str] = []
    size = 0
    try:
        stream = template.root_render_func(template.new_context(variables, shared=True))
        while True:
            chunks = list(islice(stream, _SLICE))
            size += sum(map(len, chunks))
            if size > max_output:
                raise RenderLimitError(f"output is larger than {max_output} characters")
            parts += chunks
            if len(chunks) < _SLICE:  # the stream is exhausted ("" chunks still count)
                break
            budget.check_time()
    except RenderError:
        raise
    except Exception:
        template.environment.handle_exception()  # rewrites the traceback to template lines
    return parts


def _as_render_error(exc: BaseException) -> RenderError:
    line = _template_line(exc.__traceback__)
    if isinstance(exc, UndefinedError):
        return RenderError(f"undefined variable: {exc.message}", line=line)
    if isinstance(exc, SecurityError):
        return RenderError(f"sandbox violation: {exc.message}", line=line)
    if isinstance(exc, RecursionError):
        return RenderLimitError("template recursion too deep", line=line)
    if isinstance(exc, MemoryError):
        return RenderLimitError("template used too much memory", line=line)
    if isinstance(exc, TemplateError):
        return RenderError(f"template error: {exc.message}", line=line)
    return RenderError(f"template error: {type(exc).__name__}: {exc}", line=line)


def _template_line(tb: TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@functools.lru_cache(maxsize=2)
def environment(*, autoescape: bool) -> SendplaneSandbox:
    """One HTML environment (autoescaped) and one text environment per process."""
    return SendplaneSandbox(autoescape=autoescape)

