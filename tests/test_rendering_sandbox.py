"""The sandbox refuses escapes and runaway templates cleanly, and renders nothing for them."""

from __future__ import annotations

import pytest
from django.test import override_settings

from templates_registry.rendering import RenderError, RenderLimitError, VersionContent, compile_version

ESCAPES = {
    "class-mro-subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler-globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "lipsum-globals": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "joiner": "{{ joiner.__init__.__globals__ }}",
    "str-format": "{{ '{0.__class__.__mro__}'.format(1) }}",
    "str-format-map": "{{ '{a}'.format_map({'a': 1}) }}",
    "attr-chain": "{{ ''|attr('__class__')|attr('__mro__') }}",
    "attr-globals": "{{ (range|attr('__init__'))|attr('__globals__') }}",
    "percent-format": "{{ '%s' % 1 }}",
    "self": "{{ self.__init__.__globals__ }}",
    "request-config": "{{ config.items() }}",
    "mutate-list": "{% set l = [1] %}{{ l.append(2) }}",
    "safe-filter": "{{ '<script>'|safe }}",
    "include": "{% include '/etc/passwd' %}",
    "import": "{% import 'x' as y %}",
    "extends": "{% extends 'base' %}",
    "macro": "{% macro m() %}x{% endmacro %}{{ m() }}",
    "autoescape-off": "{% autoescape false %}{{ '<b>' }}{% endautoescape %}",
    "block-set": "{% set x %}a{% endset %}{{ x }}",
    "recursive-loop": "{% for x in [1] recursive %}{{ loop([]) }}{% endfor %}",
}

RUNAWAYS = {
    "huge-range": "{% for i in range(100000000) %}{% endfor %}",
    "huge-range-list": "{{ range(99999999)|list|length }}",
    "string-multiplication": "{{ 'a' * 1000000000 }}",
    "chained-multiplication": "{{ 'ab' * 600000 * 600000 }}",
    "list-multiplication": "{{ [1, 2] * 100000000 }}",
    "nested-loops": "{% for i in range(5000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}",
    "doubling-concat": "{% set ns = namespace(v='x' * 1000) %}{% for i in range(40) %}{% set ns.v = ns.v ~ ns.v %}{% endfor %}",
    "doubling-plus": "{% set ns = namespace(v='x' * 1000) %}{% for i in range(40) %}{% set ns.v = ns.v + ns.v %}{% endfor %}",
    "center-width": "{{ 'a'|center(1000000000) }}",
    "ljust-width": "{{ 'a'.ljust(1000000000) }}",
    "big-power": "{{ 2 ** 100000 }}",
    "big-int-growth": "{% set ns = namespace(v=10**60) %}{% for i in range(200) %}{% set ns.v = ns.v * ns.v %}{% endfor %}",
    "huge-output": "{% for i in range(10000) %}{{ 'y' * 1000 }}{% endfor %}",
    "deep-parentheses": "{{ " + "(" * 500 + "1" + ")" * 500 + " }}",
    "deep-blocks": "{% if 1 %}" * 40 + "x" + "{% endif %}" * 40,
    "deep-unary": "{{ " + "not " * 5000 + "1 }}",
    "long-expression": "{{ " + " + ".join(["1"] * 20000) + " }}",
    "deep-filters": "{{ 'a'" + "|upper" * 3000 + " }}",
}


def mjml_with(jinja: str) -> str:
    return f"<mjml><mj-body><mj-section><mj-column><mj-text>{jinja}</mj-text></mj-column></mj-section></mj-body></mjml>"


def render_text(jinja: str) -> str:
    return compile_version(VersionContent(mjml_body="<mjml><mj-body></mj-body></mjml>", subject="s", text_body=jinja)).render({}).text


@pytest.mark.parametrize("jinja", ESCAPES.values(), ids=ESCAPES.keys())
def test_sandbox_escape_is_refused_in_html(jinja: str) -> None:
    with pytest.raises(RenderError) as refused:
        compile_version(VersionContent(mjml_body=mjml_with(jinja), subject="s")).render({})
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("jinja", ESCAPES.values(), ids=ESCAPES.keys())
def test_sandbox_escape_is_refused_in_text(jinja: str) -> None:
    with pytest.raises(RenderError):
        render_text(jinja)


@pytest.mark.parametrize("jinja", RUNAWAYS.values(), ids=RUNAWAYS.keys())
def test_runaway_template_hits_a_limit(jinja: str) -> None:
    with pytest.raises(RenderLimitError) as refused:
        render_text(jinja)
    assert "\n" not in str(refused.value)


@override_settings(
    SENDPLANE_RENDER={
        "MAX_SOURCE_BYTES": 512 * 1024, "MAX_OUTPUT_BYTES": 1024 * 1024, "MAX_ITERATIONS": 10**9, "MAX_CALLS": 10**9,
        "TIMEOUT_MS": 50, "MAX_NESTING": 12,
    }
)
def test_time_budget_stops_a_slow_render() -> None:
    slow = "{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}"
    with pytest.raises(RenderLimitError, match="longer than 50 ms"):
        render_text(slow)


def test_autoescape_escapes_values_in_html_not_in_text() -> None:
    content = VersionContent(mjml_body=mjml_with("{{ name }}"), subject="{{ name }}", variables={"name": "<b>&"})
    message = compile_version(content).render({"name": "<b>&"})
    assert "&lt;b&gt;&amp;" in message.html and "<b>&" not in message.html
    assert message.subject == "<b>&"
    assert "<b>&" in message.text


def test_dict_keys_read_as_attributes() -> None:
    content = VersionContent(mjml_body="<mjml><mj-body></mj-body></mjml>", subject="s", text_body="{{ user.name }}/{{ user['name'] }}")
    text = compile_version(content).render({"user": {"name": "Ana"}}).text
    assert text == "Ana/Ana"


@pytest.mark.parametrize("value", ["Hi\r\nBcc: victim@example.com", "Hi\nX", "Hi\x00", "Hi\rX"])
def test_header_injection_in_subject_is_refused(value: str) -> None:
    compiled = compile_version(VersionContent(mjml_body=mjml_with("x"), subject="{{ s }}"))
    with pytest.raises(RenderError, match="subject: contains a line break or NUL"):
        compiled.render({"s": value})


def test_header_injection_in_sender_name_is_refused() -> None:
    compiled = compile_version(VersionContent(mjml_body=mjml_with("x"), subject="s", sender_name="{{ who }}"))
    with pytest.raises(RenderError, match="sender_name: contains a line break"):
        compiled.render({"who": "Shop\r\nReply-To: x@evil.test"})


def test_set_is_refused_in_one_line_fields() -> None:
    with pytest.raises(RenderError, match=r"subject: \{% set %\} is not allowed"):
        compile_version(VersionContent(mjml_body=mjml_with("x"), subject="{% set a = 1 %}{{ a }}"))


def test_part_separator_is_a_per_process_secret() -> None:
    """Parts of a message render together, split on a separator no recipient value can know."""
    import subprocess
    import sys

    code = "import django; django.setup(); from templates_registry.rendering.pipeline import _PART_SEPARATOR as s; print(repr(s))"
    seen = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(seen) == 2


def test_nul_in_a_value_is_refused_in_headers() -> None:
    compiled = compile_version(VersionContent(mjml_body=mjml_with("x"), subject="{{ s }}", preheader="P"))
    with pytest.raises(RenderError, match="subject"):
        compiled.render({"s": "A\x00\nB"})


def test_undefined_attribute_reports_the_mjml_line() -> None:
    source = "<mjml><mj-body>\n<mj-section><mj-column>\n<mj-text>{{ user.nme }}</mj-text>\n</mj-column></mj-section></mj-body></mjml>"
    compiled = compile_version(VersionContent(mjml_body=source, subject="s"))
    with pytest.raises(RenderError) as refused:
        compiled.render({"user": {"name": "Ana"}})
    assert refused.value.field == "mjml_body" and refused.value.line == 3
