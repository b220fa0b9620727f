"""The fast MIME builder: the stdlib parses back exactly what went in."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ops.bench.newsletter_context import recipient
from templates_registry.rendering import VersionContent, compile_version
from templates_registry.rendering.mime import build_mime, header_value, qp_encode, qp_encode_parts

NEWSLETTER = Path(__file__).resolve().parent.parent / "ops" / "bench" / "fixtures" / "newsletter.mjml"

bodies = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=3000)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)


@settings(max_examples=300, deadline=None)
@given(text=bodies, html=bodies)
def test_parts_round_trip_exactly(text: str, html: str) -> None:
    parsed = parse(build_mime(headers=[("Subject", "s")], text=text, html=html))
    plain, rich = [part.get_content() for part in parsed.iter_parts()]
    assert plain.replace("\r\n", "\n") == text
    assert rich.replace("\r\n", "\n") == html


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=300))
def test_headers_round_trip(subject: str) -> None:
    raw = build_mime(headers=[("Subject", header_value(subject))], text="t", html="h")
    assert str(parse(raw)["Subject"]) == " ".join(subject.split()) or str(parse(raw)["Subject"]) == subject


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_no_encoded_line_is_longer_than_76(text: str) -> None:
    assert all(len(line) <= 76 for line in qp_encode(text).split(b"\r\n"))


def test_structure_and_line_endings() -> None:
    html = '<p style="a:b">' + "é" * 200 + "</p>"
    raw = build_mime(headers=[("To", "a@example.org"), ("Message-ID", "<x@y>")], text="Hi =)", html=html)
    parsed = parse(raw)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert parsed["Message-ID"] == "<x@y>" and parsed["Date"] and parsed["MIME-Version"] == "1.0"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["", ".", ". ", "=", "é"]), st.integers(0, 240), st.sampled_from(["", " ", "\t", "=", "."])),
        min_size=1,
        max_size=6,
    )
)
def test_lines_at_every_length_with_a_leading_dot_or_trailing_space(shapes: list[tuple[str, int, str]]) -> None:
    # The edges a random text rarely hits: a line near 76 that starts with '.' (escaped to =2E, three
    # bytes), ends in white space (escaped), or whose soft break would fall on an escape or a '.'.
    text = "\n".join(head + ("a." * length)[:length] + tail for head, length, tail in shapes)
    encoded = qp_encode(text)
    lines = encoded.split(b"\r\n")
    assert all(len(line) <= 76 for line in lines)
    assert not any(line.startswith(b".") or line.endswith((b" ", b"\t")) for line in lines)
    parsed = parse(build_mime(headers=[("Subject", "s")], text=text, html="h"))
    assert next(parsed.iter_parts()).get_content().replace("\r\n", "\n") == text


@settings(max_examples=300, deadline=None)
@given(st.lists(bodies, max_size=12), st.lists(bodies, max_size=12))
def test_parts_as_the_template_yields_them_decode_to_the_same_text(text_parts: list[str], html_parts: list[str]) -> None:
    """Each part encoded on its own (constants cached) and joined by soft breaks: the same text, every line within 76."""
    text, html = "".join(text_parts), "".join(html_parts)
    raw = build_mime(headers=[("Subject", "s")], text=text, html=html, text_parts=text_parts, html_parts=html_parts)
    plain, rich = [part.get_content() for part in parse(raw).iter_parts()]
    assert plain.replace("\r\n", "\n") == text and rich.replace("\r\n", "\n") == html
    for encoded in (qp_encode_parts(text_parts), qp_encode_parts(html_parts)):
        lines = encoded.split(b"\r\n")
        assert all(len(line) <= 76 for line in lines) and not any(line.startswith(b".") for line in lines)


def test_a_crlf_split_across_two_parts_stays_one_line_break() -> None:
    raw = build_mime(headers=[("Subject", "s")], text="a\r\nb", html="h", text_parts=["a\r", "\nb"], html_parts=["h"])
    assert next(parse(raw).iter_parts()).get_content().replace("\r\n", "\n") == "a\nb"


def test_a_rendered_newsletter_encodes_the_same_either_way() -> None:
    compiled = compile_version(VersionContent(mjml_body=NEWSLETTER.read_text(encoding="utf-8"), subject="{{ first_name }}", variables={}))
    for i in range(3):
        rendered = compiled.render(recipient(i))
        assert "".join(rendered.html_parts) == rendered.html and "".join(rendered.text_parts) == rendered.text
        assert len(rendered.html_parts) > 10, "the HTML came as one string: nothing to cache"
        parts = {"text_parts": rendered.text_parts, "html_parts": rendered.html_parts}
        fast = build_mime(headers=[], text=rendered.text, html=rendered.html, **parts)
        whole = build_mime(headers=[], text=rendered.text, html=rendered.html)
        assert [p.get_content() for p in parse(fast).iter_parts()] == [p.get_content() for p in parse(whole).iter_parts()]


def test_a_header_line_starting_with_a_dot_is_refused_not_sent() -> None:
    """build_mime promises no line starting with '.' (the SMTP path skips dot-stuffing on that promise)."""
    import pytest

    with pytest.raises(ValueError, match="starts with '.'"):
        build_mime(headers=[("X-Folded", "a\r\n.b")], text="t", html="h")
