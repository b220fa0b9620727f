"""Which SMTP command the remote server was answering when it refused a recipient.

The same words ("User unknown") mean different things at different stages: at
RCPT the server looked the address up and found nothing; after DATA it has read
the message and a content or sender filter is answering in a user-unknown
voice. Every MTA spells the stage its own way, so each format gets a pattern;
the last command mentioned is the one that failed (transcripts run in order).
"""

from __future__ import annotations

import functools
import re
from typing import Final

CONN: Final = "CONN"
HELO: Final = "HELO"
MAIL: Final = "MAIL"
RCPT: Final = "RCPT"
DATA: Final = "DATA"

_WORDS: Final[dict[str, str]] = {
    "rcpt": RCPT, "mail": MAIL, "data": DATA, "end of data": DATA, "helo": HELO, "ehlo": HELO,
    "initial connection": CONN, "recipient": RCPT, "the message": DATA,
}

# The formats that name the stage explicitly, most specific first.
_EXPLICIT: Final = re.compile(
    r"in reply to (?:the )?(?P<a>end of data|rcpt|mail|data|helo|ehlo)\b"  # Postfix, Messaging Server
    r"|(?:smtp error from remote (?:mail )?server |error )?after (?:pipelined )?"  # Exim
    r"(?P<b>rcpt|mail|end of data|data|initial connection|helo|ehlo)\b"
    r"|>>> ?(?P<c>rcpt|mail|data|helo|ehlo)\b"  # Sendmail, Courier, OpenSMTPD transcripts
    r"|did not like our (?P<d>rcpt|mail|data)\b"  # DragonFly
    r"|does not like (?P<e>recipient)\b|didn't like (?P<f>the message)\b"  # qmail-remote
    r"|\[(?P<h>rcpt|mail|data)(?:_to|_from)?\]"  # Yahoo: "... User Unknown [RCPT_TO]"
    r"|smtp (?:error|failure)[^\n]{0,40}?\bfor (?P<g>rcpt|mail|data)\b",  # Exchange / MXLogic style
    re.IGNORECASE | re.MULTILINE,
)
# Bare command names in capitals, the form transcripts quote them in; prose rarely shouts "DATA".
_BARE: Final = re.compile(r"\b(?P<a>RCPT TO|MAIL FROM|DATA|EHLO|HELO)\b")


@functools.lru_cache(maxsize=32)
def smtp_command(text: str) -> str:
    """The failing command ("RCPT", "DATA", ...), or "" when the text does not say.

    Cached: recipients of one report often share their text (the whole prose).
    """
    for pattern in (_EXPLICIT, _BARE):
        last = ""
        for match in pattern.finditer(text or ""):
            word = next(group for group in match.groups() if group)
            last = _WORDS.get(word.lower(), _WORDS.get(word.split()[0].lower(), ""))
        if last:
            return last
    return ""
