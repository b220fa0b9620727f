"""Our own message's form (issue 15, class 7): no header line over 998 octets, no control in a header, no address
a server must refuse. Each of these reached a receiving server, whose "500 Line too long" was recorded as the
recipient's bounce."""

from __future__ import annotations

import email
from email import policy
from email.header import decode_header, make_header
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.models import Campaign, Message
from dispatch.services.triggers import trigger_accept
from templates_registry import services
from templates_registry.models import Variant, VariantVersion
from templates_registry.rendering import RenderError
from templates_registry.rendering.mime import build_mime, encode_headers, standard_headers
from templates_registry.rendering.pipeline import check_header
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES, recipients

UNSUBSCRIBE = ("https://sendplane.example.com/u/tok.0123456789abcdef", "mailto:unsubscribe+tok@mail.example.com")


def message(
    *, subject: str, name: str, sender: str = "news@mail.example.com", to: str = "a@example.org", unsubscribe: tuple[str, str] = UNSUBSCRIBE
) -> bytes:
    headers = standard_headers(
        sender_name=name, sender_address=sender, recipient=to, subject=subject, message_id="<1@mail.example.com>", unsubscribe=unsubscribe
    )
    return build_mime(headers=encode_headers(headers), text="t", html="<p>h</p>")


def header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def assert_lines_fit(raw: bytes) -> None:
    """998 octets at most (RFC 5322 2.1.1 MUST); over 78 (its SHOULD) only for one word there was no space to fold at."""
    for line in header_lines(raw):
        assert len(line) <= 998, line[:100]
        words = line.split(b": ", 1)[1] if line[:1] not in b" \t" else line
        assert len(line) <= 78 or b" " not in words.strip(), line


def display_name(raw: bytes) -> str:
    """RFC 2047 6.2: the white space between two encoded-words is not part of the text. The stdlib's address parser
    (policy.default) keeps it in a display name, so an encoded name is read with decode_header, which follows 6.2."""
    unfolded = raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ").decode("utf-8").split("\r\n")
    phrase = next(line for line in unfolded if line.startswith("From: "))[len("From: ") :].rsplit(" <", 1)[0]
    if phrase.startswith("=?utf-8?b?"):
        return str(make_header(decode_header(phrase)))
    return str(email.message_from_bytes(raw, policy=policy.default)["From"].addresses[0].display_name)


# Values as a template and a context may render them: any character (controls too) but the lone surrogates JSON refuses.
anything = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=1500)
# Values check_header lets through: no controls, no line separators, stripped; and ASCII heavy in what a header
# quotes, escapes or decodes (specials, runs of spaces, long words, text that looks like an encoded-word).
tricky = ["x" * 70, "é", "=?utf-8?q?a?=", "  ", *' "\\()<>@,;:.=?ab']
clean = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=1500),
    st.lists(st.sampled_from(tricky), max_size=60).map("".join),
).map(str.strip)


@settings(max_examples=300, deadline=None)
@given(subject=anything, name=anything, sender=st.emails(), to=st.emails(), url_tail=st.text("abcdef0123456789/-._~", max_size=900))
def test_no_header_line_is_longer_than_998_whatever_the_values(subject: str, name: str, sender: str, to: str, url_tail: str) -> None:
    raw = message(subject=subject, name=name, sender=sender, to=to, unsubscribe=(f"https://x.example/u/{url_tail}", "mailto:u@x.example"))
    assert_lines_fit(raw)


@settings(max_examples=300, deadline=None)
@given(subject=clean, name=clean, sender=st.emails())
def test_the_stdlib_reads_back_the_same_subject_and_display_name(subject: str, name: str, sender: str) -> None:
    raw = message(subject=subject, name=name, sender=sender)
    assert_lines_fit(raw)
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert str(parsed["Subject"]) == subject
    assert parsed["From"].addresses[0].addr_spec == sender
    if name:
        assert display_name(raw) == name


@pytest.mark.parametrize("name", ["x" * 1000, "Atelier " * 125, "Zoë " * 250, '"Quoted, and \\ long" ' * 50])
def test_a_sender_name_of_1000_characters_is_folded_not_one_line(name: str) -> None:
    raw = message(subject="Hi", name=name)
    assert_lines_fit(raw)
    assert display_name(raw) == name.strip() or display_name(raw) == name


def test_a_subject_of_one_long_word_goes_as_encoded_words() -> None:
    subject = "y" * 1200
    raw = message(subject=subject, name="Atelier")
    assert max(len(line) for line in header_lines(raw)) <= 78
    assert str(email.message_from_bytes(raw, policy=policy.default)["Subject"]) == subject


def test_list_unsubscribe_with_a_long_url_folds_between_the_urls_never_inside_or_encoded() -> None:
    url = "https://sendplane.example.com/u/" + "a" * 900
    raw = message(subject="Hi", name="Atelier", unsubscribe=(url, "mailto:u@x.example"))
    assert_lines_fit(raw)
    lines = [line for line in raw.decode().replace("\r\n ", "\n ").split("\r\n") if line.startswith("List-Unsubscribe:")]
    assert lines == [f"List-Unsubscribe: <{url}>,\n <mailto:u@x.example>"]


def test_a_header_line_that_cannot_be_folded_is_refused_not_sent() -> None:
    with pytest.raises(ValueError, match="longer than 998 octets"):
        build_mime(headers=encode_headers([("Message-ID", "<" + "m" * 1000 + "@x>")]), text="t", html="h")


@pytest.mark.parametrize("control", ["\x0b", "\x0c", "\x01", "\x1b", "\x7f", "\x85", "\u2028"])
def test_check_header_refuses_controls_in_one_line(control: str) -> None:
    with pytest.raises(RenderError) as caught:
        check_header(f"Hi{control}there", "subject")
    assert str(caught.value) == f"subject: contains the control character U+{ord(control):04X} after rendering (header injection)"


def test_check_header_refuses_values_longer_than_their_limit_and_keeps_a_tab() -> None:
    assert check_header("x" * 998, "subject") == "x" * 998 and check_header("a\tb", "subject") == "a\tb"
    assert check_header(" " + "n" * 200 + " ", "sender_name") == "n" * 200
    with pytest.raises(RenderError, match=r"^subject: is 999 characters after rendering, at most 998$"):
        check_header("x" * 999, "subject")
    with pytest.raises(RenderError, match=r"^sender_name: is 1000 characters after rendering, at most 200$"):
        check_header("n" * 1000, "sender_name")


@pytest.fixture
def version(variant: Variant) -> VariantVersion:
    """The conftest version, its sender name filled from the context (the way a 1,000-character name gets in) and
    its subject from another value."""
    return services.version_create(
        variant=variant,
        mjml_body=SIMPLE_MJML,
        subject="A pick for you: {{ items[0] }}",
        sender_name="{{ first_name }} at Atelier",
        preheader="Two picks for {{ first_name }}",
        variables=SIMPLE_VARIABLES,
    )


def rejection_of(campaign: Campaign, bad: dict[str, Any]) -> str:
    response, _ = trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(1) + [bad])
    assert response["accepted"] == 1 and response["rejected"] == 1, response
    assert not Message.objects.filter(recipient=bad["address"]).exists()
    return str(response["rejections"][0]["reason"])


@pytest.mark.django_db
def test_a_sender_name_of_1000_characters_is_refused_for_that_recipient_at_the_trigger(campaign: Campaign) -> None:
    bad = {"address": "long@example.org", "context": SIMPLE_VARIABLES | {"first_name": "x" * 1000}}
    reason = rejection_of(campaign, bad)
    assert reason == "does not render: sender_name: is 1011 characters after rendering, at most 200"


@pytest.mark.django_db
@pytest.mark.parametrize("control", ["\x0b", "\x0c"])
def test_vt_or_ff_in_the_subject_from_a_context_value_is_refused_for_that_recipient(campaign: Campaign, control: str) -> None:
    bad = {"address": "vt@example.org", "context": SIMPLE_VARIABLES | {"items": [f"Hat{control}Bcc: all@example.org"]}}
    reason = rejection_of(campaign, bad)
    assert reason.startswith(f"does not render: subject: contains the control character U+{ord(control):04X}"), reason


@pytest.mark.django_db
@pytest.mark.parametrize(
    "address, octets",
    [("l" * 65 + "@example.org", 65), ("é" * 33 + "@example.org", 66)],  # 33 characters, but 66 octets of UTF-8
)
def test_a_local_part_over_64_octets_is_refused_for_that_recipient(campaign: Campaign, address: str, octets: int) -> None:
    reason = rejection_of(campaign, {"address": address, "context": SIMPLE_VARIABLES})
    assert reason == f"invalid address: the part before the @-sign is {octets} octets, at most 64 (RFC 5321)"


@pytest.mark.django_db
def test_a_local_part_of_64_octets_and_an_address_of_254_are_accepted(campaign: Campaign) -> None:
    longest = "l" * 64 + "@" + ".".join(["d" * 63, "e" * 63, "f" * 57, "org"])
    assert len(longest) == 254
    people = [{"address": "l" * 64 + "@example.org", "context": SIMPLE_VARIABLES}, {"address": longest, "context": SIMPLE_VARIABLES}]
    response, _ = trigger_accept(campaign=campaign, idempotency_key="k", recipients=people)
    assert response["accepted"] == 2, response
