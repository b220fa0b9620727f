"""The version preview a marketer trusts (issue 19): where Gmail clips, dark clients, another context, a real recipient's.

The page itself in a browser: tests/browser/test_preview_page.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from html import unescape
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.models import AuditEntry
from dispatch.models import Message
from dispatch.services.erasure import address_erase_everywhere
from dispatch.services.triggers import trigger_accept
from templates_registry import selectors, services
from templates_registry.checks import GMAIL_CLIP_BYTES
from templates_registry.models import Variant, VariantVersion
from templates_registry.preview import CLIP_LABEL, CLIP_MARKER, Appearance, as_appearance, clip_of, with_clip_marker
from tests.conftest import CORPORA, SIMPLE_VARIABLES

# A real MJML document (two columns of picture, heading and text), repeated until its HTML passes Gmail's 102 KB.
CORPUS_DOCUMENT = CORPORA / "mjml" / "mj-group.mjml"
GREETING = "<mj-section><mj-column><mj-text>Hello {{ first_name }}</mj-text></mj-column></mj-section>"
FOOTER = '<mj-section><mj-column><mj-text><a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text></mj-column></mj-section>'
# The template's own dark rules, for the dark emulations.
DARK_STYLE = (
    "<mj-head><mj-style>@media (prefers-color-scheme: dark) { body, .night { background: #111111 !important; } "
    ".night div { color: #eeeeee !important; } }</mj-style></mj-head>"
)


def long_mjml(repeats: int = 32) -> str:
    body = CORPUS_DOCUMENT.read_text(encoding="utf-8").split("<mj-body>", 1)[1].split("</mj-body>", 1)[0]
    return f"<mjml><mj-body>{GREETING}{body * repeats}{FOOTER}</mj-body></mjml>"


def dark_mjml() -> str:
    return f'<mjml>{DARK_STYLE}<mj-body css-class="night">{GREETING}{FOOTER}</mj-body></mjml>'


def make_version(variant: Variant, mjml: str, **variables: Any) -> VariantVersion:
    return services.version_create(
        variant=variant, mjml_body=mjml, subject="Hi {{ first_name }}", sender_name="Atelier",
        preheader="News for {{ first_name }}", variables={"first_name": "Ana", **variables},
    )


def preview_url(version: VariantVersion) -> str:
    return reverse("admin:templates_registry_variantversion_preview", args=[version.pk])


@pytest.fixture
def as_marketer(staff_client: Callable[[User], Client], marketer: User) -> Client:
    return staff_client(marketer)


class _Page(HTMLParser):
    """The preview page's parts a person reads: the frames' HTML, the one-line problem, the text part, the textarea."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: dict[str, str] = {}
        self.problems: list[str] = []
        self.texts: dict[str, str] = {}
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "iframe":
            self.frames[a["class"]] = a["srcdoc"]
        elif "sp-problem" in a.get("class", "").split() or (tag == "pre" and a.get("class") == "sp-text") or tag == "textarea":
            self._in = "problem" if tag == "p" else tag
            self.texts[self._in] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._in == "problem" and tag == "p":
            self.problems.append(self.texts.pop("problem"))
        if tag in ("p", "pre", "textarea"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self.texts[self._in] += data


def read(response: Any) -> _Page:
    assert response.status_code == 200, response.status_code
    page = _Page()
    page.feed(response.content.decode())
    return page


# --- where Gmail clips -----------------------------------------------------------------------------------------------


def test_a_short_template_says_not_clipped_and_draws_no_line(as_marketer: Client, version: VariantVersion) -> None:
    response = as_marketer.get(preview_url(version))
    page = read(response)

    assert re.search(r"Gmail: not clipped \(\d+\.\d KB", response.content.decode())
    assert set(page.frames) == {"sp-desktop", "sp-mobile"}
    assert all(CLIP_LABEL not in html and "Hello Ana" in html for html in page.frames.values())


def test_a_long_template_draws_the_clip_line_where_102_kb_falls(as_marketer: Client, variant: Variant) -> None:
    version = make_version(variant, long_mjml())
    rendered_html = selectors.version_render(version=version).html
    response = as_marketer.get(preview_url(version))
    text = response.content.decode()

    assert "Gmail clips this message" in text and "the unsubscribe link included" in text
    for html in read(response).frames.values():
        assert html.count(CLIP_MARKER) == 1
        before = html.split(CLIP_MARKER)[0]
        assert rendered_html.startswith(before)
        # At or before the limit, and near it: a column's worth of HTML at most.
        assert GMAIL_CLIP_BYTES - 4096 < len(before.encode()) <= GMAIL_CLIP_BYTES


def test_the_clip_point_counts_bytes_not_characters() -> None:
    body = "<html><body><div>" + "é " * 60_000 + "</div></body></html>"  # 120,000 characters, 180,000 bytes
    clip = clip_of(body)

    assert clip.clipped and clip.marker is not None
    assert len(body[: clip.marker].encode()) <= GMAIL_CLIP_BYTES < len(body[: clip.marker + 3].encode())


def test_a_message_whose_body_starts_past_the_limit_gets_the_line_at_the_top_of_the_body() -> None:
    html = f"<html><head><style>{'a{}' * 40_000}</style></head><body><div>Hi</div></body></html>"
    clip = clip_of(html)

    assert clip.clipped and clip.marker == html.index("<div>Hi")


_TAG_NAMES = st.sampled_from(["div", "td", "p", "span", "a", "table", "tr", "center", "h2"])
_TEXT = st.lists(
    st.sampled_from([*"ab <>'\"", "é", "😀", "中", "\n", "&amp;", "&eacute;", "&#233;", "&#x1F600;", "&lt;", "&"]), max_size=12
).map("".join)
_TOKENS = st.one_of(
    _TEXT,
    _TAG_NAMES.map(lambda t: f"<{t}>"),
    _TAG_NAMES.map(lambda t: f"</{t}>"),
    st.sampled_from([
        '<a href="https://example.com/?a=1&amp;b=2" title="x > y">', '<img src="x.png" alt="ü">', "<br>", "<br/>",
        "<!-- a > b -->", "<!--[if mso]><table><tr><td><![endif]-->", "<style>p > a { color: red; }</style>",
        '<div style="font-size:0">',
    ]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=st.lists(_TOKENS, max_size=40), head=st.text(max_size=30), data=st.data())
def test_the_clip_line_never_splits_a_tag_a_reference_or_a_character(tokens: list[str], head: str, data: Any) -> None:
    html = f"<!doctype html><html><head><title>{head}</title></head><body>{''.join(tokens)}</body></html>"
    size = len(html.encode("utf-8", "surrogatepass"))
    limit = data.draw(st.integers(0, size + 10), label="limit")
    clip = clip_of(html, limit)

    if size <= limit:
        assert clip.cut is None and clip.marker is None
        return
    assert clip.marker is not None  # there is always the start of <body>'s content
    if clip.marker <= clip.cut:  # else nothing of <body> fits and the line opens it
        assert len(html[: clip.marker].encode("utf-8", "surrogatepass")) <= limit
    assert clip.marker > html.index("<body>")
    marked = with_clip_marker(html, clip)
    assert _tokens(marked.replace(CLIP_MARKER, "")) == _tokens(html)
    assert _tokens(marked) == _tokens(html[: clip.marker]) + _tokens(CLIP_MARKER) + _tokens(html[clip.marker:])


def _tokens(html: str) -> list[tuple[str, str]]:
    """What a parser reads, adjacent text joined: a split tag, comment or character reference would change it."""

    class Tokens(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.out: list[tuple[str, str]] = []

        def add(self, kind: str, value: str) -> None:
            if kind == "text" and self.out and self.out[-1][0] == "text":
                self.out[-1] = ("text", self.out[-1][1] + value)
            else:
                self.out.append((kind, value))

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.add("start", f"{tag} {attrs}")

        def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.add("startend", f"{tag} {attrs}")

        def handle_endtag(self, tag: str) -> None:
            self.add("end", tag)

        def handle_data(self, data: str) -> None:
            self.add("text", data)

        def handle_comment(self, data: str) -> None:
            self.add("comment", data)

        def handle_decl(self, decl: str) -> None:
            self.add("decl", decl)

    parser = Tokens()
    parser.feed(html)
    parser.close()
    return parser.out


# --- dark clients ----------------------------------------------------------------------------------------------------


def test_the_dark_copy_applies_the_templates_dark_rules_and_the_light_one_never_does() -> None:
    html = (
        "<html><head><style>@media (prefers-color-scheme: dark) { .a { color: #fff; } }"
        "@media screen and (prefers-color-scheme: light) { .b { color: #000; } }</style>"
        '<link rel="stylesheet" href="x.css" media="(prefers-color-scheme: dark)"></head>'
        "<body><p>(prefers-color-scheme: dark) stays as text</p></body></html>"
    )
    dark, light = as_appearance(html, Appearance.DARK), as_appearance(html, Appearance.LIGHT)

    assert "@media all { .a" in dark and "@media screen and (max-width: 0px) { .b" in dark and 'media="all"' in dark
    assert "@media not all { .a" in light and "@media screen and (min-width: 0px) { .b" in light and 'media="not all"' in light
    assert "<p>(prefers-color-scheme: dark) stays as text</p>" in dark


def test_the_inverted_copy_inverts_the_page_and_turns_pictures_back_ignoring_the_dark_rules() -> None:
    html = "<html><head><style>@media (prefers-color-scheme: dark) { .a { color: #fff; } }</style></head><body></body></html>"
    inverted = as_appearance(html, Appearance.INVERTED)

    head = inverted.split("</head>")[0]
    assert "html { filter: invert(1) hue-rotate(180deg) !important;" in head
    assert re.search(r"img, picture, video[^{]*\{ filter: invert\(1\) hue-rotate\(180deg\)", head)
    assert "@media not all { .a" in head  # Gmail does not read them


def test_the_page_carries_the_dark_copies_for_the_appearance_radios(as_marketer: Client, variant: Variant) -> None:
    version = make_version(variant, dark_mjml())
    text = as_marketer.get(preview_url(version)).content.decode()

    copies = json.loads(text.split('<script id="sp-frames" type="application/json">')[1].split("</script>")[0])
    assert set(copies) == {"dark", "inverted"}
    assert "@media all" in copies["dark"] and "invert(1)" in copies["inverted"]
    assert 'name="sp-appearance" value="dark"' in text and "emulations" in text


# --- another context -------------------------------------------------------------------------------------------------


def test_editing_the_context_re_renders_with_the_new_value_and_saves_nothing(as_marketer: Client, version: VariantVersion) -> None:
    context = {**SIMPLE_VARIABLES, "first_name": "Zoë"}
    response = as_marketer.post(preview_url(version), {"context": json.dumps(context)})
    page = read(response)

    assert all("Hello Zoë" in html for html in page.frames.values())
    assert '<td class="sp-subject">Hi Zoë</td>' in response.content.decode()
    assert "the context entered below, not saved" in response.content.decode()
    assert json.loads(page.texts["textarea"]) == context
    version.refresh_from_db()
    assert version.variables == SIMPLE_VARIABLES and VariantVersion.objects.count() == 1


def test_bad_json_shows_one_line_and_the_sample_values_render(as_marketer: Client, version: VariantVersion) -> None:
    page = read(as_marketer.post(preview_url(version), {"context": '{"first_name": "Zo'}))

    assert page.problems == ['Enter the context as a JSON object, e.g. {"first_name": "Ana"}.']
    assert all("Hello Ana" in html for html in page.frames.values())
    assert page.texts["textarea"] == '{"first_name": "Zo'  # kept as typed, to be fixed


def test_a_context_that_does_not_fit_shows_the_render_error_in_one_line(as_marketer: Client, version: VariantVersion) -> None:
    page = read(as_marketer.post(preview_url(version), {"context": json.dumps({"first_name": "Zoë"})}))

    assert len(page.problems) == 1 and "offer_url" in page.problems[0] and "\n" not in page.problems[0]
    assert all("Hello Ana" in html for html in page.frames.values())


def test_a_context_can_push_a_template_past_gmails_limit(as_marketer: Client, variant: Variant) -> None:
    mjml = "<mjml><mj-body><mj-section><mj-column><mj-text>{{ story }}</mj-text></mj-column></mj-section></mj-body></mjml>"
    version = services.version_create(variant=variant, mjml_body=mjml, subject="News", variables={"story": "short"})

    assert "Gmail: not clipped" in as_marketer.get(preview_url(version)).content.decode()
    response = as_marketer.post(preview_url(version), {"context": json.dumps({"story": "word " * 25_000})})
    assert "Gmail clips this message" in response.content.decode()
    assert all(html.count(CLIP_MARKER) == 1 for html in read(response).frames.values())


# --- a real recipient's context --------------------------------------------------------------------------------------


@pytest.fixture
def sent(campaign: Any) -> dict[str, Message]:
    """Two messages of the campaign's live version, each with its own context."""
    recipients = [{"address": a, "context": {**SIMPLE_VARIABLES, "first_name": name}} for a, name in
                  (("rosa@example.org", "Rosa"), ("ivo@example.org", "Ivo"))]
    trigger_accept(campaign=campaign, idempotency_key="preview-1", recipients=recipients)
    return {m.recipient: m for m in Message.objects.all()}


@pytest.mark.parametrize("by", ["address", "uuid"])
def test_a_marketer_renders_with_a_real_recipients_context(as_marketer: Client, sent: dict[str, Message], by: str) -> None:
    message = sent["rosa@example.org"]
    reference = "Rosa@Example.org" if by == "address" else str(message.uuid)
    response = as_marketer.post(preview_url(message.version), {"recipient": reference})
    page, text = read(response), response.content.decode()

    assert page.problems == []
    assert all("Hello Rosa" in html for html in page.frames.values())
    assert f"the context of message <code>{message.uuid}</code> to rosa@example.org: personal data" in text
    assert '<td class="sp-from">news@mail.example.com</td>' in text
    assert json.loads(page.texts["textarea"])["first_name"] == "Rosa"  # to edit on from there
    read_by = AuditEntry.objects.get(action="preview.recipient_context")  # who looked at whose data: by message, no address
    assert read_by.data == {"message": str(message.uuid)} and "rosa" not in str(read_by.data).lower() + read_by.target_label


def test_oncall_may_not_read_a_recipients_context(
    staff_client: Callable[[User], Client], oncall: User, sent: dict[str, Message]
) -> None:
    client, message = staff_client(oncall), sent["rosa@example.org"]

    assert client.post(preview_url(message.version), {"recipient": str(message.uuid)}).status_code == 403
    page = client.get(preview_url(message.version)).content.decode()
    assert 'name="recipient"' not in page and "personal data" in page and "campaigns.write" in page
    # Editing the sample values is not personal data: on-call may.
    edited = client.post(preview_url(message.version), {"context": json.dumps({**SIMPLE_VARIABLES, "first_name": "Zed"})})
    assert "Hello Zed" in read(edited).frames["sp-mobile"]


def test_an_erased_recipients_message_says_its_context_is_gone(as_marketer: Client, sent: dict[str, Message]) -> None:
    message = sent["rosa@example.org"]
    address_erase_everywhere(address="rosa@example.org")

    by_uuid = read(as_marketer.post(preview_url(message.version), {"recipient": str(message.uuid)}))
    by_address = read(as_marketer.post(preview_url(message.version), {"recipient": "rosa@example.org"}))

    assert by_uuid.problems == [f"message {message.uuid} keeps no context: its recipient was erased, or it is past retention"]
    assert not AuditEntry.objects.filter(action="preview.recipient_context").exists()  # nothing was shown
    assert by_address.problems == [f"no message of {message.version} has that UUID or recipient address"]
    assert all("Hello Ana" in html for html in by_uuid.frames.values())


def test_a_message_of_another_version_is_named(as_marketer: Client, sent: dict[str, Message], marketer: User) -> None:
    message = sent["ivo@example.org"]
    newer = services.version_derive(source=message.version, created_by=marketer, subject="Hello {{ first_name }}")

    page = read(as_marketer.post(preview_url(newer), {"recipient": str(message.uuid)}))

    assert page.problems == [f"message {message.uuid} was sent with {message.version}, not {newer}"]


def test_the_text_tab_holds_the_plain_text(as_marketer: Client, version: VariantVersion) -> None:
    response = as_marketer.get(preview_url(version))
    page = read(response)

    assert "1. Hat" in unescape(page.texts["pre"]) and "Hello Ana" in page.texts["pre"]
    assert 'role="tab" id="sp-tab-text" aria-controls="sp-panel-text"' in response.content.decode()
