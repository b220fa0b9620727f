"""What a receiving server's reply calls for: the table of replies that speak about the sender, per provider.

Most refusals are about one recipient (unknown user, full mailbox) and are
bounces (``smtp_reply.classify_reply``). Some are about *us*, and then the
right answer is not per message but for the whole stream of mail from one
sending domain to one mailbox provider:

- **slow down**: the provider is rate limiting us (Gmail's 421 4.7.28,
  Microsoft's 4.7.650, Yahoo's TSS04...). The stream's rate backs off
  multiplicatively and recovers additively (AIMD, ``services/streams.py``);
- **pause, authentication**: the provider refuses our mail as
  unauthenticated (Gmail 5.7.26, Microsoft 5.7.515, Yahoo's DMARC refusal):
  no retry helps until SPF, DKIM or DMARC is fixed;
- **pause, blocklist**: our IP or domain is listed (Spamhaus, Barracuda...):
  every message would be refused until it is delisted; the list is named.

Rows are tried in order; a row names the provider groups it applies to
(``deliverability.providers``), or none for every receiver. Patterns are
bounded, so any reply is read in linear time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Action(StrEnum):
    SLOW_DOWN = "slow_down"
    PAUSE_AUTH = "pause_auth"
    PAUSE_BLOCKLIST = "pause_blocklist"


@dataclass(frozen=True)
class ReplyAction:
    action: Action
    label: str  # what on-call reads: "rate limited", "authentication failing", "listed on Spamhaus"


@dataclass(frozen=True)
class _Row:
    providers: frozenset[str]  # empty: any receiver
    pattern: re.Pattern[str]
    action: Action
    label: str


def _row(providers: str, pattern: str, action: Action, label: str) -> _Row:
    return _Row(frozenset(providers.split()), re.compile(pattern, re.IGNORECASE), action, label)


# Blocklists by the name a refusal quotes; the label names the list, which is what delisting needs.
_BLOCKLISTS: Final = (
    ("spamhaus", "Spamhaus"), ("barracuda", "Barracuda"), ("spamcop", "SpamCop"), ("sorbs", "SORBS"),
    ("invaluement", "Invaluement"), ("uceprotect", "UCEPROTECT"), ("psbl", "PSBL"), ("mailspike", "Mailspike"),
    ("proofpoint", "Proofpoint"), ("cloudmark", "Cloudmark"), ("spamrats", "SpamRATS"), ("abusix", "Abusix"),
)

_TABLE: Final[tuple[_Row, ...]] = (
    # Rate limiting, by provider first (their own codes), then the words any MTA uses for it.
    _row("gmail", r"\b4\.7\.28\b|unusual rate of unsolicited mail|receiving mail at a rate that prevents", Action.SLOW_DOWN,
         "rate limited"),
    _row("microsoft", r"\b4\.7\.650\b|\b4\.7\.500\b|server busy.{0,40}try again later|temporarily rate limited", Action.SLOW_DOWN,
         "rate limited"),
    _row("yahoo", r"\bTS[SL]0[1-4]\b|temporarily deferred due to unexpected volume|user complaints", Action.SLOW_DOWN,
         "rate limited"),
    _row("", r"\b(?:421|45\d)\b.{0,80}(?:too many (?:connections|messages|recipients|concurrent)|rate limit|throttl|too fast"
             r"|slow down|exceeded .{0,20}rate)", Action.SLOW_DOWN, "rate limited"),
    # Authentication: our SPF, DKIM or DMARC fails the receiver's policy.
    _row("", r"\b5\.7\.(?:26|27|515|509|23|25)\b.{0,200}(?:authenticat|dmarc|spf|dkim)|\b5\.7\.515\b|\b5\.7\.26\b"
             r"|not accepted due to (?:its|domain's) dmarc policy|sender (?:is )?unauthenticated|fails? (?:the )?dmarc",
         Action.PAUSE_AUTH, "authentication failing"),
)


def reply_action(provider: str, code: int | None, text: str) -> ReplyAction | None:
    """What this reply calls for on the (sending domain, provider) stream; None for a reply about one recipient."""
    if code is None or code < 400:
        return None
    reply = f"{code} {text[:2000]}"
    listed = _blocklist(reply)
    if listed:
        return ReplyAction(Action.PAUSE_BLOCKLIST, f"listed on {listed}")
    for row in _TABLE:
        if (not row.providers or provider in row.providers) and row.pattern.search(reply):
            if row.action == Action.SLOW_DOWN and code >= 500:
                continue  # a permanent refusal is not a request to slow down
            return ReplyAction(row.action, row.label)
    return None


# A refusal that names a list we do not know by name ("blocked using bl.example.net"); not a bare "listed",
# which unknown-user replies use too ("not listed in the directory").
_LISTED: Final = re.compile(r"\b(?:block ?list(?:ed)?|black ?list(?:ed)?|dnsbl|rbl|blocked using)\b", re.IGNORECASE)


def _blocklist(reply: str) -> str:
    """The list a refusal says we are on: its name where we know it, "a blocklist" where we do not, else ""."""
    lowered = reply.lower()
    for needle, name in _BLOCKLISTS:
        if needle in lowered:
            return name
    return "a blocklist" if _LISTED.search(reply) else ""
