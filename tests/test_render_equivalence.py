"""The compile-once path gives the same HTML and text as rendering MJML per recipient."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from templates_registry.rendering import VersionContent, compile_cache, compile_version, render_direct

NEWSLETTER = Path(__file__).resolve().parent.parent / "ops" / "bench" / "fixtures" / "newsletter.mjml"

LOOPS_AND_CONDITIONS = """<mjml>
  <mj-head><mj-title>Your picks</mj-title><mj-preview>Picks for {{ first_name }}</mj-preview></mj-head>
  <mj-body>
    <mj-section><mj-column><mj-text>Hello {{ first_name }}, <a href="{{ url }}">offer</a></mj-text></mj-column></mj-section>
    {% for item in items %}
    <mj-section><mj-column>
      <mj-text>{{ loop.index }}. {{ item.name }}{% if item.sale %} <b>SALE</b>{% endif %}</mj-text>
      {% if item.img %}<mj-image src="{{ item.img }}" alt="{{ item.name }}" />{% endif %}
    </mj-column></mj-section>
    {% else %}
    <mj-section><mj-column><mj-text>Nothing new this week.</mj-text></mj-column></mj-section>
    {% endfor %}
    <mj-wrapper padding="10px">
      {% if vip %}<mj-section><mj-column><mj-text>VIP corner</mj-text></mj-column></mj-section>{% endif %}
      <mj-section><mj-column>
        {% for tag in tags %}<mj-button href="https://example.com/t/{{ tag }}">{{ tag|upper }}</mj-button>{% endfor %}
      </mj-column></mj-section>
    </mj-wrapper>
    <mj-hero background-color="#333">{% if vip %}<mj-text color="#fff">Gold</mj-text>{% endif %}</mj-hero>
  </mj-body>
</mjml>"""

SAMPLE = {
    "first_name": "Ana",
    "url": "https://example.com/?a=1&b=2",
    "items": [{"name": "Hat", "sale": True, "img": "https://example.com/h.png"}, {"name": "<Cap>", "sale": False, "img": ""}],
    "vip": True,
    "tags": ["new", "sale"],
}

# MRML re-serialises attribute values through Rust's escape_debug, so the per-recipient
# reference mangles combining marks, format characters, backslashes and unusual spaces
# (see test_title_value_is_not_mangled_like_mrml_does_per_recipient); compare on the rest.
MRML_SAFE = st.characters(
    whitelist_categories=("Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So"),
    blacklist_characters="\\\u115f\u1160",
)
texts = st.text(alphabet=st.one_of(MRML_SAFE, st.just(" ")), max_size=30)
items = st.lists(
    st.fixed_dictionaries({"name": texts, "sale": st.booleans(), "img": st.sampled_from(["", "https://example.com/i.png"])}), max_size=5
)
contexts = st.fixed_dictionaries(
    {
        "first_name": texts,
        "url": st.sampled_from(["https://example.com/", "https://example.com/?q=a&b=<c>"]),
        "items": items,
        "vip": st.booleans(),
        "tags": st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), max_size=4),
    }
)


def content(mjml: str, **extra: Any) -> VersionContent:
    fields = {"subject": "Hi {{ first_name }}", "preheader": "{{ items|length }} picks", "variables": SAMPLE, **extra}
    return VersionContent(mjml_body=mjml, **fields)


def split_html(html: str) -> tuple[str, set[str], str]:
    """(head without styles, the style blocks, body)."""
    head, body = html.split("<body", 1)
    styles = set(re.findall(r"<style[^>]*>.*?</style>", head, re.S))
    return re.sub(r"<style[^>]*>.*?</style>", "", head, flags=re.S), styles, body


def assert_same(version: VersionContent, context: dict[str, Any]) -> None:
    """Byte-identical body; the same head, except that compile-once keeps the CSS of a
    component even when a condition removes its every instance for this recipient;
    the same text, word for word (blank lines may differ)."""
    once = compile_version(version).render(context)
    direct = render_direct(version, context)
    once_head, once_styles, once_body = split_html(once.html)
    direct_head, direct_styles, direct_body = split_html(direct.html)
    assert once_body == direct_body
    assert once_head == direct_head
    assert direct_styles <= once_styles
    assert once.text.split() == direct.text.split()
    assert (once.subject, once.preheader) == (direct.subject, direct.preheader)


def test_loops_and_conditions_between_sections_render_identically() -> None:
    assert_same(content(LOOPS_AND_CONDITIONS), SAMPLE)


def test_empty_loop_takes_the_else_branch_identically() -> None:
    ctx = {**SAMPLE, "items": [], "vip": False, "tags": []}
    assert_same(content(LOOPS_AND_CONDITIONS), ctx)
    assert "Nothing new this week." in compile_version(content(LOOPS_AND_CONDITIONS)).render(ctx).html


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contexts)
def test_any_context_renders_identically(context: dict[str, Any]) -> None:
    assert_same(content(LOOPS_AND_CONDITIONS), context)


def test_fifty_kilobyte_newsletter_renders_identically() -> None:
    products = [
        {
            "name": f"Stool {i}", "blurb": "Oak", "price": "€89", "was": "€99" if i % 2 else "",
            "image": f"https://e.test/{i}.jpg", "url": f"https://e.test/{i}",
        }
        for i in range(4)
    ]
    ctx = {
        "brand": "Atelier", "first_name": "Ana", "campaign": "w24", "member_id": "m1", "points": 3, "discount": 15, "offer_end": "Jan",
        "products": products, "show_referral": True, "referral_code": "A15", "email": "a@e.test", "unsubscribe_url": "https://e.test/u",
    }
    assert_same(content(NEWSLETTER.read_text(encoding="utf-8"), variables=ctx, preheader="{{ discount }}% off"), ctx)


def test_mjml_compiles_once_per_content_hash() -> None:
    version = content(LOOPS_AND_CONDITIONS)
    for name in ("Ana", "Bo", "Cy"):
        compile_version(version).render({**SAMPLE, "first_name": name})
    assert (compile_cache.misses, compile_cache.hits) == (1, 2)


def test_statement_inside_section_is_refused_with_its_line() -> None:
    from templates_registry.rendering import RenderError

    source = "<mjml><mj-body>\n<mj-section>\n{% for c in cols %}<mj-column></mj-column>{% endfor %}\n</mj-section></mj-body></mjml>"
    with pytest.raises(RenderError, match="column count") as refused:
        compile_version(VersionContent(mjml_body=source, subject="s"))
    assert refused.value.line == 3


def test_statement_inside_a_tag_is_refused() -> None:
    from templates_registry.rendering import RenderError

    source = '<mjml><mj-body><mj-section {% if x %}padding="0"{% endif %}><mj-column></mj-column></mj-section></mj-body></mjml>'
    with pytest.raises(RenderError, match="inside an MJML tag"):
        compile_version(VersionContent(mjml_body=source, subject="s"))


def test_plain_text_part_is_derived_when_none_is_given() -> None:
    message = compile_version(content(LOOPS_AND_CONDITIONS)).render(SAMPLE)
    assert "Hello Ana, offer (https://example.com/?a=1&b=2)" in message.text
    assert "1. Hat SALE" in message.text and "2. <Cap>" in message.text
    assert "<mj-" not in message.text and "{%" not in message.text


def test_given_plain_text_part_is_used() -> None:
    text_body = "Hi {{ first_name }}\n{% for i in items %}- {{ i.name }}\n{% endfor %}"
    message = compile_version(content(LOOPS_AND_CONDITIONS, text_body=text_body)).render(SAMPLE)
    assert message.text == "Hi Ana\n- Hat\n- <Cap>\n"


def test_title_value_is_not_mangled_like_mrml_does_per_recipient() -> None:
    """MRML writes the title into aria-label through Rust's escape_debug (a backslash
    becomes two, combining accents become \\u{301}); the compile-once path puts
    the value in after MJML ran, so it comes out as given (escaped for HTML)."""
    source = "<mjml><mj-head><mj-title>Hi {{ name }}</mj-title></mj-head><mj-body></mj-body></mjml>"
    name = "Jose\u0301 \\o/"
    html = compile_version(VersionContent(mjml_body=source, subject="s")).render({"name": name}).html
    assert f'aria-label="Hi {name}"' in html
    assert f"<title>Hi {name}</title>" in html
