"""The stable event and reason vocabulary, and the tables that map codes and text onto it.

Each vocabulary (event types, kinds, reasons, how a report was matched) is
defined once, here, as a ``TextChoices``: its members are plain ``str`` values
(JSON, comparisons and dict keys see "user_unknown", not an enum), and
``deliverability.models`` uses them as the ``choices`` of ``FeedbackEvent``'s
fields, so the admin, the API schema and ``event_record`` know the allowed
values. Importing ``TextChoices`` touches no database: this package stays pure.

One table per signal (enhanced status code, diagnostic text), consulted by
``reason_from_status`` and ``reason_from_text``; the parsers never decide
reasons themselves, so a new provider phrasing is a one-line change here.
"""

# The phrase tables keep one alternation per line, however long: split, they no longer read as one rule.
# ruff: noqa: E501

from __future__ import annotations

import functools
import re
from typing import Final

from django.db.models import TextChoices  # an enum of str: no database, no settings needed


class Kind(TextChoices):
    """What happened to the recipient, as the contract's ``kind`` field spells it."""

    HARD = "hard", "Hard bounce (the address is gone)"
    SOFT = "soft", "Soft bounce"
    COMPLAINT = "complaint", "Complaint"
    AUTO_REPLY = "auto_reply", "Auto-reply"
    DELIVERED = "delivered", "Delivered"
    UNKNOWN = "unknown", "Unknown"


class EventType(TextChoices):
    """The one vocabulary every webhook and raw message maps onto (kinds add the hard/soft split)."""

    DELIVERED = "delivered", "Delivered"
    DEFERRED = "deferred", "Deferred"
    BOUNCED = "bounced", "Bounced"
    COMPLAINED = "complained", "Complained"
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    AUTO_REPLY = "auto_reply", "Auto-reply"
    UNKNOWN = "unknown", "Unknown"


class Reason(TextChoices):
    """Why: a stable, provider-independent name. Values never change once shipped."""

    USER_UNKNOWN = "user_unknown", "User unknown"
    HOST_UNKNOWN = "host_unknown", "Host or domain unknown"
    HAS_MOVED = "has_moved", "Address has moved"
    NOT_ACCEPT = "not_accept", "Domain accepts no mail (null MX)"
    MAILBOX_FULL = "mailbox_full", "Mailbox full"
    SUSPENDED = "suspended", "Mailbox exists but is disabled"
    EXPIRED = "expired", "Delivery time expired"
    BLOCKED = "blocked", "Sending IP or host refused"
    BAD_REPUTATION = "bad_reputation", "Bad sender reputation"
    REQUIRE_PTR = "require_ptr", "Reverse DNS (PTR) required"
    SPAM_DETECTED = "spam_detected", "Spam detected"
    VIRUS_DETECTED = "virus_detected", "Virus detected"
    CONTENT = "content", "Content refused"
    FILTERED = "filtered", "Refused by the recipient's own filter"
    REJECTED = "rejected", "Envelope sender refused"
    POLICY = "policy", "Policy"
    AUTH_FAILURE = "auth_failure", "SPF, DKIM or DMARC failure"
    SECURITY = "security", "TLS or authentication required"
    RATE_LIMITED = "rate_limited", "Rate limited"
    TOO_BIG = "message_too_big", "Message too big"
    EXCEED_LIMIT = "exceed_limit", "Limit exceeded"
    RELAYING_DENIED = "relaying_denied", "Relaying denied"
    NETWORK_ERROR = "network_error", "Network error"
    SYSTEM_ERROR = "system_error", "System error"
    SYSTEM_FULL = "system_full", "System full"
    MAILER_ERROR = "mailer_error", "Mailer error"
    NOT_COMPLIANT = "not_compliant_rfc", "Not RFC compliant"
    SYNTAX_ERROR = "syntax_error", "Syntax error"
    ON_HOLD = "on_hold", "On hold (unplaced diagnostic)"
    FEEDBACK = "feedback", "Feedback report (complaint)"
    VACATION = "vacation", "Vacation auto-reply"
    DELIVERED = "delivered", "Delivered"
    UNDEFINED = "undefined", "Undefined"


class MatchedBy(TextChoices):
    """How a report was tied to one of our messages (empty: it was not)."""

    VERP = "verp", "VERP token in the bounce address"
    MESSAGE_ID = "message_id", "Our Message-ID quoted in the report"
    METADATA = "metadata", "Our metadata on the ESP event"
    RECIPIENT = "recipient", "The recipient's last message"
    TOKEN = "token", "Unsubscribe link token"
    SMTP = "smtp", "Our own SMTP session"


# Only a permanent *address* failure makes the address undeliverable for good;
# blocks, policy, full mailboxes and expiries say nothing lasting about it.
HARD_REASONS: Final = frozenset({Reason.USER_UNKNOWN, Reason.HOST_UNKNOWN, Reason.HAS_MOVED})

# Enhanced status codes (RFC 3463 plus the registry's provider-specific details)
# whose meaning is specific enough to name the reason on their own.
STATUS_REASONS: Final[dict[str, str]] = {
    "X.1.0": Reason.USER_UNKNOWN,
    "X.1.1": Reason.USER_UNKNOWN,
    "X.1.10": Reason.USER_UNKNOWN,  # RFC 7505 null MX recipient
    "X.1.2": Reason.HOST_UNKNOWN,
    "X.1.3": Reason.USER_UNKNOWN,
    "X.1.6": Reason.HAS_MOVED,
    "X.1.4": Reason.USER_UNKNOWN,
    "X.1.7": Reason.REJECTED,
    "X.1.8": Reason.REJECTED,
    "X.2.1": Reason.SUSPENDED,
    "X.2.2": Reason.MAILBOX_FULL,
    "X.2.3": Reason.TOO_BIG,
    "X.2.4": Reason.MAILER_ERROR,
    "X.3.1": Reason.SYSTEM_FULL,
    "X.3.2": Reason.NOT_ACCEPT,
    "X.3.4": Reason.TOO_BIG,
    "X.4.1": Reason.NETWORK_ERROR,
    "X.4.3": Reason.SYSTEM_ERROR,
    "X.4.4": Reason.HOST_UNKNOWN,
    "X.4.6": Reason.NETWORK_ERROR,
    "X.4.7": Reason.EXPIRED,
    "X.5.3": Reason.EXCEED_LIMIT,
    "X.6.0": Reason.CONTENT,
    "X.7.1": Reason.POLICY,
    "X.7.7": Reason.AUTH_FAILURE,
    "X.7.9": Reason.SECURITY,
    "X.7.13": Reason.SUSPENDED,
    "X.7.23": Reason.AUTH_FAILURE,
    "X.7.24": Reason.AUTH_FAILURE,
    "X.7.25": Reason.REQUIRE_PTR,
    "X.7.26": Reason.AUTH_FAILURE,
    "X.7.27": Reason.NOT_ACCEPT,  # RFC 7505 means the sender's null MX; Sendmail uses it for the recipient's (text decides)
    "X.7.509": Reason.AUTH_FAILURE,
    "X.7.606": Reason.BLOCKED,
}

# Diagnostic text of the major MTAs and providers, first match wins, so the more
# specific phrasings come before the generic ones ("mailbox full" before "unavailable").
_TEXT_TABLE: Final[tuple[tuple[str, str], ...]] = (
    (Reason.REJECTED, r"groups\.google\.com|google groups"),  # posting refused by the group, in any language
    (Reason.AUTH_FAILURE, r"\b(spf|dkim|dmarc)\b.{0,40}\b(fail|check|policy|align|reject|authenticat)|not pass (spf|dkim|dmarc)|unauthenticated email|sender policy framework|authentication (checks|failure)"),
    (Reason.REQUIRE_PTR, r"reverse (dns|lookup)|\bptr\b|no (dns )?reverse|cannot find your hostname|client host .{0,40} (has no|without) .{0,20}(reverse|ptr)|unresolvable.{0,20}(client|sender)|does not have a valid hostname|ip name lookup failed"),
    (Reason.MAILBOX_FULL, r"mailbox (is )?full|over ?quota|quota (exceeded|full)|exceeded (the|storage|their)?.{0,20}(quota|storage)|insufficient (disk )?space|mailbox.{0,30}(exceed|size limit)|mail ?box (size )?limit|user.{0,10}is over|out of storage|storage space|disk quota|full mailbox|mailfolder is full|account is full|is full|not enough (storage|space)"),
    (Reason.TOO_BIG, r"line limit exceeded|message (size|is too (big|large)|too (big|large))|too large|exceeds? (the )?(maximum|max)?.{0,20}size|size limit"),
    (Reason.VIRUS_DETECTED, r"virus|malware|infected"),
    (Reason.SPAM_DETECTED, r"\bspam\b|junk mail|blacklisted content|content (was )?rejected|message content|bulk mail|unsolicited|spamhaus.{0,100}dbl|considered as spam|message has been blocked|likely (to be )?spam"),
    (Reason.SUSPENDED, r"suspended|disabled|deactivated|inactive|account (has been |is )?(locked|closed|expired|frozen)|mailbox (is )?(disabled|inactive|unavailable due)|not active|temporarily (disabled|unavailable)|is no longer active"),
    (Reason.HAS_MOVED, r"has moved|address changed|no longer (at|with)|moved to"),
    (Reason.REJECTED, r"sender (address|domain) (has|with) (a )?null mx"),  # RFC 7505 X.7.27: about our side
    (Reason.NOT_ACCEPT, r"null mx|indicated no smtp service|not accepting (any )?(network )?(messages|mail)"),
    (Reason.NETWORK_ERROR, r"name service error.{0,80}(try again|malformed|unexpected)|temporary (dns|name server) (failure|error)"),
    (Reason.HOST_UNKNOWN, r"unrouteable address|no such domain|domain is not reachable|host \S+ not found|couldn't find any host|non-?existent (host|domain)|nonexistentdomain|\b[45]\d\d [a-z0-9-]+(\.[a-z0-9-]+)+ does not exist|host (or domain name )?(not found|unknown)|unknown (host|domain)|domain (not found|does not exist|name not found|is not (valid|found))|name or service not known|no (such )?(mx|mail exchanger|a record)|unrouteable (mail )?domain|unroutable|dns error|nxdomain|no route to host|illegal host/domain|host not found|unknown mail domain|domain .{0,40}does not accept mail|bad destination (mailbox|host)"),
    (Reason.USER_UNKNOWN, r"recipient address rejected: access denied|invalid (final delivery )?user ?id|ディレクトリのリストにありません|recipient address rejected\.(\s|$)|user[ _-]?unknown|unknown[ _-](user|recipient|local|address|mailbox|e-?mail address)|no[ _-]such[ _-](user|recipient|mailbox|address|person|local|account)|(user|recipient|mailbox|address|account) .{0,30}(does not exist|doesn't exist|not exist|not found|unknown|invalid|not valid|isn't valid|nonexistent|non-existent|(couldn't|could not|cannot|can't) be found)|(invalid|bad|unknown|non-?existent)[ _-](recipient|mailbox|address|user|account)|(user|recip|recipient|mailbox|address)[ _-]?not[ _-]?found|not a (valid )?(user|recipient|mailbox)|mail ?box (not found|unavailable|is unavailable|not present|(is )?not available)|no mail ?box|not our customer|is not a known user|doesn't have an? .{0,20}account|does not have an? .{0,20}account|not listed in .{0,30}(directory|address book)|no longer (available|valid|in use)|unknown or illegal alias|address (doesn't|does not) exist|addressee unknown|invalid address|no account|the email account that you tried to reach|unknown to address|no valid recipients|recipient name is not recognized|#5\.1\.0 address rejected"),
    (Reason.RATE_LIMITED, r"too many (connections|messages|recipients|mails|concurrent)|rate (limit|exceeded)|try (again )?later|throttl|temporarily deferred|too fast|exceeded .{0,20}(connection|rate)|(sending|receiving) rate|connection limit"),
    (Reason.BAD_REPUTATION, r"reputation|low sender score|senderscore"),
    (Reason.BLOCKED, r"invalid ip for sending|spamhaus\.org/query/bl|spamcop\.net|blocked|block ?list|black ?list|rbl|dnsbl|\bdenied\b|not allowed to send|access denied|refused|banned|poor reputation|listed (at|on|in)|client host .{0,60} rejected|connection (rejected|refused)|your (ip|host|server)|service unavailable"),
    (Reason.RELAYING_DENIED, r"relay(ing)? (access )?(denied|not permitted|prohibited)|not permitted to relay|unable to relay|relay not permitted|we do not relay"),
    (Reason.SECURITY, r"tls|starttls|encryption|authentication required|must (issue|use) .{0,20}(auth|tls)"),
    (Reason.EXPIRED, r"all hosts have been failing|aborted after [\d.]+ hour|delivery failed \d+ attempts|will be retried for|did not accept our requests to connect|expired|retry time|too long|timed? ?out|time ?out|could not be delivered (within|for)|delivery time|has been delayed|delivery (is )?delayed|giving up|gave up|retry timeout|undeliverable for"),
    (Reason.SYNTAX_ERROR, r"incorrectly constructed|malformed address|syntax error|command unrecognized|unrecognized command"),
    (Reason.FILTERED, r"filtered|filter|message rejected by recipient|not accepted by recipient|refused by recipient"),
    (Reason.REJECTED, r"sender (address )?(rejected|refused|denied|verify failed)|domain of sender|sender domain|mail from|envelope sender|your (address|domain)"),
    (Reason.POLICY, r"policy|not compliant|violat|prohibited"),
    (Reason.NETWORK_ERROR, r"network|connection (lost|reset|closed|timed)|lost connection|broken pipe|mail loop|too many hops|loop detected|routing loop"),
    (Reason.SYSTEM_FULL, r"system (is )?full|insufficient system storage"),
    (Reason.SYSTEM_ERROR, r"system error|internal (server )?error|server error|local error|temporary (local )?(failure|problem)|resources temporarily|configuration error|misconfigur"),
    (Reason.MAILER_ERROR, r"mailer error|program exited|command died|permission denied|unknown mailer|pipe"),
)
TEXT_REASONS: Final = tuple((reason, re.compile(pattern, re.IGNORECASE)) for reason, pattern in _TEXT_TABLE)

# When a message carries no enhanced status code we still answer with one, in the
# convention sisimai uses (class.0.9xx, "other" subject in RFC 3463 terms), so that
# downstream consumers that key on status codes (and the labelled corpus) agree.
PSEUDO_STATUS: Final[dict[str, str]] = {
    Reason.ON_HOLD: "901",
    Reason.SYNTAX_ERROR: "902",
    Reason.RELAYING_DENIED: "909",
    Reason.FILTERED: "910",
    Reason.USER_UNKNOWN: "911",
    Reason.HOST_UNKNOWN: "912",
    Reason.HAS_MOVED: "916",
    Reason.REJECTED: "918",
    Reason.SUSPENDED: "921",
    Reason.MAILBOX_FULL: "922",
    Reason.EXCEED_LIMIT: "923",
    Reason.SYSTEM_ERROR: "930",
    Reason.SYSTEM_FULL: "931",
    Reason.NOT_ACCEPT: "932",
    Reason.TOO_BIG: "934",
    Reason.MAILER_ERROR: "939",
    Reason.NETWORK_ERROR: "944",
    Reason.RATE_LIMITED: "945",
    Reason.EXPIRED: "947",
    Reason.CONTENT: "960",
    Reason.SECURITY: "970",
    Reason.BLOCKED: "971",
    Reason.POLICY: "972",
    Reason.REQUIRE_PTR: "973",
    Reason.BAD_REPUTATION: "974",
    Reason.AUTH_FAILURE: "975",
    Reason.SPAM_DETECTED: "980",
    Reason.VIRUS_DETECTED: "980",
    Reason.UNDEFINED: "900",
}


# PowerMTA files every bounce under a category in its DSN (X-PowerMTA-BounceCategory);
# the sending MTA saw the whole SMTP dialogue, so its verdict beats our reading of the text.
MTA_CATEGORIES: Final[dict[str, str]] = {
    "bad-domain": Reason.HOST_UNKNOWN,
    "bad-mailbox": Reason.USER_UNKNOWN,
    "inactive-mailbox": Reason.SUSPENDED,
    "message-expired": Reason.EXPIRED,
    "no-answer-from-host": Reason.NETWORK_ERROR,
    "policy-related": Reason.POLICY,
    "quota-issues": Reason.MAILBOX_FULL,
    "routing-errors": Reason.SYSTEM_ERROR,
    "spam-related": Reason.SPAM_DETECTED,
}

# A "bad mailbox" code (X.1.1) is more precise than most wording next to it, except
# these: servers also use X.1.1 for blocks, full mailboxes and sender refusals.
OUTRANK_ADDRESS_STATUS: Final = frozenset({
    Reason.BLOCKED, Reason.RELAYING_DENIED, Reason.MAILBOX_FULL, Reason.HAS_MOVED, Reason.REJECTED,
    Reason.NOT_ACCEPT, Reason.RATE_LIMITED, Reason.MAILER_ERROR, Reason.HOST_UNKNOWN,
})

# Mailbox-status codes (X.2.0 other, X.2.1 disabled, X.2.4 list expansion) say the
# address exists, and security/policy codes (X.7.*) that a rule refused the message:
# an unknown-user text beside them is a filter's wording, not a missing mailbox.
FILTER_STATUSES: Final = frozenset({"X.2.0", "X.2.1", "X.2.4"})


def status_blames_a_filter(status: str) -> bool:
    key = status_key(status)
    return key in FILTER_STATUSES or key.startswith("X.7.")

# Codes whose meaning beats any phrasing in the text (the text often quotes
# "recipient" or "user" around a sender or size problem).
DECISIVE_STATUSES: Final = frozenset({"X.1.2", "X.1.6", "X.1.7", "X.1.8", "X.2.2", "X.2.3", "X.3.4", "X.4.7", "X.7.9", "X.7.23", "X.7.24", "X.7.25", "X.7.26"})


def decisive_reason_from_status(status: str) -> str:
    if not status or "." not in status:
        return ""
    key = "X." + status.split(".", 1)[1]
    return STATUS_REASONS[key] if key in DECISIVE_STATUSES else ""


def status_key(status: str) -> str:
    """"X.1.1" from "5.1.1": the subject and detail, which carry the meaning whatever the class."""
    return "X." + status.split(".", 1)[1] if status and "." in status else ""


def reason_from_status(status: str) -> str:
    """The reason a specific enhanced status code names, or "" when it is generic."""
    if not status or "." not in status:
        return ""
    return STATUS_REASONS.get("X." + status.split(".", 1)[1], "")


@functools.lru_cache(maxsize=32)
def reason_from_text(text: str) -> str:
    """The first reason whose provider phrasing appears in the diagnostic text, or "".

    Cached: recipients of one report often share their text (the whole prose when
    only it names them), and the tables cost about 5 us a character.
    """
    if not text:
        return ""
    for reason, pattern in TEXT_REASONS:
        if pattern.search(text):
            return reason
    return ""


# Japanese carriers (au/KDDI, docomo) answer "550 : User unknown", the address
# slot left empty, after DATA when the recipient's own filter refuses the sender.
_FILTER_VOICE: Final = re.compile(r"\b550:? : user unknown", re.IGNORECASE)


# Providers that check recipients only after DATA, and say so in their own codes:
# Yahoo's "dd This user doesn't have a ... account", La Poste's "LPN007_416".
_UNKNOWN_AFTER_DATA: Final = re.compile(r"delivery error: dd this user doesn't have|invalid recipient\.? lpn\d+_416", re.IGNORECASE)


def unknown_after_data(text: str) -> bool:
    """Whether a post-DATA unknown-user answer is one of those providers' genuine address checks."""
    return bool(_UNKNOWN_AFTER_DATA.search(text or ""))


def answers_for_a_filter(text: str) -> bool:
    """Whether an unknown-user answer is worded the way recipient-side filters word it."""
    return bool(_FILTER_VOICE.search(text or ""))


# Refusals of our message's form, not of the recipient (issue 15, class 7): RFC 3463's
# X.5.x (protocol: syntax, line length, parameters) and X.6.x (media: encoding,
# conversion, non-ASCII addresses), except X.6.0, which content filters use for spam
# verdicts (kept as CONTENT: evidence about our reputation); RFC 5321's 500-504
# (syntax, sequence) when no enhanced code says otherwise; and a size refusal of the
# system's own limit (X.3.4, not a mailbox's X.2.3). Such a reply is recorded as
# EventType.UNKNOWN (its kind soft: never hard): never the recipient's bounce, never counted
# against the recipient or the domain, never suppressing.
_OWN_FORM_TEXT: Final = re.compile(
    r"line (is )?too long|line length|line limit exceeded|too long line|syntax error|command unrecognized|unrecognized command|bad sequence|8-?bit|non-ascii|header (is )?(too long|malformed)|malformed (header|message)",
    re.IGNORECASE,
)


def own_form_reason(code: int | None, status: str, text: str) -> str:
    """The reason a reply refuses our message's form or our session (not the recipient), else ""."""
    key = status_key(status)
    if key == "X.5.0" and not _OWN_FORM_TEXT.search(text or ""):
        return ""  # "other protocol status": some servers answer an unknown user with it
    if key.startswith("X.5."):
        return Reason.SYNTAX_ERROR if not _OWN_FORM_TEXT.search(text or "") else Reason.NOT_COMPLIANT
    if key.startswith("X.6.") and key != "X.6.0":
        return Reason.NOT_COMPLIANT
    if key == "X.3.4" or (not key and reason_from_text(text) == Reason.TOO_BIG):
        return Reason.TOO_BIG
    if key or reason_from_text(text) in HARD_REASONS:
        return ""
    if _OWN_FORM_TEXT.search(text or ""):
        return Reason.NOT_COMPLIANT
    return Reason.SYNTAX_ERROR if code is not None and 500 <= code <= 504 else ""


# Reasons that are never transient whatever the reply said: an address that does not
# exist, a message that is too big, a sender that may not relay will fail again.
PERMANENT_ONLY: Final = frozenset({
    Reason.USER_UNKNOWN, Reason.HOST_UNKNOWN, Reason.HAS_MOVED, Reason.EXCEED_LIMIT, Reason.TOO_BIG,
    Reason.MAILER_ERROR, Reason.RELAYING_DENIED, Reason.SUSPENDED, Reason.SYNTAX_ERROR,
})


def failure_verdict(reason: str, status: str, permanent: bool) -> tuple[str, str, str]:
    """(kind, reason, status) of a failure, whichever path read it: a DSN, our own SMTP session, an ESP's event.

    The one rule: hard only when the failure is permanent and about the
    address (``HARD_REASONS``, or a domain that accepts no mail). A temporary
    failure is soft whatever it names: "4.1.1 user unknown" in a delayed DSN
    or a 450 in our session is a mailbox the server could not vouch for now,
    and it is retried, not suppressed. A DNS failure that will be retried is
    not a dead domain yet.
    """
    if reason == Reason.HOST_UNKNOWN and not permanent:
        reason = Reason.NETWORK_ERROR
    hard = permanent and (reason in HARD_REASONS or reason == Reason.NOT_ACCEPT)
    return (Kind.HARD if hard else Kind.SOFT), reason, status or pseudo_status(reason, permanent)


def pseudo_status(reason: str, permanent: bool) -> str:
    detail = PSEUDO_STATUS.get(reason, "900")
    return f"{5 if permanent or reason in PERMANENT_ONLY else 4}.0.{detail}"
