"""Find recipients and their delivery status in a raw message, whatever produced it.

Three formats, one parser each: ARF complaint reports (RFC 5965), DSNs
(RFC 3464), and the free-text bounces real MTAs still send (Exim, qmail,
Sendmail, Exchange, Gmail, ...), which are read heuristically. Every parser
returns ``ParsedReport``; none of them raises on bad input (the caller gets an
empty report instead), because bounce mailboxes receive anything.
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass, field
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses

from controlplane.addresses import address_problem
from deliverability.bounces.smtp_command import smtp_command

# Bytes of a raw message the parser reads. Every format puts its report (DSN fields,
# ARF part, MTA prose) before the echoed original, so what lies beyond this is an
# attachment we would only decode to throw away: the cap bounds memory and time
# per message whatever a bounce mailbox receives (a 20 MB original costs as much as 2 MB).
MAX_BYTES = 2 * 1024 * 1024
# How much of a message the readers examine, whatever a bounce address receives. Every
# scan below is linear; these caps bound its constant (the reason tables cost about 5 us
# a character), so a 1 MB body costs what 32 KB does. Measured on the corpus (589 reports):
# - MAX_TEXT: characters of human-readable text (the text/* parts before the echoed
#   original; largest in the corpus 18 KB). DSN status parts are read whole (MAX_BYTES).
# - MAX_DIAGNOSTIC: characters of one Diagnostic-Code (largest 3 KB; an SMTP reply line
#   is at most 512 octets). A diagnostic taken from the prose is a part of MAX_TEXT.
# - MAX_RECIPIENTS: recipients taken from one report (largest 5). We send one recipient
#   per message, so a report on one of ours names one; a hostile one may list thousands.
MAX_TEXT = 32 * 1024
MAX_DIAGNOSTIC = 4 * 1024
MAX_RECIPIENTS = 20

# Address patterns are written so that no scan of the same characters repeats: the
# domain is matched atomically (it is followed by no alternative worth backtracking for),
# a standalone ADDRESS starts only where a run of local-part characters starts (an address
# never starts inside one: "aaaa...@" is read once, not once per "a"), and where a prefix
# anchors the address (ADDRESS_AFTER) the local part is bounded by RFC 5321's 64 octets.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]"
_DOMAIN = r"[A-Za-z0-9](?>[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)++"
ADDRESS = re.compile(rf"(?<!{_LOCAL}){_LOCAL}+@{_DOMAIN}")
ADDRESS_AFTER = rf"{_LOCAL}{{1,64}}@{_DOMAIN}"
# RFC 3463 writes subject and detail without leading zeros: "2.3.09" is a date (d.m.yy), not a code.
_STATUS = r"(?<![\d.])({classes})\.(0|[1-9]\d{{0,2}})\.(0|[1-9]\d{{0,2}})(?![\d.]*\d)"
_REPLY = r"(?<![\d.#-])({classes}[0-5]\d)(?:[ -]|$)(?![\d.]*\.\d+\.\d+\.)"
STATUS = re.compile(_STATUS.format(classes="[245]"))
REPLY = re.compile(_REPLY.format(classes="[245]"))
# A bounce quotes the session that failed, successes included ("<<< 250 2.1.0 Sender ok"
# before the "550 5.1.1"): where the report is of a failure, only a failure's code is its verdict.
FAILURE_STATUS = re.compile(_STATUS.format(classes="[45]"))
FAILURE_REPLY = re.compile(_REPLY.format(classes="[45]"))
# The token, with its signature where it has one (dispatch.services.verp signs and checks it).
VERP = re.compile(r"bounces\+([0-9a-fA-F]+(?:\.[A-Za-z2-7]+)?)@", re.IGNORECASE)

# Where the echoed original message starts: below this no address is a recipient.
_ORIGINAL_MARKERS = re.compile(
    r"^[ \t]*(?:-+ ?(?:this is a copy|below this line|original message|the original message|undelivered message"
    r"|message text|message headers|returned message)"
    r"|content-type: (?:message/rfc822|text/rfc822-headers))"
    # Phrases that mark the copy wherever they sit in their line; unanchored literals
    # keep the scan linear (a leading ".*" made it backtrack over every line).
    r"|original message follows|original message headers|headers? of the original|(?:this is|included is) a copy of the message"
    r"|below this line is a copy|unsent message (?:below|follows)|returned mail follows|rfc822 message|text of the original",
    re.IGNORECASE | re.MULTILINE,
)
_NOT_RECIPIENTS = re.compile(r"^(mailer-daemon|post_?master|double-bounce|bounce|noreply|no-reply|abuse)@", re.IGNORECASE)


@dataclass
class RecipientStatus:
    recipient: str
    action: str = ""
    status: str = ""
    smtp_reply: str = ""
    diagnostic: str = ""
    command: str = ""  # the SMTP command refused ("RCPT", "DATA", ...), "" when unknown
    diagnostic_type: str = ""  # the Diagnostic-Code's type: "smtp", "x-unix", ...
    mta_category: str = ""  # the reporting MTA's own verdict, where its DSN states one (PowerMTA)


@dataclass
class ParsedReport:
    fmt: str = "none"  # "arf", "dsn", "text", "auto_reply", "none"
    recipients: list[RecipientStatus] = field(default_factory=list)
    feedback_type: str = ""
    message_id: str = ""
    verp: str = ""
    summary: str = ""  # human-readable part of the report, for reasons the DSN fields don't carry
    error: str = ""


def parse_message(raw: bytes) -> ParsedReport:
    """The report for one raw message; never raises."""
    try:
        msg = _repair_boundary(email.message_from_bytes(raw[:MAX_BYTES], policy=compat32))
    except Exception as exc:  # noqa: BLE001 - the email package raises anything on hostile input
        return ParsedReport(error=f"unparseable message: {exc.__class__.__name__}")
    whole = raw[:MAX_BYTES].decode("latin-1")  # never fails, keeps ASCII header text intact
    for parser in (parse_arf, parse_provider_complaint, parse_ses_notification, parse_dsn, parse_auto_reply, parse_text_bounce):
        try:
            report = parser(msg)
        except Exception:  # noqa: BLE001 - a parser bug on one format must not hide the others
            continue
        if report is not None:
            _fill_origin(report, msg, whole)
            return report
    report = ParsedReport()
    _fill_origin(report, msg, whole)
    return report


# ---------------------------------------------------------------- helpers


_DELIMITER = re.compile(r"^--([^\s-][^\s]{0,69})[ \t]*$", re.MULTILINE)


def _repair_boundary(msg: Message) -> Message:
    """Re-read a multipart whose declared boundary never occurs, with the delimiter its body does use.

    Relays that rewrite one of the two (and hand-trimmed samples) leave the
    report as one opaque string; the real delimiter is the first "--token" line.
    """
    if msg.is_multipart() or not _content_type(msg).startswith("multipart/"):
        return msg
    body = msg.get_payload()
    match = _DELIMITER.search(body) if isinstance(body, str) else None
    if not match:
        return msg
    msg.set_param("boundary", match.group(1))
    return email.message_from_string(msg.as_string(), policy=compat32)


def _parts(msg: Message) -> list[Message]:
    try:
        return list(msg.walk())
    except Exception:  # noqa: BLE001
        return [msg]


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:  # noqa: BLE001
        return "text/plain"


def _text(part: Message) -> str:
    """Decoded text of a leaf part, forgiving wrong charsets and broken encodings."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        payload = None
    if not isinstance(payload, bytes):  # None for multipart and message/* parts
        raw = part.get_payload()
        if isinstance(raw, list):
            # message/* parts hold header blocks (delivery-status, feedback-report): keep the fields
            # of the first ones (a per-message block, then one per recipient; re-serializing is slow)
            blocks = raw[: 2 * MAX_RECIPIENTS + 1]
            return "\n\n".join(_fields_text(p) if isinstance(p, Message) else str(p) for p in blocks)
        return raw if isinstance(raw, str) else ""
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
    except Exception:  # noqa: BLE001
        pass
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # unknown charset name: latin-1 never fails and keeps ASCII intact
        return payload.decode("latin-1")


def _as_string(msg: Message) -> str:
    try:
        return msg.as_string()
    except Exception:  # noqa: BLE001
        return "\n".join(f"{k}: {v}" for k, v in msg.items())


def _fields_text(block: Message) -> str:
    """A header block as written, 8-bit values read as UTF-8 (RFC 6533's addresses), not re-encoded as RFC 2047."""
    return "\n".join(f"{name}: {_utf8(value)}" for name, value in block.raw_items())


def _utf8(value: object) -> str:
    text = str(value)
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # noqa: BLE001
        return ""
    if value is None:
        return ""
    return " ".join(str(value).split())


def _address(value: str) -> str:
    match = ADDRESS.search(value or "")
    return match.group(0).strip(".").lower() if match else ""


_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
MAX_FIELD_ADDRESS = 1024  # characters of a recipient field read for a non-ASCII address


def _recipient_field(value: str) -> str:
    """The address of a Final-/Original-Recipient field: "rfc822; a@b", or RFC 6533's "utf-8; юзер@пример.рф".

    Only here, where the field holds an address alone, is a non-ASCII one read
    (its \\x{HHHH} escapes decoded): in prose an address is read in ASCII, so
    text in another script right before it is not taken for its local part.
    """
    candidate = _UTF8_ESCAPE.sub(lambda m: _char(m.group(1)), value.partition(";")[2][:MAX_FIELD_ADDRESS]).strip().strip("<>")
    if candidate and not candidate.isascii() and address_problem(candidate) is None:
        return candidate.lower()
    return _address(value)


def _char(hex_digits: str) -> str:
    code = int(hex_digits, 16)
    return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


# A code right after a reply code ("550-5.7.1", "550 #5.1.1") or in "(#5.1.1)" is the
# answering server's own; a bare one earlier in the text is often a relay's summary.
_ANCHOR = r"(?:\b[245]\d\d[ -]['\"]?#?|\(#)"
_ANCHORED_STATUS = re.compile(_ANCHOR + STATUS.pattern)
_ANCHORED_FAILURE_STATUS = re.compile(_ANCHOR + FAILURE_STATUS.pattern)


def status_in(text: str) -> str:
    """The most authoritative enhanced status code in the text, or ""."""
    match = _ANCHORED_STATUS.search(text or "") or STATUS.search(text or "")
    return ".".join(match.groups()) if match else ""


def failure_status_in(text: str) -> str:
    """The most authoritative 4.x.x/5.x.x code in the text, or "": what a report of a failure means by its text."""
    match = _ANCHORED_FAILURE_STATUS.search(text or "") or FAILURE_STATUS.search(text or "")
    return ".".join(match.groups()) if match else ""


def reply_in(text: str) -> str:
    match = REPLY.search(text or "")
    return match.group(1) if match else ""


def failure_reply_in(text: str) -> str:
    """The first 4xx/5xx reply code in the text, or "" (a transcript's "250 ok" lines are not the refusal)."""
    match = FAILURE_REPLY.search(text or "")
    return match.group(1) if match else ""


def _field_blocks(text: str) -> list[dict[str, str]]:
    """RFC 3464 field groups: blank-line separated blocks of (unfolded) header fields.

    Some MTAs (AOL's relay) omit the blank line between recipients: a second
    Final-/Original-Recipient in one block starts the next recipient's group.
    """
    blocks: list[dict[str, str]] = []
    for chunk in re.split(r"\r?\n\s*\r?\n", text.strip()):
        fields: dict[str, str] = {}
        last = ""
        for line in chunk.splitlines():
            if line[:1] in (" ", "\t") and last:
                fields[last] += " " + line.strip()
                continue
            name, sep, value = line.partition(":")
            if not sep:
                continue
            last = name.strip().lower()
            if last in _RECIPIENT_FIELDS and last in fields:
                blocks.append(fields)
                fields = {}
            elif last in fields:
                last = ""  # a repeated field: keep the first, ignore its continuations
                continue
            fields[last] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


_RECIPIENT_FIELDS = frozenset({"final-recipient", "original-recipient"})


def _fill_origin(report: ParsedReport, msg: Message, whole: str) -> None:
    """Original Message-ID and VERP token, wherever the report echoes them (``whole``: the raw message as text).

    The raw bytes are searched rather than a re-serialized ``msg``: folding every
    header again costs more than the rest of the classification.
    """
    verp = VERP.search(whole) or VERP.search(_header(msg, "To"))
    report.verp = verp.group(1).lower() if verp else ""
    own_id = _header(msg, "Message-ID")
    for match in re.finditer(r"^(?:Original-)?Message-ID:\s*(<[^>\s]+>)", whole, re.IGNORECASE | re.MULTILINE):
        if match.group(1) != own_id:
            report.message_id = match.group(1)
            break


def _human_text(msg: Message) -> str:
    """The text/* parts before the echoed original, cut at the first 'copy follows' marker."""
    text = _all_text(msg)
    return text[: _original_starts(text)]


def _original_starts(text: str) -> int:
    """Where the echoed original begins: the start of the first marker's line, else the end."""
    marker = _ORIGINAL_MARKERS.search(text)
    return text.rfind("\n", 0, marker.start()) + 1 if marker else len(text)


def _all_text(msg: Message) -> str:
    """Every text/* part up to the attached original, HTML reduced to its text."""
    texts = []
    for part in _parts(msg):
        ctype = _content_type(part)
        if ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            break
        lost_structure = ctype.startswith("multipart/")  # a multipart without parts: its body is all we have
        if (ctype.startswith("text/") or lost_structure) and not part.is_multipart():
            text = _text(part)  # HTML is cut once reduced to text: its markup outweighs the words
            texts.append((_html_to_text(text) if ctype == "text/html" else text)[:MAX_TEXT])
    return "\n".join(texts)[:MAX_TEXT]


def _html_to_text(body: str) -> str:
    body = re.sub(r"<br\s*/?>|</p>|</div>|</tr>", "\n", body, flags=re.IGNORECASE)
    # "<[^>]+>" tried at every "<" of a text with no ">" after it rescans to the end each
    # time; past the last ">" no tag can match, so the substitution stops there.
    end = body.rfind(">") + 1
    body = re.sub(r"<[^>]+>", " ", body[:end]) + body[end:]
    return re.sub(r"&lt;", "<", re.sub(r"&gt;", ">", re.sub(r"&nbsp;|&#160;", " ", body)))


# ---------------------------------------------------------------- ARF


def parse_arf(msg: Message) -> ParsedReport | None:
    feedback_part = next((p for p in _parts(msg) if _content_type(p) == "message/feedback-report"), None)
    if feedback_part is None:
        return None
    text = _text(feedback_part)
    fields = [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(":") for line in text.splitlines()) if n.strip()]
    feedback_type = next((v.lower() for n, v in fields if n == "feedback-type"), "abuse")
    recipients = [_address(v) for n, v in fields if n in ("original-rcpt-to", "removal-recipient")]
    recipients = [r for r in recipients if r][:MAX_RECIPIENTS]
    if not recipients:
        # RFC 5965 makes Original-Rcpt-To optional: the echoed message's To is the complainer.
        for part in _parts(msg):
            if _content_type(part) in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
                to = _address(_header(_quoted_original(part), "To"))
                if to:
                    recipients = [to]
                break
    return ParsedReport(
        fmt="arf",
        feedback_type=feedback_type,
        recipients=[RecipientStatus(recipient=r) for r in (recipients or [""])],
    )


def parse_provider_complaint(msg: Message) -> ParsedReport | None:
    """Complaints that predate or ignore RFC 5965: Hotmail's JMRP, Apple's unsubscribe button."""
    if _header(msg, "X-Apple-Unsubscribe").lower() == "true":
        return ParsedReport(fmt="arf", feedback_type="opt-out", recipients=[RecipientStatus(recipient=_address(_header(msg, "From")))])
    subject = _header(msg, "Subject").lower()
    hotmail_rcpt = ""
    for part in _parts(msg):
        hotmail_rcpt = hotmail_rcpt or _address(_header(part, "X-HmXmrOriginalRecipient"))
    if not hotmail_rcpt and not subject.startswith("complaint about message"):
        return None
    return ParsedReport(
        fmt="arf", feedback_type="abuse", recipients=[RecipientStatus(recipient=hotmail_rcpt or _original_to(msg))]
    )


_SES_TYPE = re.compile(r'"notificationType"\s*:\s*"(\w+)"')
_SES_BOUNCED = re.compile(r'\{\s*"emailAddress"\s*:\s*"([^"]+)"([^{}]*)\}')
# The recipients array stays inside the delivery object (no brace): unbounded, every
# '"delivery":{"recipients":[' of a body without "]" rescanned the rest of it.
_SES_DELIVERED = re.compile(r'"delivery"\s*:\s*\{[^{}]*?"recipients"\s*:\s*\[([^\]{}]*)\][^{}]*?(?:"smtpResponse"\s*:\s*"([^"]*)")?')


def parse_ses_notification(msg: Message) -> ParsedReport | None:
    """Amazon SES notifications relayed by SNS as JSON text (often truncated, so read with regexes)."""
    if msg.is_multipart():
        return None
    body = _text(msg)
    kind = _SES_TYPE.search(body)
    if not kind:
        return None
    notification = kind.group(1).lower()
    if notification == "complaint":
        feedback = re.search(r'"complaintFeedbackType"\s*:\s*"([^"]+)"', body)
        complained = body[body.find('"complainedRecipients"'):]
        rcpts = [m.group(1).lower() for m in _SES_BOUNCED.finditer(complained.split("]", 1)[0])][:MAX_RECIPIENTS]
        return ParsedReport(
            fmt="arf", feedback_type=feedback.group(1) if feedback else "abuse", recipients=[RecipientStatus(r) for r in rcpts]
        )
    if notification == "delivery":
        match = _SES_DELIVERED.search(body)
        if not match:
            return None
        response = re.search(r'"smtpResponse"\s*:\s*"([^"]*)"', body)
        reply = response.group(1) if response else ""
        # Atomic: however the quoted string is split at an "@", it ends at the same quote.
        rcpts = [a.lower() for a in re.findall(r'"((?>[^"]+@[^"]+))"', match.group(1))][:MAX_RECIPIENTS]
        delivered = [
            RecipientStatus(r, action="delivered", status=status_in(reply), smtp_reply=reply_in(reply), diagnostic=reply) for r in rcpts
        ]
        return ParsedReport(fmt="dsn", recipients=delivered)
    bounced = body[body.find('"bouncedRecipients"'):]
    permanent = '"bounceType":"Permanent"' in body.replace(" ", "")
    recipients: list[RecipientStatus] = []
    for match in _SES_BOUNCED.finditer(bounced.split("]", 1)[0]):
        if len(recipients) == MAX_RECIPIENTS:
            break
        fields = dict(re.findall(r'"(\w+)"\s*:\s*"([^"]*)"', match.group(2)))
        diagnostic = re.sub(r"^\s*smtp;\s*", "", fields.get("diagnosticCode", ""), flags=re.IGNORECASE)[:MAX_DIAGNOSTIC]
        recipients.append(
            RecipientStatus(
                match.group(1).lower(),
                action=fields.get("action", "failed" if permanent else "delayed"),
                status=status_in(fields.get("status", "")) or status_in(diagnostic),
                smtp_reply=reply_in(diagnostic),
                diagnostic=diagnostic,
            )
        )
    return ParsedReport(fmt="dsn", recipients=recipients) if recipients else None


# ---------------------------------------------------------------- DSN


def parse_dsn(msg: Message) -> ParsedReport | None:
    # Digest-style reports nest one multipart/report per message: read every status part.
    status_parts = [p for p in _parts(msg) if _content_type(p) in ("message/delivery-status", "message/global-delivery-status")]
    text = "\n\n".join(_text(p) for p in status_parts) if status_parts else _inline_dsn(msg)
    if not text:
        return None
    recipients: list[RecipientStatus] = []
    for block in _field_blocks(text):
        address = _sent_to(block)
        if not address:
            continue
        if len(recipients) == MAX_RECIPIENTS:
            break
        diagnostic_type, diagnostic = _split_diagnostic(block.get("diagnostic-code", "")[:MAX_DIAGNOSTIC])
        status = status_in(block.get("status", ""))
        recipients.append(
            RecipientStatus(
                recipient=address,
                action=block.get("action", "").lower().split(" ")[0] if block.get("action") else "",
                status=status,
                smtp_reply=reply_in(diagnostic),
                diagnostic=diagnostic,
                diagnostic_type=diagnostic_type,
                mta_category=block.get("x-powermta-bouncecategory", "").lower(),
            )
        )
    if not recipients:
        return None  # an empty or broken status part: the text bounce parser may still find them
    summary = _human_text(msg)
    _fill_commands(recipients, summary)
    return ParsedReport(fmt="dsn", recipients=recipients, summary=summary)


def _sent_to(block: dict[str, str]) -> str:
    """The address we sent to: Original-Recipient (RFC 3464's ORCPT) where the block has one, else Final-Recipient.

    An alias, a forward or a catch-all rewrites the envelope on its way: the
    Final-Recipient is where the message ended up, the Original-Recipient the
    address our RCPT TO named, the one a suppression must hold.
    """
    return _recipient_field(block.get("original-recipient", "")) or _recipient_field(block.get("final-recipient", ""))


_INLINE_DSN = re.compile(r"^Final-Recipient:.*\n(?:.*\n){0,6}?(?:Action|Status):", re.IGNORECASE | re.MULTILINE)


def _inline_dsn(msg: Message) -> str:
    """DSN fields written into a text part (or a body whose MIME structure was lost), else ""."""
    for part in _parts(msg):
        if part.is_multipart() or not _content_type(part).startswith(("text/", "multipart/")):
            continue
        text = _text(part)
        match = _INLINE_DSN.search(text)
        if match:
            return text[match.start():]
    return ""


def _split_diagnostic(value: str) -> tuple[str, str]:
    """("smtp", "550 5.1.1 ...") from "smtp; 550 5.1.1 ..."; the type tells a local delivery agent's error apart."""
    match = re.match(r"^\s*(smtp|x-[\w-]+|mail)\s*;\s*", value, flags=re.IGNORECASE)
    if not match:
        return "", value
    return match.group(1).lower(), value[match.end():]


def _fill_commands(recipients: list[RecipientStatus], human: str) -> None:
    """The refused SMTP command of each recipient: its own diagnostic first, else its part of the human-readable text.

    DSN fields rarely name the command; the transcript above them ("<<< 550 ...
    (in reply to end of DATA command)") does, next to the recipient it concerns.
    """
    addresses = [r.recipient for r in recipients]
    sections = _sections(human, addresses)
    for rcpt in recipients:
        section = sections[rcpt.recipient]
        rcpt.command = rcpt.command or smtp_command(rcpt.diagnostic) or smtp_command(section)
        if not rcpt.diagnostic:
            # A DSN without Diagnostic-Code: the prose above it says why, in the recipient's paragraph.
            rcpt.diagnostic = " ".join((_paragraph(section, rcpt.recipient) if len(addresses) > 1 else section).split())


def _paragraph(text: str, address: str) -> str:
    """The blank-line delimited paragraph that mentions the address, or ""."""
    return next((p for p in re.split(r"\n\s*\n", text) if address in p.lower()), "")


def _sections(text: str, addresses: list[str]) -> dict[str, str]:
    """The lines about each recipient: from its first mention to the first mention of another recipient ("": none)."""
    distinct = list(dict.fromkeys(addresses))
    if len(distinct) <= 1:
        return dict.fromkeys(distinct, text)
    lines = text.splitlines()
    bounds = _section_bounds([line.lower() for line in lines], distinct)
    return {address: "\n".join(lines[start:end]) for address, (start, end) in bounds.items()}


def _section_bounds(lowered: list[str], distinct: list[str]) -> dict[str, tuple[int, int]]:
    """(first, past-last) line of each address's section; (0, 0) when the text never names it.

    Which addresses each line mentions is worked out once for all of them: one
    pass per address, not one per pair of addresses and line.
    """
    mentions = [[a for a in distinct if a in line] for line in lowered]
    bounds: dict[str, tuple[int, int]] = {}
    for address in distinct:
        start = next((i for i, named in enumerate(mentions) if address in named), None)
        if start is None:
            bounds[address] = (0, 0)
            continue
        end = next((i for i in range(start + 1, len(lowered)) if any(a != address for a in mentions[i])), len(lowered))
        bounds[address] = (start, end)
    return bounds


# ---------------------------------------------------------------- auto-replies (RFC 3834)


_AUTO_SUBJECT = re.compile(
    r"^(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|away|vacation|abwesen|absence)", re.IGNORECASE
)


def parse_auto_reply(msg: Message) -> ParsedReport | None:
    auto = _header(msg, "Auto-Submitted").lower()
    subject = _header(msg, "Subject")
    is_auto = auto.startswith("auto-replied") or bool(_header(msg, "X-Autoreply") or _header(msg, "X-Autorespond"))
    if not is_auto and not _AUTO_SUBJECT.search(subject):
        return None
    sender = _address(_header(msg, "From"))
    if not sender or _NOT_RECIPIENTS.match(sender):
        return None
    return ParsedReport(fmt="auto_reply", recipients=[RecipientStatus(recipient=sender)], summary=subject)


# ---------------------------------------------------------------- free-text bounces


_BOUNCE_HINT = re.compile(
    r"undeliver|undelivered|delivery (status|failure|has failed|notification|problem)|failure notice|returned mail|"
    r"mail delivery|could not be delivered|not be delivered|delivery failed|nondeliver|non-deliver|mail system error|"
    r"permanent error|rejected|failed|bounce|warning|delayed|error",
    re.IGNORECASE,
)
# A line that names one recipient and nothing else (Exim, qmail, Sendmail, Courier, ...).
# A line that starts with one recipient: alone (Exim, Courier), quoted (GMX), "addr: reason"
# (qmail, OpenSMTPD), "addr on <date>" (Exchange), or Sendmail's "550 <addr>... reason".
_RECIPIENT_LINE = re.compile(
    r"^\s*+(?:recipient:?|rcpt to:|address:|(?:<<< )?[45]\d\d)?\s*+[\"'<]?(" + _LOCAL + "+@" + _DOMAIN + r")"
    r"(?![\w.-]*\w)[\"'>]?(?:[\s:,.(\[]|$)",
    re.IGNORECASE,
)
_RECIPIENT_IN_PROSE = re.compile(
    r"(?:rcpt to:?|recipient:?|to:|<|address:?|delivery to|message to|mail to|sent to|for)\s*+<?(" + ADDRESS_AFTER + r")>?",
    re.IGNORECASE,
)


def parse_text_bounce(msg: Message) -> ParsedReport | None:
    sender_like = _address(_header(msg, "From"))
    # A null envelope sender marks a bounce; a missing Return-Path says nothing (it is added on delivery).
    is_bounce_sender = bool(_NOT_RECIPIENTS.match(sender_like)) or _header(msg, "Return-Path").strip() == "<>"
    if not (is_bounce_sender or _BOUNCE_HINT.search(_header(msg, "Subject"))):
        return None
    text = _human_text(msg)
    lines = text.splitlines()
    original = _echoed_original(msg, lines)
    own = {_address(_header(msg, "To")), sender_like}
    lists = _list_addresses(original)
    prose = [line if not _QUOTED_FIELD.match(line) else "" for line in lines]
    found = (
        _failed_recipients_header(msg, lines)
        or _recipient_lines(lines, own, lists)
        or _first_address(prose, own | lists, _RECIPIENT_IN_PROSE)
        or _first_address(prose, own | lists, ADDRESS)
        or [(0, a) for a in [_echoed_to(original)] if a and a not in lists]
    )
    if not found:
        return ParsedReport(fmt="text", summary=" ".join(text.split())) if is_bounce_sender else None
    addresses = [a for _, a in found[:MAX_RECIPIENTS]]
    about = _about_each(text, addresses)
    recipients = [_text_recipient(address, about[address] or text) for address in addresses]
    _fill_commands(recipients, text)
    return ParsedReport(fmt="text", recipients=recipients, summary=" ".join(text.split()))


# A header field of the original quoted in the prose ("To: list@...", "From: ..."): it names
# who the message was addressed to, not who failed (for a list post, the list itself).
_QUOTED_FIELD = re.compile(
    r"^[ \t>]{0,20}(?:to|cc|bcc|from|reply-to|sender|return-path|delivered-to|errors-to|resent-[a-z]{1,10}|list-[a-z]{1,20}"
    r"|message-id|in-reply-to|references|received|x-[a-z0-9-]{1,60})[ \t]{0,20}:",
    re.IGNORECASE,
)
# Postfix and Sendmail name the address we sent to when an alias rewrote it: "<new@x> (expanded from <old@y>)".
_EXPANDED_FROM = re.compile(r"\(expanded from:?\s{0,20}<?(" + ADDRESS_AFTER + r")>?\)", re.IGNORECASE)
# Addresses of list software, never a subscriber's: "owner-x@", "x-request@", "x-bounces+...@", "majordomo@".
_LIST_SUFFIXES = frozenset({"request", "owner", "bounce", "bounces", "confirm", "join", "leave", "subscribe", "unsubscribe"})
_LIST_SOFTWARE = frozenset({"listserv", "majordomo", "mailman", "sympa", "listproc", "lyris", "ezmlm"})


def _list_machinery(address: str) -> bool:
    local = address.partition("@")[0].partition("+")[0]
    prefix, dash, suffix = local.rpartition("-")
    return local.startswith("owner-") or (bool(dash) and suffix in _LIST_SUFFIXES) or local in _LIST_SOFTWARE


def _excluded(address: str) -> bool:
    return bool(_NOT_RECIPIENTS.match(address)) or _list_machinery(address)


def _failed_recipients_header(msg: Message, lines: list[str]) -> list[tuple[int, str]]:
    """Exim and Gmail name the failed recipients in a header: the most reliable source."""
    named = (a for a in (_address(v) for v in _header(msg, "X-Failed-Recipients").split(",")) if a)
    failed: dict[str, None] = {}
    for address in named:
        failed.setdefault(address)
        if len(failed) == MAX_RECIPIENTS:
            break
    lowered = [line.lower() for line in lines]
    return sorted((next((i for i, line in enumerate(lowered) if a in line), 0), a) for a in failed)


def _recipient_lines(lines: list[str], own: set[str], lists: set[str]) -> list[tuple[int, str]]:
    """Every address a line starts with (or lists alone: "a@x, b@y"), in order, once each.

    Our own address counts only when nothing else does: a bounce sent back to
    the address it failed for (aliases, tests) still names that address. A
    mailing list's address never does: the list is not the one who failed.
    """
    found: dict[str, int] = {}
    for index, line in enumerate(lines):
        for address in _line_recipients(line):
            if not _excluded(address) and address not in lists:
                found.setdefault(address, index)
        if len(found) >= MAX_RECIPIENTS:
            break
    others = [(i, a) for a, i in found.items() if a not in own]
    return others or [(i, a) for a, i in found.items()]


def _line_recipients(line: str) -> list[str]:
    """The recipients a line names at its start: the one address, the address an alias expanded from, or a list."""
    listed = _listed_addresses(line)
    match = _RECIPIENT_LINE.match(line) if not listed else None
    if not match:
        return listed
    expanded = _EXPANDED_FROM.search(line)
    return [(expanded or match).group(1).lower()]


def _listed_addresses(line: str) -> list[str]:
    """Every address of a line that holds nothing but addresses and separators (Exchange, Domino: "a@x, b@y"), else []."""
    tokens = [t.strip("<>\"'.:") for t in re.split(r"[,;\s]+", line) if t]
    if len(tokens) < 2 or not all(ADDRESS.fullmatch(t) for t in tokens):
        return []
    return [t.lower() for t in tokens]


def _first_address(lines: list[str], excluded: set[str], pattern: re.Pattern[str]) -> list[tuple[int, str]]:
    for index, line in enumerate(lines):
        for match in pattern.finditer(line):
            address = match.group(match.lastindex or 0).strip(".").lower()
            if address not in excluded and not _excluded(address):
                return [(index, address)]
    return []


def _about_each(text: str, addresses: list[str]) -> dict[str, str]:
    """Each recipient's section, and every line elsewhere that names it ("": the text never names it).

    Sendmail and Domino list the failed addresses first and say why further
    down ("550 5.1.1 <a@x>... User unknown" in the transcript): the section
    alone would hold the bare address.
    """
    distinct = list(dict.fromkeys(addresses))
    if len(distinct) <= 1:
        return dict.fromkeys(distinct, text)
    lines = text.splitlines()
    lowered = [line.lower() for line in lines]
    about: dict[str, str] = {}
    for address, (start, end) in _section_bounds(lowered, distinct).items():
        elsewhere = (i for i, line in enumerate(lowered) if address in line and not start <= i < end)
        about[address] = "\n".join(lines[i] for i in (*range(start, end), *elsewhere))
    return about


def _text_recipient(address: str, block: str) -> RecipientStatus:
    diagnostic = " ".join(block.split())
    return RecipientStatus(
        recipient=address, status=failure_status_in(diagnostic), smtp_reply=failure_reply_in(diagnostic), diagnostic=diagnostic
    )


def _echoed_original(msg: Message, human: list[str]) -> Message | None:
    """The header block of the returned original: an attached message/rfc822 part, the copy below the
    marker, else the fields the prose quotes ("Original Message: / From: ... / To: ...")."""
    for part in _parts(msg):
        if _content_type(part) in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            return _quoted_original(part)
    text = _all_text(msg)
    below = text.find("\n", _original_starts(text))  # the copy starts on the line after the marker
    first_field = _FIELD_LINE.search(text, below + 1) if below >= 0 else None
    if first_field:
        return email.message_from_string(text[first_field.start():], policy=compat32)
    quoted = [line.lstrip(" \t>") for line in human if _QUOTED_FIELD.match(line)]
    return email.message_from_string("\n".join(quoted) + "\n", policy=compat32) if quoted else None


_FIELD_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,60}:[ \t]", re.MULTILINE)


def _echoed_to(original: Message | None) -> str:
    return _address(_header(original, "To")) if original is not None else ""


def _list_addresses(original: Message | None) -> set[str]:
    """The mailing list the returned original was a post to (RFC 2369/2919 fields): its address is not a recipient's."""
    if original is None or not (_header(original, "List-Id") or _header(original, "List-Post")):
        return set()
    fields = [_header(original, name) for name in ("List-Post", "To", "Cc")]
    return {a for a in (_address(value) for _, value in getaddresses(fields)[:MAX_RECIPIENTS]) if a}


def _original_to(msg: Message) -> str:
    for part in _parts(msg):
        if _content_type(part) in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            return _address(_header(_quoted_original(part), "To"))
    return ""


def _quoted_original(part: Message) -> Message:
    """The original a message/rfc822 (or headers-only) part quotes: parsed by email, else from the part's text."""
    payload = part.get_payload()
    first = payload[0] if isinstance(payload, list) and payload else None
    return first if isinstance(first, Message) else email.message_from_string(_text(part), policy=compat32)
