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

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from templates_registry.rendering import RenderedMessage

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


def run_checks(message: RenderedMessage, *, text_was_given: bool) -> list[CheckResult]:
    """Every check, in a stable order, for one rendered message (rendered with the version's sample values)."""
    doc = _parse(message.html)
    return [
        _html_size(message.html),
        _plain_text_part(message.text, text_was_given=text_was_given),
        _unsubscribe_link(doc.links),
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

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._flush()
        attributes = {name: value or "" for name, value in attrs}
        self.doc.strings.extend(value for name, value in attributes.items() if name != "style")
        self._raw = tag in _RAW_TEXT
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
        self._raw = False
        if tag == "a":
            self._close_link()

    def _close_link(self) -> None:
        if self._link is not None:
            href, pieces = self._link
            self.doc.links.append(_Link(href, " ".join("".join(pieces).split())))
            self._link = None

    def handle_data(self, data: str) -> None:
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


def _unsubscribe_link(links: list[_Link]) -> CheckResult:
    # Blocking although List-Unsubscribe is always added: CAN-SPAM and GDPR want
    # a visible way out in the body, and many clients never show the header.
    found = next((link for link in links if _is_unsubscribe(link)), None)
    if found is None:
        return CheckResult(
            "unsubscribe_link", False, True,
            "no unsubscribe link in the body; a visible one is required besides the List-Unsubscribe header",
        )
    shown = f"{_quoted(found.text)} ({_shown(found.href)})" if found.text else _shown(found.href)
    return CheckResult("unsubscribe_link", True, True, f"unsubscribe link found: {shown}")


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
