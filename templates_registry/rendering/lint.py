"""Lint of a message as it goes out: its header block, read from the final bytes.

What receivers check and the RFCs require, checked once on what is actually
sent rather than trusted to each step that wrote a part of it:

- exactly one From, To, Date and Message-ID (RFC 5322 3.6; DMARC reads one
  From, with one mailbox), a Date that parses and a Message-ID that reads
  ``<left@right>``; at most one of the fields RFC 5322 allows once;
- on marketing mail, a List-Unsubscribe with an https URI (a mailto beside it
  is fine) and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC
  8058; Gmail and Yahoo require both of bulk senders);
- lines of at most 998 octets (RFC 5322 2.1.1), ended by CRLF only, no
  control characters, and no 8-bit octets but in To, which carries a local
  part that has no ASCII form as UTF-8 (RFC 6532; such a message goes out only
  over SMTPUTF8: ``dispatch.services.delivery.envelope_recipient``).

Only the header block is read (up to the first CRLF CRLF), and by hand rather
than with the email package: its parser takes a line that is not a field as the
start of the body and says so only as a defect, where this names the line. It
never raises, whatever the bytes (a property test feeds it arbitrary ones).
Each problem is one short line naming its header, with a ``Rule``: a bounded
vocabulary, fit for a metric label, never the text.
"""

from __future__ import annotations

import enum
import re
from email.utils import getaddresses, parsedate_to_datetime
from typing import NamedTuple

from django.core.mail import BadHeaderError, EmailMessage

from templates_registry.rendering.errors import RenderError


class Rule(enum.StrEnum):
    NO_HEADER_END = "no_header_end"
    MALFORMED = "malformed_line"
    LINE_LENGTH = "line_length"
    LINE_ENDING = "bare_cr_lf"
    CONTROL = "control_character"
    EIGHT_BIT = "eight_bit"
    MISSING = "missing_header"
    DUPLICATE = "duplicate_header"
    ADDRESS = "address"
    DATE = "date"
    MESSAGE_ID = "message_id"
    UNSUBSCRIBE = "list_unsubscribe"
    ONE_CLICK = "one_click"


class Problem(NamedTuple):
    rule: Rule
    text: str  # one short line, naming the header


class MessageLintError(RenderError):
    """A built message that fails the lint: never sent. A RenderError, so each transport ends it as ``failed``."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("header lint: " + "; ".join(p.text for p in problems))


_HEADER_END = b"\r\n\r\n"
_LINE_MAX = 998  # octets, without the CRLF (RFC 5322 2.1.1)
_MAX_PROBLEMS = 10  # a reason stays one short line however broken the input
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")  # ftext (RFC 5322 3.6.8), obsolete WSP before the colon
_BAD_OCTET = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # any control but HTAB; CR and LF inside a line are bare
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM}@(?:{_DOT_ATOM}|\[[\x21-\x5a\x5e-\x7e]*\])>")  # msg-id (RFC 5322 3.6.4)
# One mailbox as Sendplane writes it (``mime.mailbox``, a bare address): a phrase of plain words, encoded-words
# or a quoted string, then <addr-spec>. Anything else is read by ``getaddresses``.
_ADDR_SPEC = r"[^<>@\s,;:\"()\[\]]+@[^<>@\s,;:\"()\[\]]+"
_ONE_MAILBOX = re.compile(rf'(?:[^<>",;:@()\\]*|"(?:[^"\\]|\\.)*")[ \t]*<{_ADDR_SPEC}>|{_ADDR_SPEC}', re.S)
_URI = re.compile(r"<([^<>]*)>")
_WEB_URI = re.compile(r"(?i)https?://[^/?#\s]+")  # a scheme and a host at least
ONE_CLICK = "List-Unsubscribe=One-Click"
_EXACTLY_ONE = ("From", "To", "Date", "Message-ID")
_AT_MOST_ONE = ("Subject", "Sender", "Reply-To", "Cc", "MIME-Version", "Content-Type", "List-Unsubscribe", "List-Unsubscribe-Post")


def message_lint(raw: bytes, *, marketing: bool, https_only: bool = True) -> list[str]:
    """Every problem of the message's header block, one short line each; empty when it may be sent.

    ``https_only=False`` takes an http List-Unsubscribe URI too, for an
    installation allowed a non-https public URL (``SENDPLANE_INSECURE_PUBLIC_URL``).
    """
    return [p.text for p in header_problems(raw, marketing=marketing, https_only=https_only)]


def header_problems(raw: bytes, *, marketing: bool, https_only: bool = True) -> list[Problem]:
    """``message_lint`` with each problem's rule."""
    end = raw.find(_HEADER_END)
    problems = [] if end >= 0 else [Problem(Rule.NO_HEADER_END, "no blank line (CRLF CRLF) ends the header block")]
    fields = _fields(raw if end < 0 else raw[:end], problems)
    problems += _count_problems(fields)
    problems += _value_problems(fields)
    if marketing:
        problems += _unsubscribe_problems(fields, https_only=https_only)
    unique = list(dict.fromkeys(problems))
    return unique if len(unique) <= _MAX_PROBLEMS else [*unique[: _MAX_PROBLEMS - 1], Problem(unique[-1].rule, "and more")]


def _fields(block: bytes, problems: list[Problem]) -> dict[str, list[tuple[str, bytes]]]:
    """Fields by lower-cased name: (name as written, value unfolded); line problems go into ``problems``."""
    lines: dict[str, list[tuple[str, list[bytes]]]] = {}
    name, value = "", [b""]
    split = block.split(b"\r\n")
    # Most blocks are clean: one pass each over the whole block, then no line is looked at for its octets.
    clean = block.isascii() and max(map(len, split)) <= _LINE_MAX and not _BAD_OCTET.search(block.replace(b"\r\n", b""))
    for n, line in enumerate(split, 1):
        if line[:1] in (b" ", b"\t") and name:
            value.append(line)  # a continuation: unfolding drops the CRLF before it (RFC 5322 2.2.3)
        else:
            match = _FIELD.match(line)
            if match is None:
                problems.append(Problem(Rule.MALFORMED, f"header line {n}: not a field (name: value)"))
                name = ""
                continue
            name, value = match.group(1).decode("ascii"), [line[match.end() :]]
            lines.setdefault(name.lower(), []).append((name, value))
        if not clean:
            problems += _line_problems(name, line)
    return {key: [(written, b"".join(parts).strip(b" \t")) for written, parts in found] for key, found in lines.items()}


def _line_problems(name: str, line: bytes) -> list[Problem]:
    found = []
    if len(line) > _LINE_MAX:
        found.append(Problem(Rule.LINE_LENGTH, f"{name}: a line of {len(line)} octets (at most {_LINE_MAX})"))
    bad = _BAD_OCTET.search(line)
    if bad is not None:
        bare = bad.group() in (b"\r", b"\n")
        found.append(Problem(Rule.LINE_ENDING, f"{name}: bare CR or LF") if bare else Problem(Rule.CONTROL, f"{name}: control character"))
    if not line.isascii() and name.lower() != "to":
        found.append(Problem(Rule.EIGHT_BIT, f"{name}: 8-bit octets (only To may carry UTF-8)"))
    return found


def _count_problems(fields: dict[str, list[tuple[str, bytes]]]) -> list[Problem]:
    found = []
    for name in _EXACTLY_ONE:
        if name.lower() not in fields:
            found.append(Problem(Rule.MISSING, f"{name}: missing"))
    for name in _EXACTLY_ONE + _AT_MOST_ONE:
        count = len(fields.get(name.lower(), ()))
        if count > 1:
            found.append(Problem(Rule.DUPLICATE, f"{name}: {count} fields (at most one)"))
    return found


def _value_problems(fields: dict[str, list[tuple[str, bytes]]]) -> list[Problem]:
    found = []
    for name in ("From", "To"):
        for _, value in fields.get(name.lower(), ()):
            found += _address_problems(name, value)
    for _, value in fields.get("date", ()):
        if not _date_parses(value.decode("latin-1")):
            found.append(Problem(Rule.DATE, "Date: does not parse (RFC 5322 3.3)"))
    for _, value in fields.get("message-id", ()):
        if _MESSAGE_ID.fullmatch(value.decode("latin-1")) is None:
            found.append(Problem(Rule.MESSAGE_ID, "Message-ID: not <left@right> (RFC 5322 3.6.4)"))
    return found


def _address_problems(name: str, value: bytes) -> list[Problem]:
    if name == "To" and not value.isascii():
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return [Problem(Rule.EIGHT_BIT, "To: 8-bit octets that are not UTF-8")]
    else:
        text = value.decode("latin-1")
    if _ONE_MAILBOX.fullmatch(text):
        return []
    addresses = [address for _, address in getaddresses([text])]  # the slow, thorough reading, when the quick one fails
    if len(addresses) != 1 or "@" not in addresses[0]:
        return [Problem(Rule.ADDRESS, f"{name}: not exactly one mailbox")]
    return []


def _date_parses(value: str) -> bool:
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return True


def _unsubscribe_problems(fields: dict[str, list[tuple[str, bytes]]], *, https_only: bool) -> list[Problem]:
    found = []
    lists = fields.get("list-unsubscribe", ())
    if not lists:
        found.append(Problem(Rule.UNSUBSCRIBE, "List-Unsubscribe: missing (marketing mail)"))
    web = ("https",) if https_only else ("https", "http")
    for _, value in lists:
        uris = _URI.findall(value.decode("latin-1"))
        schemes = [uri.partition(":")[0].lower() for uri in uris]
        if not any(_WEB_URI.match(uri) and scheme in web for scheme, uri in zip(schemes, uris, strict=True)):
            found.append(Problem(Rule.UNSUBSCRIBE, "List-Unsubscribe: no https URI (RFC 8058)"))
        for scheme in dict.fromkeys(schemes):
            if scheme not in (*web, "mailto"):
                found.append(Problem(Rule.UNSUBSCRIBE, f"List-Unsubscribe: a {scheme[:20]!r} URI (https or mailto only)"))
    posts = fields.get("list-unsubscribe-post", ())
    if not posts:
        found.append(Problem(Rule.ONE_CLICK, "List-Unsubscribe-Post: missing (marketing mail, RFC 8058)"))
    if any(value != ONE_CLICK.encode() for _, value in posts):
        found.append(Problem(Rule.ONE_CLICK, f"List-Unsubscribe-Post: not {ONE_CLICK!r}"))
    return found


def email_header_problems(email: EmailMessage, *, marketing: bool, https_only: bool = True) -> list[Problem]:
    """``header_problems`` of a Django EmailMessage (an ESP's payload): the header block Django writes for it.

    Written from a body-less copy: the headers do not depend on the body, and
    ``email.message()`` of a 180 KB newsletter takes ~4 ms (the stdlib's
    quoted-printable encoder) against ~0.2 ms for the copy.
    """
    twin = EmailMessage(
        subject=email.subject,
        body="",
        from_email=email.from_email,
        to=email.to,
        cc=email.cc,
        reply_to=email.reply_to,
        headers=email.extra_headers,
    )
    try:
        raw = twin.message().as_bytes(linesep="\r\n")
    except BadHeaderError:  # Django refuses a value holding CR or LF
        return [Problem(Rule.LINE_ENDING, "a header value holds CR or LF (Django refused it)")]
    return header_problems(raw, marketing=marketing, https_only=https_only)
