"""SPF (RFC 7208) as a receiver evaluates it: does an IP address pass a domain's SPF? And how many lookups does it take?

A small evaluator over dnspython rather than pyspf or checkdmarc: pyspf looks
names up through dnspython's module-wide default resolver (so it cannot be
pointed at ``SENDPLANE_DNS_RESOLVER``, a name server with a port, without
changing every other lookup of the process), and checkdmarc takes name
servers as bare addresses on port 53 and parses records without evaluating
an address against them. Both are asked through ``DnsAnswers``: one resolver,
each (name, type) asked once per check.

What is evaluated: ``all``, ``include``, ``a``, ``mx``, ``ptr``, ``ip4``,
``ip6``, ``exists``, ``redirect=`` (unknown modifiers ignored, ``exp=``
never fetched), macros in domain specs, the limit of 10 DNS-querying terms
(include, a, mx, ptr, exists, redirect; past it: permerror) and of 10 MX
names per ``mx``. Void-lookup limits (a SHOULD) are not enforced.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import dns.exception
import dns.name
import dns.resolver
import dns.reversename

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LOOKUP_LIMIT = 10  # RFC 7208 section 4.6.4
_MX_LIMIT = 10
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_QUERYING = {"include", "a", "mx", "ptr", "exists"}
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)\Z", re.S)
_DIRECTIVE = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9_.-]*)(?::([^/]*))?((?:/\d+)?(?://\d+)?)\Z", re.S)
_NETWORK = re.compile(r"([+\-~?]?)(ip[46]):(.*)\Z", re.I | re.S)
_MACRO = re.compile(r"%(?:\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}|(.))", re.I | re.S)


class DnsUnanswered(Exception):
    """DNS gave no usable answer (a timeout, SERVFAIL or REFUSED everywhere): a temporary error, never a "no"."""


class SpfPermError(Exception):
    """The record is broken: receivers give permerror (and DMARC counts SPF as failed)."""


class SpfTempError(Exception):
    """A lookup went unanswered: receivers give temperror and try again later."""


class DnsAnswers:
    """Lookups through one resolver: each (name, type) asked once; NXDOMAIN and NODATA are an empty list."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver
        self._memo: dict[tuple[str, str], list[Any] | DnsUnanswered] = {}

    def lookup(self, name: str, rdtype: str) -> list[Any]:
        key = (name.lower().rstrip("."), rdtype)
        if key not in self._memo:
            self._memo[key] = self._ask(*key)
        found = self._memo[key]
        if isinstance(found, DnsUnanswered):
            raise found
        return found

    def txt(self, name: str) -> list[str]:
        """Each TXT record with its strings joined (RFC 7208 section 3.3)."""
        return [b"".join(rdata.strings).decode("ascii", errors="replace") for rdata in self.lookup(name, "TXT")]

    def addresses(self, name: str, version: int) -> list[IpAddress]:
        return [ipaddress.ip_address(rdata.address) for rdata in self.lookup(name, "A" if version == 4 else "AAAA")]

    def _ask(self, name: str, rdtype: str) -> list[Any] | DnsUnanswered:
        try:
            return list(self.resolver.resolve(dns.name.from_text(name), rdtype, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            return DnsUnanswered(f"no answer for {name} {rdtype} within {self.resolver.lifetime:g} s")
        except dns.resolver.NoNameservers:
            return DnsUnanswered(f"no name server answered for {name} {rdtype} (SERVFAIL or REFUSED)")
        except dns.exception.DNSException as exc:  # a name dnspython cannot form, and the like
            return DnsUnanswered(f"{name} {rdtype}: {' '.join(str(exc).split())[:200]}")


def spf_records(answers: DnsAnswers, domain: str) -> list[str]:
    """The TXT records at ``domain`` that are SPF records ("v=spf1" then a space or the end)."""
    return [text for text in answers.txt(domain) if text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")]


def spf_record(answers: DnsAnswers, domain: str) -> str | None:
    """``domain``'s one SPF record, None without one; SpfPermError for two or more (RFC 7208 section 4.5)."""
    records = spf_records(answers, domain)
    if len(records) > 1:
        raise SpfPermError(f"{domain} publishes {len(records)} SPF records; receivers treat that as an error")
    return records[0] if records else None


@dataclass(frozen=True)
class Term:
    kind: str  # "directive" or "modifier"
    name: str  # lower case: "ip4", "include", "redirect", ...
    qualifier: str = "+"
    value: str = ""  # the domain spec or network; "" when absent
    cidr4: int | None = None
    cidr6: int | None = None


def parse(record: str, domain: str) -> list[Term]:
    """The record's terms; SpfPermError names the first one that is not SPF."""
    terms = [_term(text, domain) for text in record.split()[1:]]
    for name in ("redirect", "exp"):
        if sum(term.kind == "modifier" and term.name == name for term in terms) > 1:
            raise SpfPermError(f"{domain}'s SPF record has more than one {name}=")
    return terms


def _term(text: str, domain: str) -> Term:
    directive = _DIRECTIVE.match(text)
    if directive and directive.group(2).lower() in {"all", "include", "a", "mx", "ptr", "exists"}:
        qualifier, name, value, cidr = directive.groups()
        return Term("directive", name.lower(), qualifier or "+", value or "", *_cidrs(cidr or "", text, domain))
    network = _NETWORK.match(text)
    if network:
        return Term("directive", network.group(2).lower(), network.group(1) or "+", network.group(3))
    modifier = _MODIFIER.match(text)
    if modifier:
        return Term("modifier", modifier.group(1).lower(), value=modifier.group(2))
    raise SpfPermError(f"{domain}'s SPF record has a term receivers do not know: {text[:80]}")


def _cidrs(text: str, term: str, domain: str) -> tuple[int | None, int | None]:
    four, _, six = text.partition("//")
    cidr4 = int(four[1:]) if four.startswith("/") else None
    cidr6 = int(six) if six else None
    if (cidr4 is not None and cidr4 > 32) or (cidr6 is not None and cidr6 > 128):
        raise SpfPermError(f"{domain}'s SPF record has a prefix length out of range: {term[:80]}")
    return cidr4, cidr6


@dataclass
class SpfResult:
    result: str  # pass, fail, softfail, neutral, none, permerror, temperror
    reason: str  # one line: what matched, or why it could not be evaluated
    lookups: int = 0


@dataclass
class _Evaluation:
    answers: DnsAnswers
    ip: IpAddress
    sender: str  # the envelope sender the macros see
    lookups: int = 0
    matched: str = ""  # the term that matched last, and the includes that led to it

    def count(self) -> None:
        self.lookups += 1
        if self.lookups > LOOKUP_LIMIT:
            raise SpfPermError(f"evaluating it takes more than {LOOKUP_LIMIT} DNS lookups (include, a, mx, ptr, exists, redirect)")


def spf_check(answers: DnsAnswers, ip: IpAddress, domain: str, *, sender: str) -> SpfResult:
    """RFC 7208 ``check_host(ip, domain, sender)``, as a receiver of mail from ``ip`` with MAIL FROM ``sender``."""
    evaluation = _Evaluation(answers, ip, sender)
    try:
        result, reason = _check_host(evaluation, domain)
    except SpfPermError as exc:
        return SpfResult("permerror", str(exc), evaluation.lookups)
    except (SpfTempError, DnsUnanswered) as exc:
        return SpfResult("temperror", str(exc), evaluation.lookups)
    return SpfResult(result, reason, evaluation.lookups)


def _check_host(evaluation: _Evaluation, domain: str) -> tuple[str, str]:
    record = spf_record(evaluation.answers, domain)
    if record is None:
        return "none", f"{domain} publishes no SPF record"
    terms = parse(record, domain)
    for term in terms:
        if term.kind == "directive" and _matches(evaluation, term, domain):
            shown = f"{term.qualifier if term.qualifier != '+' else ''}{term.name}{':' + term.value if term.value else ''}"
            here = f"{shown} in {domain}'s record"
            # An include matched because a term of the included record did: name that one, the include after it.
            evaluation.matched = f"{evaluation.matched}, through {here}" if term.name == "include" else here
            return _QUALIFIERS[term.qualifier], evaluation.matched
    redirect = next((term.value for term in terms if term.kind == "modifier" and term.name == "redirect"), None)
    if redirect is None or any(term.name == "all" for term in terms if term.kind == "directive"):
        return "neutral", f"no term of {domain}'s record matches"
    evaluation.count()
    target = _target(evaluation, redirect, domain)
    result, reason = _check_host(evaluation, target)
    if result == "none":
        raise SpfPermError(f"redirect={target} in {domain}'s record names a domain without an SPF record")
    return result, reason


def _matches(evaluation: _Evaluation, term: Term, domain: str) -> bool:
    if term.name == "all":
        return True
    if term.name in ("ip4", "ip6"):
        return _in_network(evaluation.ip, term, domain)
    evaluation.count()
    target = _target(evaluation, term.value or domain, domain) if term.value or term.name != "include" else ""
    if term.name == "include":
        return _include(evaluation, term, target, domain)
    if term.name == "a":
        return _in_any(evaluation, evaluation.answers.addresses(target, evaluation.ip.version), term)
    if term.name == "mx":
        return _mx(evaluation, term, target)
    if term.name == "exists":
        return bool(evaluation.answers.addresses(target, 4))
    return _ptr(evaluation, target)


def _include(evaluation: _Evaluation, term: Term, target: str, domain: str) -> bool:
    if not target:
        raise SpfPermError(f"include without a domain in {domain}'s record")
    result, _ = _check_host(evaluation, target)
    if result == "none":
        raise SpfPermError(f"include:{target} in {domain}'s record names a domain without an SPF record")
    return result == "pass"


def _mx(evaluation: _Evaluation, term: Term, target: str) -> bool:
    exchanges = [rdata.exchange.to_text(omit_final_dot=True) for rdata in evaluation.answers.lookup(target, "MX")]
    if len(exchanges) > _MX_LIMIT:
        raise SpfPermError(f"mx:{target} has {len(exchanges)} MX names; receivers look up at most {_MX_LIMIT}")
    return any(_in_any(evaluation, evaluation.answers.addresses(name, evaluation.ip.version), term) for name in exchanges if name)


def _ptr(evaluation: _Evaluation, target: str) -> bool:
    """The deprecated ``ptr``: a validated reverse name of the IP at or below ``target``."""
    names = [rdata.target.to_text(omit_final_dot=True).lower() for rdata in ptr_lookup(evaluation.answers, evaluation.ip)]
    validated = [name for name in names[:_MX_LIMIT] if evaluation.ip in evaluation.answers.addresses(name, evaluation.ip.version)]
    return any(name == target.lower() or name.endswith(f".{target.lower()}") for name in validated)


def ptr_lookup(answers: DnsAnswers, ip: IpAddress) -> list[Any]:
    return answers.lookup(dns.reversename.from_address(str(ip)).to_text(), "PTR")


def _in_network(ip: IpAddress, term: Term, domain: str) -> bool:
    try:
        network = ipaddress.ip_network(term.value, strict=False)
    except ValueError:
        raise SpfPermError(f"{term.name}:{term.value[:60]} in {domain}'s record is not a network") from None
    if network.version != int(term.name[-1]):
        raise SpfPermError(f"{term.name}:{term.value[:60]} in {domain}'s record is not an IPv{term.name[-1]} network")
    return ip.version == network.version and ip in network


def _in_any(evaluation: _Evaluation, addresses: list[IpAddress], term: Term) -> bool:
    prefix = term.cidr4 if evaluation.ip.version == 4 else term.cidr6
    bits = prefix if prefix is not None else evaluation.ip.max_prefixlen
    return any(evaluation.ip in ipaddress.ip_network(f"{address}/{bits}", strict=False) for address in addresses)


def _target(evaluation: _Evaluation, spec: str, domain: str) -> str:
    """A domain spec with its macros expanded, checked to be a domain name (RFC 7208 sections 7 and 4.8)."""
    expanded = expand_macros(spec, ip=evaluation.ip, domain=domain, sender=evaluation.sender).rstrip(".")
    while len(expanded) > 253 and "." in expanded:  # section 7.3: drop labels from the left until it fits
        expanded = expanded.partition(".")[2]
    try:
        dns.name.from_text(expanded)
    except dns.exception.DNSException:
        raise SpfPermError(f"{spec[:80]} in {domain}'s record is not a domain name") from None
    if not expanded or "." not in expanded:
        raise SpfPermError(f"{spec[:80]} in {domain}'s record is not a domain name")
    return expanded


def expand_macros(spec: str, *, ip: IpAddress, domain: str, sender: str) -> str:
    """RFC 7208 section 7: ``%{i}``, ``%{d2}``, ``%{ir}``, ``%%``, ``%_``, ``%-``, ...; SpfPermError for a bad one."""
    local, _, sender_domain = sender.rpartition("@")
    values = {
        "s": sender,
        "l": local or "postmaster",
        "o": sender_domain or domain,
        "d": domain,
        "h": sender_domain or domain,
        "i": str(ip) if ip.version == 4 else ".".join(ip.exploded.replace(":", "")),  # IPv6: its nibbles, in order
        "p": "unknown",
        "v": "in-addr" if ip.version == 4 else "ip6",
        "c": str(ip),
        "r": "unknown",
        "t": "0",
    }

    def one(match: re.Match[str]) -> str:
        letter, digits, reverse, delimiters, literal = match.groups()
        if literal is not None:
            escapes = {"%": "%", "_": " ", "-": "%20"}
            if literal not in escapes:
                raise SpfPermError(f"{spec[:80]} in {domain}'s record has a malformed macro")
            return escapes[literal]
        parts = re.split("[" + re.escape(delimiters or ".") + "]", values[letter.lower()])
        parts = parts[::-1] if reverse else parts
        if digits:
            if int(digits) == 0:
                raise SpfPermError(f"{spec[:80]} in {domain}'s record has a macro keeping 0 labels")
            parts = parts[-int(digits) :]
        text = ".".join(parts)
        return quote(text, safe="") if letter.isupper() else text

    return _MACRO.sub(one, spec)


def spf_lookup_count(answers: DnsAnswers, domain: str) -> int:
    """DNS-querying terms of the whole record tree (includes and redirect followed), counting on past the limit to 11.

    Receivers stop at the first match, but mail from an address matched late (or never) needs them all: a
    tree over 10 fails for that mail. A term whose domain spec holds a macro counts, but is not followed.
    """
    return _count(answers, domain, 0)


def _count(answers: DnsAnswers, domain: str, counted: int) -> int:
    record = spf_record(answers, domain)
    if record is None:
        return counted
    terms = parse(record, domain)
    has_all = any(term.kind == "directive" and term.name == "all" for term in terms)
    for term in terms:
        if counted > LOOKUP_LIMIT:
            return counted
        follows = term.name == "include" if term.kind == "directive" else (term.name == "redirect" and not has_all)
        if (term.kind == "directive" and term.name in _QUERYING) or follows:
            counted += 1
        if follows and term.value and "%" not in term.value:
            counted = _count(answers, term.value.rstrip("."), counted)
    return counted
