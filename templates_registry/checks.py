"""Pre-send checks (issue 4): pure functions over one rendered message.

A version is rendered with its sample values and every check runs on the
result; a failed *blocking* check makes the version not approvable, a failed
non-blocking one is a warning the marketer sees next to the spam score. Checks
never raise: an AI generator can hand us any string, and "the checker crashed"
must not be confused with "the checks passed".

The HTML is parsed once (standard library HTMLParser, like ``rendering.text``)
into the links, images and template-visible strings every check reads.
"""

from __future__ import annotations

import html as html_lib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from templates_registry.rendering import RenderedMessage, RenderError, sample_unsubscribe_url

# Gmail cuts the message off behind a "[Message clipped]" link past 102 KB of
# HTML, hiding the footer and with it the unsubscribe link. Measured in UTF-8
# bytes of the decoded HTML: the limit is on bytes, and é or emoji take several.
GMAIL_CLIP_BYTES = 102 * 1024
# RFC 5322's recommended line length; inboxes cut subjects much earlier (about
# 60 on desktop, 35-40 on phones), so past this the end is certainly lost.
# A warning: long subjects are ugly, not harmful.
SUBJECT_MAX_CHARS = 78
# Capitals read as shouting and are a classic spam-filter signal (SpamAssassin's
# SUBJ_ALL_CAPS). One rule, blocking: more than 60% of the cased letters are
# capitals. Short subjects are exempt, where an acronym ("NEW: AI tools") would
# dominate the share without being shouting.
CAPS_MAX_SHARE = 0.60
CAPS_MIN_LETTERS = 10

_SHOWN_ITEMS = 3  # names listed in a message before "and N more": messages stay one line
_SHOWN_CHARS = 60
# Link text read for domains: a visible address sits near the start, and the
# hostname pattern backtracks, so megabytes of "www.www.www..." must not reach it.
_LINK_TEXT_SCANNED = 500

# A link counts as an unsubscribe link when its visible text says so in a common
# language, or its href does (ours end in /u/<token>, so templates say it in the
# text; other ESPs' merge tags such as *|UNSUB|* or %%unsub_center_url%% say it
# in the href).
_UNSUBSCRIBE_TEXT = (
    "unsubscribe", "unsub", "opt out", "opt-out",  # English
    "abmelden",  # German
    "désinscri", "desinscri", "désabonn", "desabonn",  # French
    "darse de baja", "cancelar suscripci",  # Spanish
    "afmelden",  # Dutch
    "cancelar inscri", "descadastr",  # Portuguese
    "disiscri",  # Italian
)
_UNSUBSCRIBE_HREF = ("unsub", "optout", "opt-out", "opt_out")

# Browsers open these from an email; everything else is either dangerous
# (javascript:, data:, file:) or meaningless out of a web page (relative links).
_ALLOWED_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
_WEB_SCHEMES = frozenset({"http", "https"})
# What the WHATWG URL parser strips before parsing: "java\tscript:" is javascript:.
_URL_STRIP = "".join(map(chr, range(0x21)))
_URL_REMOVE = re.compile(r"[\t\n\r]")
# WHATWG URL parsing reads a host whose last label is a number (decimal, or 0x
# hex) as IPv4: http://3232235777/ and http://0xc0a80101/ are 192.168.1.1.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")

# A hostname: dot-separated labels, the last one letters only (a TLD). \w keeps
# internationalized names (bücher.de); the lookahead stops "paypal.co" matching
# inside "paypal.com8" but allows a full stop that ends the sentence.
_HOSTNAME = r"(?:[\w-]+\.)+[^\W\d_]{2,63}(?![\w-]|\.[\w-])"
# Text that spells out a web address anywhere: a scheme URL or a www. host.
_SHOWN_ADDRESS = re.compile(rf"\bhttps?://({_HOSTNAME})|\b(www\.{_HOSTNAME})", re.I)
# Text that is nothing but a host (maybe with a path), or an email address:
# "paypal.com/login", "help@paypal.com".
_BARE_HOST = re.compile(rf"(?:[\w.+-]+@)?({_HOSTNAME})(?:[/:?#]\S*)?", re.I)
# A bare "something.xx" is also a file name ("report.pdf"); it counts as a host
# only with a TLD that is common, or two letters (country codes) that are not
# also common file extensions.
_COMMON_TLDS = frozenset(
    "com net org info biz edu gov mil int io co ai app dev shop store online site xyz top club "
    "email news blog cloud tech live life world today link click space website page".split()
)
_FILE_EXTENSIONS = frozenset("js md py rb sh ts rs gz db ps cs".split())

# Template syntax that survived rendering: our own (Jinja) and the merge tags of
# other ESPs and of AI output that was never meant for Jinja. Whole tags first,
# so the message shows "{{ first_name }}" rather than "{{".
_LEFTOVER = re.compile(
    r"\{\{.{0,40}?\}\}|\{%.{0,40}?%\}"  # Jinja, Django, Liquid, Handlebars
    r"|\{\{|\}\}|\{%|%\}"  # half of one
    r"|\$?\{ ?[A-Za-z_][\w.]{0,40} ?\}"  # {first_name}, ${first_name}
    r"|\*\|[^|\s]{1,40}\|\*"  # Mailchimp *|FNAME|*
    r"|%%[^%\s]{1,40}%%"  # Salesforce Marketing Cloud %%FirstName%%
    r"|<%.{0,40}?%>"  # SendGrid <%body%>, ERB
    # [FIRST_NAME], [First Name], [Your Company], [Insert link here]; not "[Sale]"
    r"|\[(?:[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+"
    r"|(?i:(?:first|last|full|your|company|customer|recipient|contact)[ _-]?name"
    r"|your company|name|link|url|insert [^\[\]\n]{1,30}))\]",
    re.S,
)

_RAW_TEXT = frozenset({"style", "script"})  # their content is code, never shown


@dataclass(frozen=True)
class CheckResult:
    """One check's answer. ``blocking`` is the severity of the rule that decided it:
    a passed result carries the severity a failure would have (subject_length:
    True, as an empty subject blocks; a too-long one fails with False)."""

    name: str  # stable id, e.g. "html_size"
    passed: bool
    blocking: bool  # a failed blocking check makes the version not approvable
    message: str  # one line, whether the check passed or not

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Link:
    href: str
    text: str  # visible text, whitespace collapsed


@dataclass
class _Image:
    src: str
    has_alt: bool


@dataclass
class _Document:
    links: list[_Link] = field(default_factory=list)
    images: list[_Image] = field(default_factory=list)
    strings: list[str] = field(default_factory=list)  # text and attribute values outside <style>/<script>
    active: list[str] = field(default_factory=list)  # active content found, one short description each


def run_checks(message: RenderedMessage, *, text_was_given: bool, marketing: bool = True) -> list[CheckResult]:
    """Every check, in a stable order, for one rendered message (rendered with the version's sample values and
    the sample ``unsubscribe_url``); ``marketing``: the template's kind is marketing."""
    doc = _parse(message.html)
    return [
        _active_content(doc),
        _html_size(message.html),
        _plain_text_part(message.text, text_was_given=text_was_given),
        _unsubscribe_link(doc.links, marketing=marketing),
        _image_alt(doc.images),
        _link_scheme(doc.links),
        _link_ip(doc.links),
        _link_text_domain(doc.links),
        _subject_length(message.subject),
        _subject_caps(message.subject),
        _unresolved_variables(message, doc),
    ]


# --- parsing ---------------------------------------------------------------


class _Collector(HTMLParser):
    """One pass over the HTML: links with their visible text, images, and the strings
    a recipient can see or a client follows (for leftover template syntax)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.doc = _Document()
        self._link: tuple[str, list[str]] | None = None  # the open <a>: href, text pieces
        self._run: list[str] = []  # adjacent data pieces ("<" arrives apart from "%x%>")
        self._raw = False  # inside <style>/<script>
        self._style = False  # inside <style>: its CSS is read for active content

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._flush()
        attributes = {name: value or "" for name, value in attrs}
        self.doc.strings.extend(value for name, value in attributes.items() if name != "style")
        self.doc.active.extend(tag_problems(tag, attrs))
        self._raw = tag in _RAW_TEXT
        self._style = tag == "style"
        if tag == "a":
            self._open_link(attributes)
        if tag == "area" and "href" in attributes:  # an image-map link: void, no text
            self.doc.links.append(_Link(attributes["href"], ""))
        if tag == "img":
            self.doc.images.append(_Image(attributes.get("src", ""), "alt" in attributes))

    def _open_link(self, attributes: dict[str, str]) -> None:
        self._close_link()  # an <a> inside an open <a> closes it first, as browsers do
        if "href" in attributes:  # without one it is a named anchor, not a link
            self._link = (attributes["href"], [])

    def handle_endtag(self, tag: str) -> None:
        self._flush()
        self._raw = self._style = False
        if tag == "a":
            self._close_link()

    def _close_link(self) -> None:
        if self._link is not None:
            href, pieces = self._link
            self.doc.links.append(_Link(href, " ".join("".join(pieces).split())))
            self._link = None

    def handle_data(self, data: str) -> None:
        if self._style:
            self.doc.active.extend(_css_problems(data, "<style>"))
        if self._raw:
            return
        self._run.append(data)
        if self._link is not None:
            self._link[1].append(data)

    def handle_comment(self, data: str) -> None:
        self._flush()  # comments (Outlook conditionals included) are not shown

    def parse_html_declaration(self, i: int) -> int:
        # "<![" is a bogus comment in HTML (HTML5 tokenizer); the stdlib's SGML
        # marked-section parser raises AssertionError on most such input instead.
        if self.rawdata.startswith("<![", i):
            return self.parse_bogus_comment(i)
        return super().parse_html_declaration(i)

    def _flush(self) -> None:
        if self._run:
            self.doc.strings.append("".join(self._run))
            self._run = []

    def close(self) -> None:
        super().close()
        self._flush()
        self._close_link()  # an <a> left open at the end still is a link


def _parse(html: str) -> _Document:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.doc


# --- the checks, in run order ------------------------------------------------


def _html_size(html: str) -> CheckResult:
    size = len(html.encode("utf-8", "surrogatepass"))  # surrogatepass: a lone surrogate must not raise
    kb = f"{size / 1024:.1f} KB"
    if size > GMAIL_CLIP_BYTES:
        return CheckResult("html_size", False, True, f"HTML is {kb}; Gmail clips messages over 102 KB")
    return CheckResult("html_size", True, True, f"HTML is {kb}, under Gmail's 102 KB clipping limit")


def _plain_text_part(text: str, *, text_was_given: bool) -> CheckResult:
    # Multipart mail without a text part, or with an empty one, scores as spam
    # (SpamAssassin MIME_HTML_ONLY); a derived part is as good as a written one.
    source = "written plain-text part" if text_was_given else "plain-text part derived from the HTML"
    if not text.strip():
        return CheckResult("plain_text_part", False, True, f"the {source} is empty")
    if not text_was_given:
        return CheckResult("plain_text_part", True, True, "plain-text part derived from the HTML")
    return CheckResult("plain_text_part", True, True, f"plain-text part given ({len(text.strip())} characters)")


def _unsubscribe_link(links: list[_Link], *, marketing: bool) -> CheckResult:
    # Blocking for marketing mail although List-Unsubscribe is always added: CAN-SPAM and GDPR want a visible way
    # out in the body, and many clients never show the header. It must be Sendplane's signed link (the
    # unsubscribe_url variable): any other link's clicks never reach the suppression list.
    ours = sample_unsubscribe_url()
    if any(_clean_url(link.href) == ours for link in links):
        return CheckResult("unsubscribe_link", True, marketing, "Sendplane's unsubscribe link found ({{ unsubscribe_url }})")
    if not marketing:
        return CheckResult("unsubscribe_link", True, False, "transactional template: no unsubscribe link required")
    other = next((link for link in links if _is_unsubscribe(link)), None)
    if other is not None:
        shown = f"{_quoted(other.text)} ({_shown(other.href)})" if other.text else _shown(other.href)
        return CheckResult(
            "unsubscribe_link", False, True,
            f"the unsubscribe link {shown} is not Sendplane's: use href=\"{{{{ unsubscribe_url }}}}\" so a click suppresses",
        )
    return CheckResult(
        "unsubscribe_link", False, True,
        "no unsubscribe link in the body: add <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a> "
        "(the List-Unsubscribe header is not enough)",
    )


def _is_unsubscribe(link: _Link) -> bool:
    text, href = link.text.casefold(), link.href.casefold()
    return any(word in text for word in _UNSUBSCRIBE_TEXT) or any(word in href for word in _UNSUBSCRIBE_HREF)


def _image_alt(images: list[_Image]) -> CheckResult:
    # Images are off by default in many clients and screen readers read alt.
    # alt="" is fine (it marks a decorative image); a missing alt is not.
    # A warning: the message still works, it is just worse for some readers.
    missing = [_file_name(image.src) for image in images if not image.has_alt]
    if missing:
        subject = _count(missing, "image has", "images have")
        return CheckResult("image_alt", False, False, f"{subject} no alt text: {_listed(missing)}")
    return CheckResult("image_alt", True, False, f"every image ({len(images)}) has alt text" if images else "no images")


def _link_scheme(links: list[_Link]) -> CheckResult:
    # Blocking: javascript:/data:/file: links are an attack or a mistake, and a
    # relative link leads nowhere from an inbox.
    bad = [_shown(_clean_url(link.href)) or '""' for link in links if _scheme_problem(link.href)]
    if bad:
        subject = _count(bad, "link is", "links are")
        return CheckResult("link_scheme", False, True, f"{subject} not http(s), mailto or tel: {_listed(bad)}")
    passed = f"every link ({len(links)}) is http(s), mailto, tel or an in-message anchor" if links else "no links"
    return CheckResult("link_scheme", True, True, passed)


def _scheme_problem(href: str) -> bool:
    url = _clean_url(href)
    if url.startswith("#"):  # in-message anchor
        return False
    parts = _split(url)
    if parts is None or parts.scheme not in _ALLOWED_SCHEMES:  # no scheme: a relative link
        return True
    return parts.scheme in _WEB_SCHEMES and not parts.hostname  # "http:foo", "https:///x"


def _link_ip(links: list[_Link]) -> CheckResult:
    # Blocking: links to bare IPs are what phishing and malware use, and spam
    # filters score them hard (SpamAssassin NUMERIC_HTTP_ADDR).
    bad = [_shown(_clean_url(link.href)) for link in links if _is_ip_host(_host(link.href))]
    if bad:
        subject = _count(bad, "link goes", "links go")
        return CheckResult("link_ip", False, True, f"{subject} to a raw IP address: {_listed(bad)}")
    return CheckResult("link_ip", True, True, "no link points at a raw IP address")


def _is_ip_host(host: str | None) -> bool:
    if not host:
        return False
    if ":" in host:  # only a bracketed IPv6 literal leaves a colon in the hostname
        return True
    return bool(_NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]))


def _link_text_domain(links: list[_Link]) -> CheckResult:
    # Blocking: text that reads as one address while the link goes to another
    # is the phishing pattern (SpamAssassin's and Gmail's "deceptive link").
    bad = [mismatch for link in links if (mismatch := _domain_mismatch(link))]
    if bad:
        subject = _count(bad, "link's text names", "links' texts name")
        return CheckResult("link_text_domain", False, True, f"{subject} a domain other than the target: {_listed(bad)}")
    return CheckResult("link_text_domain", True, True, "no link text shows a domain other than its target")


def _domain_mismatch(link: _Link) -> str | None:
    target = _target_domain(link.href)
    if target is None:  # tel:, relative, javascript: (link_scheme reports those)
        return None
    for shown in _shown_domains(link.text):
        if not _same_site(shown, target):
            return f"{_quoted(shown)} goes to {_shown(target)}"
    return None


def _shown_domains(text: str) -> list[str]:
    """Addresses the link text spells out. A scheme URL or a www. host counts anywhere
    in the text ("Log in at www.paypal.com"); a bare host or an email address only
    when it is the whole text ("paypal.com"), so "Unsubscribe from northwind.com"
    is not read as a target."""
    text = text[:_LINK_TEXT_SCANNED]
    shown = [m.group(1) or m.group(2) for m in _SHOWN_ADDRESS.finditer(text)]
    bare = _BARE_HOST.fullmatch(text.strip(" .,;:!?()[]<>\"'"))
    if not shown and bare and _looks_like_tld(bare.group(1).rsplit(".", 1)[-1]):
        shown.append(bare.group(1))
    return shown


def _looks_like_tld(label: str) -> bool:
    label = label.lower()
    if label in _COMMON_TLDS or not label.isascii():  # non-ASCII: an internationalized TLD
        return True
    return len(label) == 2 and label not in _FILE_EXTENSIONS


def _target_domain(href: str) -> str | None:
    parts = _split(_clean_url(href))
    if parts is None:
        return None
    if parts.scheme == "mailto":  # text "help@example.com" linking to mailto:help@example.com
        return parts.path.split("?")[0].rpartition("@")[2] or None
    return _host(href) if parts.scheme in _WEB_SCHEMES else None


def _same_site(shown: str, target: str) -> bool:
    # Loose on purpose: "example.com" may link to "mail.example.com" and back.
    shown, target = _comparable(shown), _comparable(target)
    return shown == target or shown.endswith("." + target) or target.endswith("." + shown)


def _comparable(domain: str) -> str:
    domain = domain.lower().rstrip(".").removeprefix("www.")
    try:
        return domain.encode("idna").decode("ascii")  # bücher.de and xn--bcher-kva.de are one site
    except UnicodeError:
        return domain


def _subject_length(subject: str) -> CheckResult:
    # Empty blocks (it is refused at save too, but a render may still come out
    # empty); long only warns.
    if not subject.strip():
        return CheckResult("subject_length", False, True, "subject is empty")
    if len(subject) > SUBJECT_MAX_CHARS:
        return CheckResult(
            "subject_length", False, False,
            f"subject is {len(subject)} characters; inboxes cut it off well before {SUBJECT_MAX_CHARS}",
        )
    return CheckResult("subject_length", True, True, f"subject is {len(subject)} characters")


def _subject_caps(subject: str) -> CheckResult:
    cased = [c for c in subject if c.isupper() or c.islower()]  # scripts without case do not count
    capitals = sum(c.isupper() for c in cased)
    share = capitals / len(cased) if cased else 0.0
    if len(cased) < CAPS_MIN_LETTERS:
        return CheckResult("subject_caps", True, True, f"subject has {len(cased)} letters; too short to judge capitals")
    summary = f"{share:.0%} of the subject's letters are capitals ({capitals} of {len(cased)})"
    if share > CAPS_MAX_SHARE:
        verdict = f"over {CAPS_MAX_SHARE:.0%} reads as shouting and as spam"
        return CheckResult("subject_caps", False, True, f"{summary}; {verdict}")
    return CheckResult("subject_caps", True, True, summary)


def _unresolved_variables(message: RenderedMessage, doc: _Document) -> CheckResult:
    # Blocking: "Hi {{ first_name }}" or "Hi [FIRST_NAME]" in front of every
    # recipient is the most visible mistake a template can make.
    found = _leftovers(_rendered_parts(message, doc))
    if found:
        return CheckResult(
            "unresolved_variables", False, True, f"leftover template syntax: {_listed(found)}"
        )
    return CheckResult("unresolved_variables", True, True, "no leftover template syntax")


def _rendered_parts(message: RenderedMessage, doc: _Document) -> list[tuple[str, str]]:
    # The HTML is read through the parser: CSS holds "}}" legitimately, and
    # "&#123;&#123;" is shown as "{{".
    html = [("HTML", string) for string in doc.strings]
    headers = [("subject", message.subject), ("sender name", message.sender_name), ("preheader", message.preheader)]
    return headers + html + [("text part", message.text)]


def _leftovers(parts: Iterable[tuple[str, str]]) -> list[str]:
    found: dict[str, str] = {}  # snippet -> where first seen (the preheader is in the HTML too)
    for where, value in parts:
        for match in _LEFTOVER.finditer(value):
            found.setdefault(_quoted(match.group()), where)
    return [f"{snippet} in the {where}" for snippet, where in found.items()]


# --- active content (issue 15) -----------------------------------------------
#
# Mail clients that run scripts are few, but webmail that fails to strip one is
# a stored XSS on the mailbox's origin, and forms, frames and javascript: links
# are the phishing kit. So a version is refused at approval when its sample
# render holds any of it, and every recipient's render is checked again before
# it is accepted (trigger) and before it is sent (worker): values arrive per
# recipient, and a branch the sample values did not take was never checked.
#
# Rules (the same at approval and per recipient, tag_problems/_attribute_problem):
# - elements that run or embed code, submit data or re-point URLs: _ACTIVE_TAGS;
#   <meta http-equiv=refresh> (a redirect; other http-equiv values are inert);
# - any on* attribute (event handler), whatever its value;
# - a URL attribute (_URL_ATTRIBUTES; each candidate of _URL_LIST_ATTRIBUTES) or a
#   CSS url()/@import (style attribute, <style>) whose scheme is not in
#   _SAFE_URL_SCHEMES, read as a browser reads it: entities decoded, leading
#   spaces and control characters stripped, tab and newline removed, case folded.
#   No scheme (relative, #anchor) is not active content (link_scheme reports
#   relative links);
# - CSS that runs code in old engines: expression(), behavior:, -moz-binding.

# cid: images attached to the message itself; sms:, data:, javascript:, vbscript:,
# file: and anything else are refused (data: is an inline document or script,
# and Gmail and Outlook block data: images anyway).
_SAFE_URL_SCHEMES = frozenset({"http", "https", "mailto", "tel", "cid"})
_ACTIVE_TAGS = frozenset(
    "script iframe frame frameset object embed applet form base portal noembed "
    "animate set".split()  # SVG animate/set can rewrite an href to javascript: after sanitizing
)
_URL_ATTRIBUTES = frozenset(
    "href xlink:href src action formaction background poster lowsrc dynsrc data codebase "
    "cite longdesc manifest icon profile classid".split()
)
_URL_LIST_ATTRIBUTES = frozenset({"srcset", "imagesrcset", "ping", "archive"})  # several URLs in one value
_SCHEME_PREFIX = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*):")
_CSS_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.S)
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})[ \t\n]?|\\(.)", re.S)
_CSS_URL = re.compile(r"url\(\s*(?:\"([^\"]*)|'([^']*)|([^)]*))|@import\s*(?:\"([^\"]*)|'([^']*))", re.I)
_CSS_ACTIVE = re.compile(r"expression\s*\(|behavior\s*:|-moz-binding", re.I)


def _active_content(doc: _Document) -> CheckResult:
    # Blocking: see the rules above.
    if doc.active:
        found = list(dict.fromkeys(doc.active))
        return CheckResult("active_content", False, True, f"active content is not allowed in email: {_listed(found)}")
    return CheckResult("active_content", True, True, "no scripts, event handlers, frames, forms or unsafe URL schemes")


def tag_problems(tag: str, attrs: Iterable[tuple[str, str | None]]) -> list[str]:
    """What is active in one start tag (``tag`` and attribute names lower case, values with entities decoded)."""
    problems = [f"<{_shown(tag)}>"] if tag in _ACTIVE_TAGS else []
    for name, value in attrs:
        problem = _attribute_problem(tag, name, value or "")
        if problem:
            problems.append(problem)
    if tag == "meta" and any(n == "http-equiv" and (v or "").strip().lower() == "refresh" for n, v in attrs):
        problems.append("<meta http-equiv=refresh>")
    return problems


def _attribute_problem(tag: str, name: str, value: str) -> str | None:
    if name.startswith("on") and len(name) > 2:
        return f"{_shown(name)} handler on <{_shown(tag)}>"
    if name in _URL_ATTRIBUTES:
        scheme = _unsafe_scheme(value)
        return f"{scheme}: in <{_shown(tag)} {name}>" if scheme else None
    if name in _URL_LIST_ATTRIBUTES:
        scheme = next(filter(None, map(_unsafe_scheme, re.split(r"[,\s]+", value))), None)
        return f"{scheme}: in <{_shown(tag)} {name}>" if scheme else None
    if name == "style":
        return next(iter(_css_problems(value, f"<{_shown(tag)} style>")), None)
    return None


def _unsafe_scheme(url: str) -> str | None:
    """The scheme a browser would use for ``url`` (entities already decoded), when it is not allowed."""
    match = _SCHEME_PREFIX.match(_clean_url(url))
    if match is None or match.group(1).lower() in _SAFE_URL_SCHEMES:
        return None
    return _shown(match.group(1).lower())


def _css_problems(css: str, where: str) -> list[str]:
    css = _CSS_ESCAPE.sub(_css_unescape, _CSS_COMMENT.sub("", css))
    problems = [f"{_shown(m.group().rstrip('( :'))} in {where}" for m in _CSS_ACTIVE.finditer(css)]
    for match in _CSS_URL.finditer(css):
        scheme = _unsafe_scheme(next(g for g in match.groups() if g is not None))
        if scheme:
            problems.append(f"{scheme}: in {where} url()")
    return problems


def _css_unescape(match: re.Match[str]) -> str:
    if match.group(2) is not None:
        return match.group(2)
    code = int(match.group(1), 16)
    return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


# Per recipient: the rendered HTML arrives as the chunks the template yielded
# (RenderedMessage.html_parts): the template's constant text, the same string
# objects for every recipient, and the values between them. Parsing the whole
# document per message costs ~4 ms (50 KB newsletter); so each chunk is read
# once per process for the state it starts in (outside a tag, inside one,
# inside a quoted or unquoted attribute value) and the verdict cached: per
# message only the values are new, and a value without markup characters
# needs no parse at all. The one thing read per message is an attribute value
# that spans chunks ("<a href=\"" + value + "\">"): it is checked as a whole.

_OUT, _TAG, _DQ, _SQ, _UQ = range(5)  # where a chunk starts: the states that matter between chunks
_UNQUOTED_END = re.compile(r"[\s>]")
# The attributes of an unfinished start tag (the end of a chunk): name, then a
# closed value, an open one (the chunk ends inside it), or none.
_TAIL_ATTRIBUTE = re.compile(
    r"([^\s\"'>/=][^\s\"'>/=]*)(?:\s*=\s*(?:\"([^\"]*)(\"?)|'([^']*)('?)|([^\s\"'>]+)(\Z)?|(\Z)))?"
)
_STAND_IN = "<element "  # opened before a chunk that starts inside a start tag whose name an earlier chunk had
_PENDING_LIMIT = 4096  # an attribute value longer than this is judged by its start (a scheme is at the start)


@dataclass(frozen=True)
class _Chunk:
    """What one chunk does, read from a given start state."""

    problem: str | None
    closes_at: int  # started inside an attribute value: where it ends in the chunk (-1: it does not)
    state: int  # the state at the chunk's end
    tag: str = ""  # the element whose start tag is open at the end, if any
    attribute: str = ""  # the attribute whose value is open at the end, if any
    partial: str = ""  # that value so far (entities not yet decoded)


_chunks: list[dict[str, _Chunk]] = [{} for _ in range(5)]  # by start state, then chunk
_CHUNKS_LIMIT = 50_000


def refuse_active_content(message: RenderedMessage) -> RenderedMessage:
    """``message`` unchanged, or RenderError naming the active content (the per-recipient check)."""
    problem = active_content_problem(message)
    if problem is not None:
        raise RenderError(f"active content is not allowed in email: {problem}", field="mjml_body")
    return message


def active_content_problem(message: RenderedMessage) -> str | None:
    """The first active content in a rendered message, or None. Reads html_parts when the render gave them.

    The loop is the per-recipient hot path (~130 chunks a newsletter): chunks that
    cannot change anything are passed over without a call or an allocation.
    """
    state, tag, attribute, pending = _OUT, "", "", ""
    for chunk in message.html_parts or (message.html,):
        if state == _OUT:
            if "<" not in chunk:  # text: most values, and constants between values
                continue
        elif state != _TAG:  # inside an attribute value: find where it ends
            closes_at = _value_end(state, chunk)
            if attribute and len(pending) < _PENDING_LIMIT:
                pending += chunk if closes_at < 0 else chunk[:closes_at]
            if closes_at < 0:
                continue
            problem = attribute and _pending_problem(tag, attribute, pending)
            if problem:
                return problem
        facts = _read_chunk(state, chunk)
        if facts.problem:
            return facts.problem
        if facts.state != _TAG or facts.tag:  # a chunk read from inside a tag does not know the tag's name
            tag = facts.tag
        state, attribute, pending = facts.state, facts.attribute, facts.partial
    if state not in (_OUT, _TAG) and attribute:
        return _pending_problem(tag, attribute, pending)
    return None


def _value_end(state: int, chunk: str) -> int:
    """Where an attribute value open at the chunk's start ends in it (-1: it goes on)."""
    if state == _UQ:
        end = _UNQUOTED_END.search(chunk)
        return end.start() if end else -1
    return chunk.find('"' if state == _DQ else "'")


def _pending_problem(tag: str, attribute: str, raw_value: str) -> str | None:
    if attribute in _URL_ATTRIBUTES and raw_value.startswith(("https://", "http://")):
        return None  # the common case, decided without decoding
    return _attribute_problem(tag or "element", attribute, html_lib.unescape(raw_value[:_PENDING_LIMIT]))


def _read_chunk(state: int, chunk: str) -> _Chunk:
    cache = _chunks[state]
    facts = cache.get(chunk)
    if facts is None:
        facts = _chunk_facts(state, chunk)
        if len(cache) >= _CHUNKS_LIMIT:
            cache.clear()
        cache[chunk] = facts
    return facts


def _chunk_facts(state: int, chunk: str) -> _Chunk:
    closes_at = -1
    if state in (_DQ, _SQ, _UQ):
        closes_at = _value_end(state, chunk)
        if closes_at < 0:
            return _Chunk(None, -1, state)
        chunk = chunk[closes_at + (state != _UQ) :]
        state = _TAG
    scanner = _ActiveScanner()
    scanner.feed((_STAND_IN if state == _TAG else "") + chunk)  # inside a tag: read on as if one had opened
    tail_state, tag, attribute, partial, tail_problems = _tail(scanner.rawdata)
    problems = scanner.problems + tail_problems
    if attribute not in _URL_ATTRIBUTES and attribute not in _URL_LIST_ATTRIBUTES and attribute != "style":
        attribute = partial = ""  # a value the per-message loop need not collect (on* was refused already)
    return _Chunk(problems[0] if problems else None, closes_at, tail_state, tag, attribute, partial)


def _tail(rest: str) -> tuple[int, str, str, str, list[str]]:
    """The state after an unfinished construct the parser kept back, and what is active in it so far."""
    if not re.match(r"<[a-zA-Z]", rest):
        return _OUT, "", "", "", []  # text, or an unfinished comment or end tag: nothing a value could make active
    name_end = re.match(r"<([^\s/>]*)", rest)
    tag = name_end.group(1).lower() if name_end else ""
    named = "" if rest.startswith(_STAND_IN) else tag  # the stand-in does not name the element
    problems = [f"<{_shown(tag)}>"] if tag in _ACTIVE_TAGS else []
    for match in _TAIL_ATTRIBUTE.finditer(rest, name_end.end() if name_end else 1):
        name = match.group(1).lower()
        dq, dq_end, sq, sq_end, unquoted, unquoted_end, bare_end = match.group(2, 3, 4, 5, 6, 7, 8)
        if dq is not None and not dq_end:
            return _DQ, named, name, dq, problems + _open_problems(tag, name)
        if sq is not None and not sq_end:
            return _SQ, named, name, sq, problems + _open_problems(tag, name)
        if unquoted_end is not None or bare_end is not None:
            return _UQ, named, name, unquoted or "", problems + _open_problems(tag, name)
        value = next((v for v in (dq, sq, unquoted) if v is not None), "")
        problem = _attribute_problem(tag, name, html_lib.unescape(value))
        if problem:
            problems.append(problem)
    return _TAG, named, "", "", problems


def _open_problems(tag: str, name: str) -> list[str]:
    """An attribute whose value a later chunk fills: an event handler is refused whatever the value."""
    problem = _attribute_problem(tag, name, "")
    return [problem] if problem else []


class _ActiveScanner(HTMLParser):
    """Active content in complete tags and <style> blocks; what it keeps back unfinished is read by _tail."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.problems.extend(tag_problems(tag, attrs))
        self._style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._style = False

    def handle_data(self, data: str) -> None:
        if self._style:
            self.problems.extend(_css_problems(data, "<style>"))

    def parse_html_declaration(self, i: int) -> int:
        if self.rawdata.startswith("<![", i):  # as _Collector: "<![" is a bogus comment
            return self.parse_bogus_comment(i)
        return super().parse_html_declaration(i)


# --- helpers ----------------------------------------------------------------


def _clean_url(href: str) -> str:
    return _URL_REMOVE.sub("", href.strip(_URL_STRIP))


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:  # "http://[::1", or a netloc NFKC turns into something else
        return None


def _host(href: str) -> str | None:
    """The host a browser would contact: percent-decoded, full-width digits and dots
    folded (browsers apply IDNA mapping, so "１９２．１６８．０．１" is an IP too)."""
    parts = _split(_clean_url(href))
    if parts is None or not parts.hostname:
        return None
    host = unicodedata.normalize("NFKC", unquote(parts.hostname)).lower()
    return host.replace("\u3002", ".").replace("\uff61", ".")


def _file_name(src: str) -> str:
    path = (_split(src.strip()) or SplitResult("", "", src, "", "")).path
    return _shown(path.rstrip("/").rsplit("/", 1)[-1] or src or "(no src)")


def _count(items: list[Any], singular: str, plural: str) -> str:
    """"1 image has" / "3 images have": the start of a one-line message."""
    return f"{len(items)} {singular if len(items) == 1 else plural}"


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_ITEMS])
    return shown if len(items) <= _SHOWN_ITEMS else f"{shown}, and {len(items) - _SHOWN_ITEMS} more"


def _quoted(value: str) -> str:
    return f'"{_shown(value)}"'


def _shown(value: str) -> str:
    """Template-controlled text made safe for a one-line message: whitespace (line
    breaks included) collapsed, control characters replaced, length capped."""
    line = "".join(c if c.isprintable() else "?" for c in " ".join(value.split()))
    return line if len(line) <= _SHOWN_CHARS else line[: _SHOWN_CHARS - 3] + "..."
