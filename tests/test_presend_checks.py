"""Pre-send checks (templates_registry.checks): pure functions over a rendered message."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from templates_registry.checks import CheckResult, run_checks
from templates_registry.examples import EXAMPLES, example_variables
from templates_registry.rendering import RenderedMessage, VersionContent, compile_version, sample_unsubscribe_url

CHECK_NAMES = [
    "active_content",
    "html_size",
    "plain_text_part",
    "unsubscribe_link",
    "image_alt",
    "link_scheme",
    "link_ip",
    "link_text_domain",
    "subject_length",
    "subject_caps",
    "unresolved_variables",
]
UNSUBSCRIBE = f'<a href="{sample_unsubscribe_url()}">Unsubscribe</a>'  # what {{ unsubscribe_url }} renders in a check


def message(
    body: str = "", *, subject: str = "Your weekly picks", text: str = "Hello", preheader: str = "", sender: str = "Atelier"
) -> RenderedMessage:
    html = f"<!doctype html><html><head><style>p {{ margin: 0 }}</style></head><body>{body}</body></html>"
    return RenderedMessage(subject=subject, sender_name=sender, preheader=preheader, html=html, text=text)


def results(msg: RenderedMessage, *, text_was_given: bool = True, marketing: bool = True) -> dict[str, CheckResult]:
    return {result.name: result for result in run_checks(msg, text_was_given=text_was_given, marketing=marketing)}


def check(msg: RenderedMessage, name: str, *, text_was_given: bool = True, marketing: bool = True) -> CheckResult:
    return results(msg, text_was_given=text_was_given, marketing=marketing)[name]


def failed(msg: RenderedMessage) -> set[str]:
    return {r.name for r in run_checks(msg, text_was_given=True) if not r.passed}


def assert_one_line(result: CheckResult) -> None:
    assert result.message.strip() and result.message.splitlines() == [result.message], result


# --- shape -------------------------------------------------------------------


def test_every_check_runs_once_in_a_stable_order() -> None:
    assert [r.name for r in run_checks(message(UNSUBSCRIBE), text_was_given=True)] == CHECK_NAMES


def test_as_dict_has_the_four_fields() -> None:
    result = CheckResult("html_size", False, True, "HTML is 131.0 KB; Gmail clips messages over 102 KB")
    assert result.as_dict() == {
        "name": "html_size", "passed": False, "blocking": True, "message": "HTML is 131.0 KB; Gmail clips messages over 102 KB"
    }
    assert json.loads(json.dumps(result.as_dict())) == result.as_dict()


# --- realistic emails --------------------------------------------------------


def test_the_welcome_example_passes_every_check() -> None:
    manifest = json.loads((EXAMPLES / "examples.json").read_text(encoding="utf-8"))
    spec = manifest["templates"][0]["variants"][0]
    content = VersionContent(
        mjml_body=(EXAMPLES / spec["mjml_file"]).read_text(encoding="utf-8"),
        subject=spec["subject"],
        sender_name=spec["sender_name"],
        preheader=spec["preheader"],
        variables=example_variables(),
    )
    rendered = compile_version(content).render(content.variables)

    checked = run_checks(rendered, text_was_given=False)

    assert [r for r in checked if not r.passed] == []
    assert {r.name: r.message for r in checked}["plain_text_part"] == "plain-text part derived from the HTML"
    for result in checked:
        assert_one_line(result)


def test_bad_ai_output_fails_the_right_checks() -> None:
    body = (
        "<h1>YOU HAVE WON</h1>"
        '<p><a href="http://192.168.4.4/claim">Claim your prize</a></p>'
        '<p>Verify your account at <a href="https://evil.example/login">www.paypal.com</a></p>'
        '<img src="https://cdn.evil.example/img/money.png">'
    )
    msg = message(body, subject="FREE!!! WIN MONEY NOW", text="YOU HAVE WON")

    checked = results(msg)

    assert {name for name, r in checked.items() if not r.passed} == {
        "unsubscribe_link", "image_alt", "link_ip", "link_text_domain", "subject_caps"
    }
    assert checked["link_ip"].message == "1 link goes to a raw IP address: http://192.168.4.4/claim"
    assert checked["link_text_domain"].message == (
        "1 link's text names a domain other than the target: \"www.paypal.com\" goes to evil.example"
    )
    assert checked["image_alt"].message == "1 image has no alt text: money.png"
    assert not checked["image_alt"].blocking
    for result in checked.values():
        assert_one_line(result)


# --- html_size ---------------------------------------------------------------


def test_html_over_102_kb_is_blocked_as_gmail_clips_it() -> None:
    result = check(message("<p>" + "x" * (131 * 1024) + "</p>" + UNSUBSCRIBE), "html_size")
    assert (result.passed, result.blocking) == (False, True)
    assert result.message == "HTML is 131.2 KB; Gmail clips messages over 102 KB"


def test_html_size_counts_utf8_bytes_not_characters() -> None:
    # 60,000 characters, 120,000 bytes: over the limit though under it in characters
    assert not check(message("é" * 60_000), "html_size").passed


def test_html_under_102_kb_passes() -> None:
    result = check(message("<p>" + "x" * (100 * 1024) + "</p>"), "html_size")
    assert result.passed and "under Gmail's 102 KB clipping limit" in result.message


# --- plain_text_part -----------------------------------------------------------


def test_an_empty_written_text_part_is_blocked() -> None:
    result = check(message(text="  \n "), "plain_text_part")
    assert (result.passed, result.blocking, result.message) == (False, True, "the written plain-text part is empty")


def test_a_derived_text_part_passes_and_says_so() -> None:
    result = check(message(text="Hello"), "plain_text_part", text_was_given=False)
    assert (result.passed, result.message) == (True, "plain-text part derived from the HTML")


def test_a_derived_text_part_that_came_out_empty_fails() -> None:
    result = check(message('<img src="a.png" alt="">', text=""), "plain_text_part", text_was_given=False)
    assert (result.passed, result.message) == (False, "the plain-text part derived from the HTML is empty")


def test_a_written_text_part_passes() -> None:
    assert check(message(text="Hello Ana"), "plain_text_part").passed


# --- unsubscribe_link ----------------------------------------------------------


def test_no_unsubscribe_link_is_blocked() -> None:
    # saying "unsubscribe" outside a link is not a way out
    result = check(message('<p>To unsubscribe, reply STOP.</p><a href="https://example.com">Shop</a>'), "unsubscribe_link")
    assert (result.passed, result.blocking) == (False, True)
    assert "no unsubscribe link" in result.message


@pytest.mark.parametrize(
    "link",
    [
        '<a href="https://example.com/u/tok">Unsubscribe</a>',
        '<a href="https://example.com/u/tok">UNSUBSCRIBE here</a>',
        '<a href="https://example.com/unsubscribe?id=1">click here</a>',
        '<a href="*|UNSUB|*">stop these emails</a>',
        '<a href="https://example.com/u/tok">Newsletter abmelden</a>',
        '<a href="https://example.com/u/tok">Se désinscrire</a>',
        '<a href="https://example.com/u/tok">Darse de baja</a>',
        '<a href="https://example.com/u/tok">Afmelden</a>',
        '<a href="https://example.com/u/tok">Cancelar inscrição</a>',
        '<a href="https://example.com/u/tok">Opt out</a>',
    ],
)
def test_an_unsubscribe_link_that_is_not_sendplanes_blocks_marketing_mail_naming_it(link: str) -> None:
    # Issue 18: clicks on a caller's own link never reached the suppression list.
    result = check(message(f"<p>Bye: {link}</p>"), "unsubscribe_link")
    assert (result.passed, result.blocking) == (False, True)
    assert "is not Sendplane's: use href=\"{{ unsubscribe_url }}\"" in result.message
    assert_one_line(result)


@pytest.mark.parametrize("body", [UNSUBSCRIBE, f'<p>Manage: <a href=" {sample_unsubscribe_url()} ">here</a></p>'])
def test_sendplanes_own_link_passes_whatever_its_text(body: str) -> None:
    result = check(message(body), "unsubscribe_link")
    assert (result.passed, result.blocking) == (True, True)


def test_a_transactional_template_needs_no_unsubscribe_link() -> None:
    result = check(message('<p>Your receipt. <a href="https://example.com/help">Help</a></p>'), "unsubscribe_link", marketing=False)
    assert (result.passed, result.blocking, result.message) == (True, False, "transactional template: no unsubscribe link required")


def test_the_variable_renders_sendplanes_link_in_the_check_and_the_recipients_own_at_send() -> None:
    content = VersionContent(
        mjml_body='<mjml><mj-body><mj-section><mj-column><mj-text><a href="{{ unsubscribe_url }}">Unsubscribe</a>'
        "</mj-text></mj-column></mj-section></mj-body></mjml>",
        subject="Hi", text_body="Leave: {{ unsubscribe_url }}",
    )
    compiled = compile_version(content)  # undeclared, yet no error: a built-in
    sample = compiled.render({})
    assert check(sample, "unsubscribe_link").passed
    mine = compiled.render({"unsubscribe_url": "https://evil.example/x"}, unsubscribe_url="https://sp.example/u/abc.def")
    assert 'href="https://sp.example/u/abc.def"' in mine.html and "evil" not in mine.html  # the caller's value is replaced
    assert mine.text.endswith("Leave: https://sp.example/u/abc.def")


# --- image_alt ---------------------------------------------------------------


def test_images_without_alt_warn_and_are_named() -> None:
    body = "".join(f'<img src="https://cdn.example.com/i/{name}?v=2">' for name in ("logo.png", "hero.jpg", "a.gif", "b.gif"))
    result = check(message(body + UNSUBSCRIBE), "image_alt")
    assert (result.passed, result.blocking) == (False, False)
    assert result.message == "4 images have no alt text: logo.png, hero.jpg, a.gif, and 1 more"


def test_empty_alt_marks_a_decorative_image_and_passes() -> None:
    result = check(message('<img src="spacer.gif" alt=""><img src="logo.png" alt="Atelier">'), "image_alt")
    assert (result.passed, result.message) == (True, "every image (2) has alt text")


def test_no_images_passes() -> None:
    assert check(message("<p>Hi</p>"), "image_alt").message == "no images"


# --- link_scheme ---------------------------------------------------------------


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " java\tscript:alert(1)",  # browsers drop tabs and leading spaces
        "data:text/html;base64,PHNjcmlwdD4=",
        "file:///etc/passwd",
        "ftp://example.com/file",
        "/account",
        "account.html",
        "",
        "http:foo",
        "https:///nohost",
        "http://[::1",  # unparseable
    ],
)
def test_a_link_that_is_not_http_mailto_or_tel_is_blocked(href: str) -> None:
    result = check(message(f'<a href="{href}">x</a>'), "link_scheme")
    assert (result.passed, result.blocking) == (False, True)
    assert result.message.startswith("1 link is not http(s), mailto or tel: ")


def test_link_scheme_names_the_link_as_a_browser_reads_it() -> None:
    result = check(message('<a href=" java\tscript:alert(1)">x</a><a href="/a">y</a>'), "link_scheme")
    assert result.message == "2 links are not http(s), mailto or tel: javascript:alert(1), /a"


@pytest.mark.parametrize(
    "href", ["https://example.com/a", "HTTP://example.com", "mailto:help@example.com", "tel:+4930123456", "#", "#top"]
)
def test_http_mailto_tel_and_anchors_pass(href: str) -> None:
    assert check(message(f'<a href="{href}">x</a>'), "link_scheme").passed


def test_a_named_anchor_without_href_is_not_a_link() -> None:
    assert check(message('<a name="top">Top</a>'), "link_scheme").message == "no links"


# --- link_ip -----------------------------------------------------------------


@pytest.mark.parametrize(
    "href",
    [
        "http://192.168.4.4/claim",
        "https://10.0.0.1:8443/x",
        "http://[::1]/",
        "http://[2001:db8::1]:8080/",
        "http://3232235777/",  # 192.168.1.1 as one decimal number
        "http://0xc0a80101/",  # ... and in hex
        "http://0300.0250.1.1/",  # ... and in octal
        "http://%31%39%32.168.0.1/",  # percent-encoded
        "http://１９２．１６８．０．１/",  # full-width digits and dots
    ],
)
def test_a_link_to_a_raw_ip_is_blocked(href: str) -> None:
    result = check(message(f'<a href="{href}">x</a>'), "link_ip")
    assert (result.passed, result.blocking) == (False, True)
    assert result.message.startswith("1 link goes to a raw IP address: ")


@pytest.mark.parametrize("href", ["https://example.com", "https://1.example.com/192.168.0.1", "mailto:a@example.com", "#x"])
def test_links_to_hostnames_pass(href: str) -> None:
    assert check(message(f'<a href="{href}">x</a>'), "link_ip").passed


# --- link_text_domain ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "href"),
    [
        ("www.paypal.com", "https://evil.example/login"),
        ("https://paypal.com/login", "https://evil.example/login"),
        ("Log in at www.paypal.com now", "https://evil.example/login"),
        ("paypal.com", "https://evil.example"),
        ("PayPal.com/signin", "https://evil.example"),
        ("paypal.com", "https://paypal.com.evil.example/"),
        ("www.paypal.com", "https://www.paypal.com@evil.example/"),  # userinfo trick
        ("help@example.com", "mailto:help@evil.example"),
    ],
)
def test_link_text_showing_another_domain_is_blocked(text: str, href: str) -> None:
    result = check(message(f'<a href="{href}">{text}</a>'), "link_text_domain")
    assert (result.passed, result.blocking) == (False, True)
    assert result.message.startswith("1 link's text names a domain other than the target: ")


@pytest.mark.parametrize(
    ("text", "href"),
    [
        ("example.com", "https://www.example.com/offer"),
        ("www.example.com", "https://mail.example.com/"),
        ("shop.example.com", "https://example.com/"),
        ("https://example.com/offer.", "https://example.com/offer"),
        ("bücher.de", "https://xn--bcher-kva.de/"),
        ("help@example.com", "mailto:help@example.com"),
        ("Read more", "https://example.com"),
        ("report.pdf", "https://cdn.example.com/report.pdf"),  # a file name, not a host
        ("Unsubscribe from northwind.com", "https://sendplane.example/u/tok"),  # not an address on its own
        ("www.example.com", "tel:+4930123456"),  # no host to compare (link_scheme's business anyway)
    ],
)
def test_link_text_naming_its_own_domain_or_none_passes(text: str, href: str) -> None:
    assert check(message(f'<a href="{href}">{text}</a>'), "link_text_domain").passed


# --- subject_length ----------------------------------------------------------


def test_an_empty_subject_is_blocked() -> None:
    result = check(message(subject="   "), "subject_length")
    assert (result.passed, result.blocking, result.message) == (False, True, "subject is empty")


def test_a_subject_over_78_characters_warns() -> None:
    result = check(message(subject="a" * 79), "subject_length")
    assert (result.passed, result.blocking) == (False, False)
    assert result.message.startswith("subject is 79 characters")


def test_a_subject_of_78_characters_passes() -> None:
    assert check(message(subject="a" * 78), "subject_length").message == "subject is 78 characters"


# --- subject_caps --------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    ["FREE!!! WIN MONEY NOW", "LAST CHANCE to save", "AAAAAAAbbb", "СКИДКИ ТОЛЬКО СЕГОДНЯ"],  # 7 of 10 is over 60%
)
def test_a_mostly_capitals_subject_is_blocked(subject: str) -> None:
    result = check(message(subject=subject), "subject_caps")
    assert (result.passed, result.blocking) == (False, True)
    assert "reads as shouting" in result.message


@pytest.mark.parametrize(
    "subject",
    ["Your weekly picks", "AAAAAAbbbb", "NEW: AI tips", "SALE 50%", "今週のおすすめ", "NASA and ESA launch tips"],  # 6 of 10 is not over
)
def test_mostly_lower_case_short_or_caseless_subjects_pass(subject: str) -> None:
    assert check(message(subject=subject), "subject_caps").passed


def test_subject_caps_message_gives_the_share() -> None:
    assert check(message(subject="Welcome to Northwind, Ana"), "subject_caps").message == (
        "14% of the subject's letters are capitals (3 of 21)"
    )


# --- unresolved_variables ------------------------------------------------------


@pytest.mark.parametrize(
    "leftover",
    [
        "{{ first_name }}",
        "{{first_name",
        "{% if vip %}",
        "Hi {first_name}",
        "${first_name}",
        "[FIRST_NAME]",
        "[First Name]",
        "[Your Company]",
        "[Insert link here]",
        "%%FirstName%%",
        "*|FNAME|*",
        "<%body%>",
    ],
)
@pytest.mark.parametrize("where", ["subject", "html", "text"])
def test_leftover_template_syntax_is_blocked(leftover: str, where: str) -> None:
    msg = {
        "subject": message(subject=f"Hello {leftover}"),
        "html": message(f"<p>Hello {leftover}</p>"),
        "text": message(text=f"Hello {leftover}"),
    }[where]
    result = check(msg, "unresolved_variables")
    assert (result.passed, result.blocking) == (False, True)
    assert result.message.startswith("leftover template syntax: ")


def test_leftovers_are_found_in_attributes_and_entities_and_named_with_their_place() -> None:
    msg = message('<a href="{{ offer_url }}">x</a><p>&#123;&#123; name &#125;&#125;</p>', subject="Hi *|FNAME|*")
    assert check(msg, "unresolved_variables").message == (
        'leftover template syntax: "*|FNAME|*" in the subject, "{{ offer_url }}" in the HTML, "{{ name }}" in the HTML'
    )


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("[Sale] 20% off everything", "<p>100% cotton, 50%% less</p>"),
        ("Hi", "<p>Price: {from 10 EUR}, {x: 1}</p>"),
        ("Hi", "<style>@media (min-width:480px) { .a { width:100% }}</style><p>Hi</p>"),  # CSS may close two blocks
        ("Hi", "<!--[if mso]><p>{{ never shown }}</p><![endif]--><p>Hi</p>"),
    ],
)
def test_ordinary_brackets_percent_signs_and_css_pass(subject: str, body: str) -> None:
    assert check(message(body, subject=subject), "unresolved_variables").passed


# --- robustness --------------------------------------------------------------


def test_messages_stay_on_one_line_whatever_the_template_holds() -> None:
    body = '<img src="a\nb.png"><a href="javascript:\nalert(1)">x</a><a href="http://10.0.0.1/\u2028x">www.a.com</a>'
    for result in run_checks(message(body, subject="{{\nx\u0085}}", text="a{{\n}}"), text_was_given=True):
        assert_one_line(result)


def test_markup_the_stdlib_parser_chokes_on_is_read_as_a_comment() -> None:
    # HTMLParser's SGML marked-section code raises AssertionError on "<![foo["
    msg = message('<![foo[ bar ]]><a href="javascript:x">y</a><![if word]>z<![endif]>')
    assert failed(msg) >= {"link_scheme"}


def test_image_map_areas_are_links_too() -> None:
    body = '<a href="https://example.com">see <area href="javascript:x"> more</a>'
    assert check(message(body), "link_scheme").message == "1 link is not http(s), mailto or tel: javascript:x"


def test_an_unclosed_link_at_the_end_still_is_checked() -> None:
    assert "link_ip" in failed(message('<a href="http://10.0.0.1/">click'))


html_fragments = st.lists(
    st.sampled_from(
        [
            "<a href=", '"', "'", ">", "</a>", "<img", " alt", " src=", "<![", "<!--", "-->", "<!", "<?", "</",
            "<style>", "</style>", "<script>", "javascript:", "http://", "https://", "[", "]", "::1", "www.",
            "192.168.0.1", "0x", ".com", "{{", "}}", "{%", "%}", "*|", "|*", "%%", "<%", "%>", "&#123;", "&",
            "unsubscribe", "é", "\ud800", "\x00", "\n", "\u2028", "/",
        ]
    )
    | st.text(max_size=8)
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    html=st.one_of(st.text(), html_fragments),
    subject=st.text(),
    text=st.text(),
    preheader=st.text(max_size=20),
    text_was_given=st.booleans(),
)
def test_run_checks_never_raises_and_always_answers_every_check(
    html: str, subject: str, text: str, preheader: str, text_was_given: bool
) -> None:
    msg = RenderedMessage(subject=subject, sender_name="", preheader=preheader, html=html, text=text)

    checked = run_checks(msg, text_was_given=text_was_given)

    assert [r.name for r in checked] == CHECK_NAMES
    for result in checked:
        assert isinstance(result.passed, bool) and isinstance(result.blocking, bool)
        assert_one_line(result)
