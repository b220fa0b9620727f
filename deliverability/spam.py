"""Spam scores from SpamAssassin's spamd over SPAMC (aiospamc).

Host, port and timeout come from settings (SPAMD_HOST, SPAMD_PORT,
SPAMD_TIMEOUT). spamd down, refusing or too slow is ``SpamdUnavailable``:
the caller records "not scored" with the reason; it never means "passed".
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import aiospamc
from aiospamc import Timeout
from aiospamc.exceptions import AIOSpamcConnectionFailed, ClientException, TimeoutException
from django.conf import settings

_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+(\S+)\s+(.*)$")
_CONTINUATION = re.compile(r"^\s{20,}\S")
_VERSION = re.compile(rb"X-Spam-Checker-Version:\s*SpamAssassin\s+(\S+)", re.I)
_PROBE = b"From: probe@example.invalid\r\nTo: probe@example.invalid\r\nSubject: version probe\r\n\r\nhello\r\n"


class SpamdUnavailable(RuntimeError):
    """spamd could not score the message (down, refused, timed out, or answered nonsense)."""


@dataclass(frozen=True)
class Rule:
    name: str
    points: float
    description: str


@dataclass(frozen=True)
class SpamReport:
    score: float
    threshold: float
    is_spam: bool
    rules: list[Rule] = field(default_factory=list)
    spamd_version: str = ""
    duration_ms: float = 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "rules": [asdict(rule) for rule in self.rules]}


def spam_score(raw: bytes) -> SpamReport:
    """Score one RFC 5322 message with spamd. Raises SpamdUnavailable."""
    started = time.perf_counter()
    response = _run(aiospamc.report(raw, **_connection()))
    verdict = response.headers.get("Spam")
    if verdict is None:
        raise SpamdUnavailable("spamd answered without a Spam header")
    body = bytes(response.body or b"").decode("utf-8", "replace")
    return SpamReport(
        score=float(verdict.score),
        threshold=float(verdict.threshold),
        is_spam=bool(verdict.value),
        rules=parse_rules(body),
        spamd_version=spamd_version(settings.SPAMD_HOST, settings.SPAMD_PORT),
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def parse_rules(report: str) -> list[Rule]:
    """The rule table of a SpamAssassin report: points, name, description (continued lines joined)."""
    rules: list[Rule] = []
    table = report.split("---- ----", 1)[-1].split("\n")[1:] if "---- ----" in report else []
    for line in table:
        match = _RULE.match(line)
        if match:
            rules.append(Rule(match.group(2), float(match.group(1)), match.group(3).strip()))
        elif rules and _CONTINUATION.match(line):
            last = rules.pop()
            rules.append(Rule(last.name, last.points, f"{last.description} {line.strip()}"))
    return rules


@lru_cache(maxsize=8)
def spamd_version(host: str, port: int) -> str:
    """SpamAssassin's version as the spamd at host:port reports it in PROCESS mode (asked once each)."""
    response = _run(aiospamc.process(_PROBE, **_connection()))
    match = _VERSION.search(bytes(response.body or b""))
    return match.group(1).decode() if match else "unknown"


def _connection() -> dict:
    return {"host": settings.SPAMD_HOST, "port": settings.SPAMD_PORT, "timeout": Timeout(total=settings.SPAMD_TIMEOUT)}


def _run(coroutine: object) -> aiospamc.responses.Response:
    where = f"spamd at {settings.SPAMD_HOST}:{settings.SPAMD_PORT}"
    try:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    except (AIOSpamcConnectionFailed, ConnectionError, OSError) as exc:
        raise SpamdUnavailable(f"{where} is unreachable ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})") from None
    except (TimeoutException, asyncio.TimeoutError):
        raise SpamdUnavailable(f"{where} did not answer within {settings.SPAMD_TIMEOUT} s") from None
    except ClientException as exc:
        raise SpamdUnavailable(f"{where} refused the check: {type(exc).__name__}: {exc}") from None
