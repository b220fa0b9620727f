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

MAX_BYTES = 10 * 1024 * 1024  # a bounce beyond this is an attachment echo; the report is near the top

ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+")
STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
REPLY = re.compile(r"(?<![\d.#-])([245][0-5]\d)(?:[ -]|$)(?![\d.]*\.\d+\.\d+\.)")
VERP = re.compile(r"bounces\+([0-9a-fA-F]+)@", re.IGNORECASE)

# Where the echoed original message starts: below this no address is a recipient.
_ORIGINAL_MARKERS = re.compile(
    r"^\s*(-+ ?(this is a copy|below this line|original message|the original message|undelivered message|message text|message headers)"
    r"|.*(original message follows|original message headers|headers of the original|this is a copy of the message"
    r"|below this line is a copy|unsent message below|returned mail follows|rfc822 message|text of the original)"
    r"|content-type: (message/rfc822|text/rfc822-headers))",
    re.IGNORECASE | re.MULTILINE,
)
_NOT_RECIPIENTS = re.compile(r"^(mailer-daemon|postmaster|double-bounce|bounce|noreply|no-reply|abuse)@", re.IGNORECASE)


@dataclass
class RecipientStatus:
    recipient: str
    action: str = ""
    status: str = ""
    smtp_reply: str = ""
    diagnostic: str = ""


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
        msg = email.message_from_bytes(raw[:MAX_BYTES], policy=compat32)
    except Exception as exc:  # noqa: BLE001 - the email package raises anything on hostile input
        return ParsedReport(error=f"unparseable message: {exc.__class__.__name__}")
    for parser in (parse_arf, parse_provider_complaint, parse_ses_notification, parse_dsn, parse_auto_reply, parse_text_bounce):
        try:
            report = parser(msg)
        except Exception:  # noqa: BLE001 - a parser bug on one format must not hide the others
            continue
        if report is not None:
            _fill_origin(report, msg)
            return report
    report = ParsedReport()
    _fill_origin(report, msg)
    return report


# ---------------------------------------------------------------- helpers


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
    if payload is None:
        raw = part.get_payload()
        if isinstance(raw, list):
            # message/* parts hold header blocks (delivery-status, feedback-report): keep the fields
            return "\n\n".join(_as_string(p) if isinstance(p, Message) else str(p) for p in raw)
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


def status_in(text: str) -> str:
    match = STATUS.search(text or "")
    return ".".join(match.groups()) if match else ""


def reply_in(text: str) -> str:
    match = REPLY.search(text or "")
    return match.group(1) if match else ""


def _field_blocks(text: str) -> list[dict[str, str]]:
    """RFC 3464 field groups: blank-line separated blocks of (unfolded) header fields."""
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
            if last in fields:
                last = ""  # a repeated field: keep the first, ignore its continuations
                continue
            fields[last] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def _fill_origin(report: ParsedReport, msg: Message) -> None:
    """Original Message-ID and VERP token, wherever the report echoes them."""
    try:
        whole = msg.as_string()
    except Exception:  # noqa: BLE001
        whole = ""
    verp = VERP.search(whole) or VERP.search(_header(msg, "To"))
    report.verp = verp.group(1).lower() if verp else ""
    own_id = _header(msg, "Message-ID")
    for match in re.finditer(r"^(?:Original-)?Message-ID:\s*(<[^>\s]+>)", whole, re.IGNORECASE | re.MULTILINE):
        if match.group(1) != own_id:
            report.message_id = match.group(1)
            break


def _human_text(msg: Message) -> str:
    """The text/* parts before the echoed original, cut at the first 'copy follows' marker."""
    texts = []
    for part in _parts(msg):
        ctype = _content_type(part)
        if ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            break
        if ctype.startswith("text/") and not part.is_multipart():
            body = _text(part)
            if ctype == "text/html":
                body = re.sub(r"<br\s*/?>|</p>|</div>|</tr>", "\n", body, flags=re.IGNORECASE)
                body = re.sub(r"<[^>]+>", " ", body)
                body = re.sub(r"&lt;", "<", re.sub(r"&gt;", ">", re.sub(r"&nbsp;|&#160;", " ", body)))
            texts.append(body)
    text = "\n".join(texts)
    marker = _ORIGINAL_MARKERS.search(text)
    return text[: marker.start()] if marker else text


# ---------------------------------------------------------------- ARF


def parse_arf(msg: Message) -> ParsedReport | None:
    feedback_part = next((p for p in _parts(msg) if _content_type(p) == "message/feedback-report"), None)
    if feedback_part is None:
        return None
    text = _text(feedback_part)
    fields = [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(":") for line in text.splitlines()) if n.strip()]
    feedback_type = next((v.lower() for n, v in fields if n == "feedback-type"), "abuse")
    recipients = [_address(v) for n, v in fields if n in ("original-rcpt-to", "removal-recipient")]
    recipients = [r for r in recipients if r]
    if not recipients:
        # RFC 5965 makes Original-Rcpt-To optional: the echoed message's To is the complainer.
        for part in _parts(msg):
            if _content_type(part) in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
                original = part.get_payload()[0] if part.is_multipart() else email.message_from_string(_text(part), policy=compat32)
                to = _address(_header(original, "To"))
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
_SES_DELIVERED = re.compile(r'"delivery"\s*:\s*\{[^{}]*?"recipients"\s*:\s*\[([^\]]*)\][^{}]*?(?:"smtpResponse"\s*:\s*"([^"]*)")?')


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
        rcpts = [m.group(1).lower() for m in _SES_BOUNCED.finditer(complained.split("]", 1)[0])]
        return ParsedReport(fmt="arf", feedback_type=feedback.group(1) if feedback else "abuse", recipients=[RecipientStatus(r) for r in rcpts])
    if notification == "delivery":
        match = _SES_DELIVERED.search(body)
        if not match:
            return None
        response = re.search(r'"smtpResponse"\s*:\s*"([^"]*)"', body)
        reply = response.group(1) if response else ""
        rcpts = [a.lower() for a in re.findall(r'"([^"]+@[^"]+)"', match.group(1))]
        return ParsedReport(fmt="dsn", recipients=[RecipientStatus(r, action="delivered", status=status_in(reply), smtp_reply=reply_in(reply), diagnostic=reply) for r in rcpts])
    bounced = body[body.find('"bouncedRecipients"'):]
    permanent = '"bounceType":"Permanent"' in body.replace(" ", "")
    recipients = []
    for match in _SES_BOUNCED.finditer(bounced.split("]", 1)[0]):
        fields = dict(re.findall(r'"(\w+)"\s*:\s*"([^"]*)"', match.group(2)))
        diagnostic = re.sub(r"^\s*smtp;\s*", "", fields.get("diagnosticCode", ""), flags=re.IGNORECASE)
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
    status_part = next(
        (p for p in _parts(msg) if _content_type(p) in ("message/delivery-status", "message/global-delivery-status")), None
    )
    if status_part is None:
        return None
    text = _text(status_part)
    recipients: list[RecipientStatus] = []
    for block in _field_blocks(text):
        address = _address(block.get("final-recipient", "")) or _address(block.get("original-recipient", ""))
        if not address:
            continue
        diagnostic = block.get("diagnostic-code", "")
        diagnostic = re.sub(r"^\s*(smtp|x-[\w-]+|mail)\s*;\s*", "", diagnostic, flags=re.IGNORECASE)
        status = status_in(block.get("status", ""))
        recipients.append(
            RecipientStatus(
                recipient=address,
                action=block.get("action", "").lower().split(" ")[0] if block.get("action") else "",
                status=status,
                smtp_reply=reply_in(diagnostic),
                diagnostic=diagnostic,
            )
        )
    if not recipients:
        return None  # an empty or broken status part: the text bounce parser may still find them
    return ParsedReport(fmt="dsn", recipients=recipients, summary=_human_text(msg))


# ---------------------------------------------------------------- auto-replies (RFC 3834)


_AUTO_SUBJECT = re.compile(r"^(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|away|vacation|abwesen|absence)", re.IGNORECASE)


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
_RECIPIENT_LINE = re.compile(r"^\s*(?:recipient:?\s*|to:\s*|rcpt to:\s*|address:\s*)?<?(" + ADDRESS.pattern + r")>?\s*[:,.]?\s*(\(.*\))?\s*$", re.IGNORECASE | re.MULTILINE)
_RECIPIENT_IN_PROSE = re.compile(
    r"(?:rcpt to:?|recipient:?|to:|<|address:?|delivery to|message to|mail to|sent to|for)\s*<?(" + ADDRESS.pattern + r")>?",
    re.IGNORECASE,
)


def parse_text_bounce(msg: Message) -> ParsedReport | None:
    sender_like = _address(_header(msg, "From"))
    subject = _header(msg, "Subject")
    return_path = _header(msg, "Return-Path")
    is_bounce_sender = bool(_NOT_RECIPIENTS.match(sender_like)) or return_path.strip() in ("<>", "")
    text = _human_text(msg)
    if not (is_bounce_sender or _BOUNCE_HINT.search(subject)):
        return None
    own = {_address(_header(msg, "To")), sender_like}
    lines = text.splitlines()
    found: list[tuple[int, str]] = []
    # Exim and Gmail name the failed recipients in a header: the most reliable source.
    failed = [_address(a) for a in _header(msg, "X-Failed-Recipients").split(",")]
    for address in dict.fromkeys(a for a in failed if a):
        index = next((i for i, line in enumerate(lines) if address in line.lower()), 0)
        found.append((index, address))
    found.sort()
    for index, line in enumerate(lines if not found else []):
        match = _RECIPIENT_LINE.match(line)
        if match:
            address = match.group(1).lower()
            if address not in own and not _NOT_RECIPIENTS.match(address) and address not in [a for _, a in found]:
                found.append((index, address))
    if not found:
        for index, line in enumerate(lines):
            for match in _RECIPIENT_IN_PROSE.finditer(line):
                address = match.group(1).strip(".").lower()
                if address not in own and not _NOT_RECIPIENTS.match(address) and address not in [a for _, a in found]:
                    found.append((index, address))
                    break
            if found:
                break
    if not found:
        for index, line in enumerate(lines):
            for match in ADDRESS.finditer(line):
                address = match.group(0).strip(".").lower()
                if address not in own and not _NOT_RECIPIENTS.match(address):
                    found.append((index, address))
                    break
            if found:
                break
    if not found:
        original_to = _original_to(msg)
        if not original_to:
            return ParsedReport(fmt="text", summary=text) if is_bounce_sender else None
        found = [(0, original_to)]
    recipients = []
    for position, (index, address) in enumerate(found):
        end = found[position + 1][0] if position + 1 < len(found) else len(lines)
        block = "\n".join(lines[index:end]).strip()
        if len(found) == 1:
            block = text
        diagnostic = " ".join(block.split())
        recipients.append(
            RecipientStatus(recipient=address, status=status_in(diagnostic), smtp_reply=reply_in(diagnostic), diagnostic=diagnostic)
        )
    return ParsedReport(fmt="text", recipients=recipients, summary=" ".join(text.split()))


def _original_to(msg: Message) -> str:
    for part in _parts(msg):
        if _content_type(part) in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            payload = part.get_payload()
            original = payload[0] if isinstance(payload, list) and payload else email.message_from_string(_text(part), policy=compat32)
            return _address(_header(original, "To"))
    return ""
