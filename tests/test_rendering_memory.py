"""Issue 15, class 3: no template within the limits can make one render take hundreds of MB.

Every attack below is replayed through the public render path (``compile_version(...).render``) and
must be refused with a one-line ``RenderLimitError`` (or ``RenderError``) while tracemalloc's peak
stays under ``BOUND``. Before the fix each of them peaked between ~40 MB and ~1 GB (figures in
ops/security.md), because the output cap and the per-value cap were checked after the operation had
allocated its result.

BOUND is 32 x the output cap (1 MiB by default) plus 8 MB. The sandbox lets one message's render
build at most ``ALLOC_FACTOR (8) x max_output_bytes`` units of strings and containers (a character,
or 8 a list slot), and a str holds at most 4 bytes a character, so what it can have alive is at most
32 x the cap in bytes (the attacks, refused, peak at 0.1-8 MB); the 8 MB cover Jinja's own frames,
the compiled template, MJML's output around the Jinja values and the pipeline's joined copies of an output under the cap.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from templates_registry.rendering import RenderError, VersionContent, compile_version

CAP = 1024 * 1024
BOUND = 32 * CAP + 8 * 1024 * 1024
EMPTY_MJML = "<mjml><mj-body></mj-body></mjml>"


def mjml_with(jinja: str) -> str:
    return f"<mjml><mj-body><mj-section><mj-column><mj-text>{jinja}</mj-text></mj-column></mj-section></mj-body></mjml>"


def render_text(jinja: str) -> Any:
    return compile_version(VersionContent(mjml_body=EMPTY_MJML, subject="s", text_body=jinja)).render({})


def render_html(jinja: str) -> Any:
    return compile_version(VersionContent(mjml_body=mjml_with(jinja), subject="s")).render({})


def traced_peak(func: Callable[[], Any]) -> tuple[int, BaseException | None]:
    """Peak bytes traced while ``func`` runs, and what it raised."""
    gc.collect()
    tracemalloc.start()
    raised: BaseException | None = None
    try:
        func()
    except Exception as exc:  # noqa: BLE001 - returned to the caller, which asserts on it
        raised = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, raised


BIG = '{% set s = "x" * 1000000 %}'
# Each one produced or kept alive hundreds of MB before it was refused (or was not refused at all).
TEXT_ATTACKS = {
    "replace-filter": '{{ ("x" * 1000000)|replace("x", "y" * 400) }}',
    "replace-method": '{{ ("x" * 1000000).replace("x", "y" * 400) }}',
    "join-filter": '{{ range(400)|join("x" * 1000000) }}',
    "join-method": '{{ ("x" * 1000000).join(range(300)|map("string")) }}',
    "indent-lines": '{{ ("\\n" * 200000)|indent(1000, blank=true) }}',
    "indent-string-width": '{{ ("\\n" * 200000)|indent("x" * 1000, blank=true) }}',
    "center-accumulated": (
        "{% set ns = namespace(l=[]) %}{% for i in range(300) %}"
        "{% set ns.l = ns.l + [i|string|center(1000000)] %}{% endfor %}{{ ns.l|length }}"
    ),
    "concat-chain": BIG + "{{ (" + " ~ ".join(["s"] * 300) + ")|length }}",
    "list-repetition-printed": BIG + "{{ [s] * 300 }}",
    "list-string-filter": BIG + "{{ ([s] * 300)|string|length }}",
    "nested-lists-printed": BIG + "{{ [[s] * 20] * 20 }}",
    "list-concat-printed": BIG + "{% set l = [s] * 20 %}{{ l ~ l ~ l ~ l ~ l ~ l ~ l ~ l ~ l ~ l ~ l ~ l ~ l ~ l }}",
    "join-of-lists": BIG + "{{ ([[s] * 20] * 20)|join }}",
    "wordwrap-wrapstring": '{{ ("x " * 500000)|wordwrap(1, wrapstring="y" * 400) }}',
    "urlize-rel": '{{ ("www.a.com " * 2000)|urlize(rel="r" * 100000) }}',
    "expandtabs": '{{ ("\\t" * 100000).expandtabs(1000) }}',
    "translate-table": '{{ ("x" * 100000).translate({120: "y" * 1000}) }}',
    "bytes-percent-format": '{{ ("%1000000d" * 300).encode() % ((1,) * 300) }}',
    "sort-ignore-case": BIG + "{{ ([s] * 300)|sort|length }}",
    "tojson-shared-refs": BIG + "{{ ([s] * 300)|tojson|length }}",
    "urlencode-shared-refs": BIG + "{{ {'a': [s] * 300}|urlencode|length }}",
    "sum-of-lists": "{{ ([[1] * 1000000] * 40)|sum(start=[])|length }}",
    "batch-list": '{{ ("x" * 1000000)|batch(1)|list|length }}',
    "split-method": '{{ ("ab " * 333333).split()|length }}',
}
HTML_ATTACKS = {
    # each escaped value is 5 MB; 128 of them were escaped before the output cap was looked at
    "escaped-output-in-a-loop": '{% set s = "\\"" * 1000000 %}{% for i in range(120) %}{{ s }}{% endfor %}',
    "upper-filter-in-a-loop": '{% for i in range(300) %}{{ ("x" * 1000000)|upper }}{% endfor %}',
}


@pytest.mark.parametrize("jinja", TEXT_ATTACKS.values(), ids=TEXT_ATTACKS.keys())
def test_text_attack_is_refused_in_bounded_memory(jinja: str) -> None:
    peak, raised = traced_peak(lambda: render_text(jinja))
    assert isinstance(raised, RenderError), f"not refused: {raised!r}"
    assert "\n" not in str(raised)
    assert peak < BOUND, f"peak {peak / 1e6:.0f} MB"


@pytest.mark.parametrize("jinja", HTML_ATTACKS.values(), ids=HTML_ATTACKS.keys())
def test_html_attack_is_refused_in_bounded_memory(jinja: str) -> None:
    peak, raised = traced_peak(lambda: render_html(jinja))
    assert isinstance(raised, RenderError), f"not refused: {raised!r}"
    assert "\n" not in str(raised)
    assert peak < BOUND, f"peak {peak / 1e6:.0f} MB"


@pytest.mark.parametrize(
    ("jinja", "expected"),
    [
        ('{{ "a-b-c"|replace("-", "+") }}', "a+b+c"),
        ('{{ "abc".replace("b", "xx") }}', "axxc"),
        ("{{ [1, 2, 3]|join(', ') }}", "1, 2, 3"),
        ('{{ "-".join(["a", "b"]) }}', "a-b"),
        ('{{ "a\nb"|indent(2) }}', "a\n  b"),
        ('{{ "a\n\nb"|indent("> ", first=true, blank=true) }}', "> a\n> \n> b"),
        ('{{ "ab"|center(6) }}', "  ab  "),
        ("{{ 'x' ~ 1 ~ [1, 'a'] }}", "x1[1, 'a']"),
        ('{{ "a b c d"|wordwrap(3) }}', "a b\nc d"),
        ('{{ "see www.a.co now"|urlize }}', 'see <a href="https://www.a.co" rel="noopener">www.a.co</a> now'),
        ('{{ "a\tb".expandtabs(4) }}', "a   b"),
        ('{{ ["b", "A"]|sort|join }}', "Ab"),
        ("{{ [[1], [2]]|sum(start=[]) }}", "[1, 2]"),
        ("{{ {'a': [1, 2]}|tojson }}", '{"a": [1, 2]}'),
        ("{{ ('ab' * 3)|batch(4)|list }}", "[['a', 'b', 'a', 'b'], ['a', 'b']]"),
        ("{{ namespace(a=1).a }}", "1"),
    ],
)
def test_normal_templates_render_as_before(jinja: str, expected: str) -> None:
    assert render_text(jinja).text == expected


def test_a_large_but_legitimate_render_still_succeeds() -> None:
    """An output close to the cap, built from filters, is within the allocation budget."""
    jinja = '{% for i in range(200) %}{{ ("item %d" ~ i)|center(4000)|replace(" ", ".")|upper }}{% endfor %}'
    peak, raised = traced_peak(lambda: render_html(jinja))
    assert raised is None, raised
    assert peak < BOUND


# --- properties -------------------------------------------------------------------------------------

SMALL_CAP = 64 * 1024
SMALL_BOUND = 32 * SMALL_CAP + 8 * 1024 * 1024
SMALL_LIMITS = {
    "MAX_SOURCE_BYTES": 512 * 1024, "MAX_OUTPUT_BYTES": SMALL_CAP, "MAX_ITERATIONS": 10_000, "MAX_CALLS": 10_000,
    "TIMEOUT_MS": 2000, "MAX_NESTING": 12,
}

texts = st.sampled_from(['"x"', '"\\n"', '"\\t"', '"a.co "', '"<&>"', '"é"', '"\\U0001F600"', '" "', '"ab cd "'])
numbers = st.sampled_from(["1", "3", "40", "1000", "60000", "100000"])


@st.composite
def expressions(draw: Any, depth: int = 0) -> str:
    """A string-valued expression composing the amplifying operations over large literals."""
    if depth >= 3 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from([f"({draw(texts)} * {draw(numbers)})", draw(texts), "s", "v"]))
    a = draw(expressions(depth + 1))
    b = draw(expressions(depth + 1))
    n = draw(numbers)
    return draw(
        st.sampled_from(
            [
                f"({a}|replace({draw(texts)}, {b}))",
                f"({a}.replace({draw(texts)}, {b}))",
                f"(range({n})|join({b}))",
                f"({a}|indent({n}, blank=true))",
                f"({a}|indent({b}, first=true))",
                f"({a}|center({n}))",
                f"({a} ~ {b})",
                f"({a} + {b})",
                f"({a} * {n})",
                f"({a}|wordwrap(1, wrapstring={b}))",
                f"({a}|urlize(rel={b}))",
                f"({a}.expandtabs({n}))",
                f"({a}.ljust({n}))",
                f"({a}|upper)",
                f"({a}|e)",
                f"(([{a}] * {n})|join)",
                f"(([{a}] * {n})|string)",
                f"(([{a}] * {n})|tojson)",
                f"(([{a}] * {n})|sort|first)",
                f"({b}.join([{a}, {a}, {a}]))",
                f"({a}|truncate({n}))",
                f"({a}|title)",
                f"({a}|striptags)",
            ]
        )
    )


@st.composite
def templates(draw: Any) -> str:
    expr = draw(expressions())
    body = draw(
        st.sampled_from(
            [
                "{{ %s }}",
                "{%% for i in range(%s) %%}{{ X }}{%% endfor %%}" % draw(numbers),
                "{%% for i in range(%s) %%}{%% set ns.v = ns.v ~ X %%}{%% endfor %%}{{ ns.v|length }}" % draw(numbers),
                "{%% for i in range(%s) %%}{%% set ns.l = ns.l + [X] %%}{%% endfor %%}{{ ns.l|length }}" % draw(numbers),
                "{%% for i in range(30) %%}{%% for j in range(30) %%}{{ X|length }}{%% endfor %%}{%% endfor %%}",
            ]
        )
    ).replace("X", expr).replace("%s", expr)
    return '{% set s = "y" * 50000 %}{% set v = "<é\\t>" * 9000 %}{% set ns = namespace(v="", l=[]) %}' + body


@override_settings(SENDPLANE_RENDER=SMALL_LIMITS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=templates(), html=st.booleans())
def test_any_template_renders_in_bounded_memory(source: str, html: bool) -> None:
    def attempt() -> Any:
        return render_html(source) if html else render_text(source)

    peak, raised = traced_peak(attempt)
    assert raised is None or isinstance(raised, RenderError), repr(raised)
    if raised is None:
        message = attempt()
        assert len(message.html if html else message.text) <= SMALL_CAP + 4096
    else:
        assert "\n" not in str(raised)
    assert peak < SMALL_BOUND, f"peak {peak / 1e6:.1f} MB"
