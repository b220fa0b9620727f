"""Jinja's immutable sandbox, with the limits an AI-written template needs.

Jinja's sandbox already blocks unsafe attributes (``__class__``, ``__mro__``,
``__globals__``...) and mutation of lists and dicts. It does not bound time,
memory or loop counts, so this module adds, per render:

* a budget of loop iterations and calls (nested loops multiply, so iterations
  are summed over the whole render), and a wall-clock deadline checked at each
  loop step, call, filter and output chunk;
* a size cap on every intermediate string or collection (string repetition,
  ``+``, ``~``, filter and method results) and on the streamed output;
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
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
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

    __slots__ = ("deadline", "iterations", "calls", "limits")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout_ms / 1000
        self.iterations = limits.max_iterations
        self.calls = limits.max_calls

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


def _guard_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 2 if getattr(func, "jinja_pass_arg", None) is not None else 1  # context/env arg, then the value

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja still passes the context
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _check_int_args(args[skip:], kwargs)
        budget = _budget.get()
        if budget is not None:
            budget.call()
        return _check_size(func(*args, **kwargs))

    return guarded


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
        return nodes.Filter(node, "_sp_size", [], [], None, None, lineno=node.lineno)


def _escape_to_str(value: Any) -> str:
    """``escape`` for the output stream: the same escaping, without a Markup object per value.

    Building a Markup costs ~0.3 us; a 50 KB newsletter outputs ~100 values.
    """
    cls = value.__class__
    if cls is str:
        return _escape_inner(value)
    if cls is int or cls is float:
        return str(value)
    return str(escape(value))


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
        self.globals = {"range": self._range, "dict": dict, "namespace": Namespace}
        self.filters = {name: _guard_filter(f) for name, f in self.filters.items() if name in _ALLOWED_FILTERS}
        self.filters["_sp_iter"] = _guard_iter
        self.filters["_sp_size"] = _check_size

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
        if operator == "%" and isinstance(left, str):
            raise SecurityError("'%' string formatting is not allowed in templates")
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise RenderLimitError("exponent larger than 64")
        if operator in {"*", "+"}:
            _precheck_growth(operator, left, right)
        return _check_size(self.binop_table[operator](left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_int_args(args, kwargs)
        budget = _budget.get()
        if budget is not None:
            budget.call()
        return _check_size(super().call(__context, __obj, *args, **kwargs))

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

