"""The mailbox providers' sender rules, checked before sending (issue 18): ``domain_check`` and the launch gate.

Each rule is a small function over what DNS says (through ``dns_resolver()``)
and the settings, returning a status (pass, fail, warn, unknown), a one-line
message and what to fix. Which rules are *required* follows Gmail's sender
guidelines (February 2024), the strictest of the big providers:

- every sender: SPF or DKIM passes (``spf_or_dkim``), and the relay's
  addresses have forward-confirmed reverse DNS (``reverse_dns``);
- a bulk sender (``bulk_senders.py``: 5,000 a day to Gmail once, for good)
  also: SPF covers the relay (``spf``) within 10 lookups (``spf_lookups``),
  DKIM (``dkim``), DMARC published (``dmarc``, p=none is enough), the From
  domain aligned with SPF or DKIM (``alignment``), one-click unsubscribe
  served over https (``unsubscribe``).

A check passes when no required rule is fail or unknown: a lookup that went
unanswered is not a pass. Only what cannot be known without configuration
is not required: whether SPF covers the relay and its reverse DNS, while
``SENDPLANE_RELAY_IPS`` is unset (an ESP's addresses are the ESP's); those
report unknown with that fix. ``SENDPLANE_DNS_RESOLVER=off`` means no DNS
checks: every DNS rule is unknown, and the gate lets every launch through
(as it does for names reserved for examples and tests, never looked up).

``sender_rules_refusal`` is the one owner of the launch gate of marketing
campaigns; ``domain_check`` stores the last check (``DomainCheck``) for the
command, the API and the admin.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dns.exception
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.utils import timezone

from controlplane.dns import dns_resolver
from deliverability.dkim_signing import dkim_settings_check
from deliverability.models import DomainCheck, SenderRules, SendingDomain
from deliverability.providers import reserved_name
from deliverability.services.bulk_senders import is_bulk_sender, organisational_domain
from deliverability.spf import (
    DnsAnswers,
    DnsUnanswered,
    IpAddress,
    SpfPermError,
    ptr_lookup,
    spf_check,
    spf_lookup_count,
    spf_record,
)

PASS, FAIL, WARN, UNKNOWN = "pass", "fail", "warn", "unknown"
PASSING = (PASS, WARN)
ENFORCE, WARN_ONLY = SenderRules.ENFORCE, SenderRules.WARN
# rule -> (required of every sender, required of a bulk sender)
REQUIRED: dict[str, tuple[bool, bool]] = {
    "spf": (False, True),
    "spf_lookups": (False, True),
    "dkim": (False, True),
    "spf_or_dkim": (True, True),
    "dmarc": (False, True),
    "alignment": (False, True),
    "reverse_dns": (True, True),
    "unsubscribe": (False, True),
}
_BULK_MARKER = "dmarc"  # required only of bulk senders and never unconfigured: its stored flag says how a check judged
_RELAY_FIX = "set SENDPLANE_RELAY_IPS to the relay's outbound IP addresses (comma-separated), then check again"


@dataclass(frozen=True)
class RuleResult:
    rule: str
    status: str  # pass, fail, warn, unknown
    required: bool
    message: str
    fix: str  # empty when there is nothing to do


@dataclass(frozen=True)
class DomainCheckReport:
    domain: str
    org_domain: str
    bulk_sender: bool
    checked_at: dt.datetime
    passed: bool
    results: list[RuleResult]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "checked_at": self.checked_at.isoformat()}

    def failing(self) -> list[RuleResult]:
        return [result for result in self.results if result.required and result.status not in PASSING]


@dataclass(frozen=True)
class Finding:
    """One rule's outcome before its requiredness is known."""

    status: str
    message: str
    fix: str = ""
    unconfigured: bool = False  # unknown for lack of SENDPLANE_RELAY_IPS: then never required
    data: dict[str, str] = field(default_factory=dict)  # for later rules (DMARC's adkim and aspf)


@dataclass(frozen=True)
class Subject:
    """What the rules look at: the domain, its names, the relay, and DNS (None: not looked up, and why)."""

    domain: SendingDomain
    from_domain: str
    org_domain: str
    bulk: bool
    relay_ips: tuple[IpAddress, ...]
    answers: DnsAnswers | None
    unlooked: str = ""

    @property
    def name(self) -> str:
        return self.domain.domain  # the envelope sender's (VERP) domain and DKIM's d=


# --- the rules ------------------------------------------------------------------------------------------


def _not_looked_up(subject: Subject) -> Finding:
    return Finding(UNKNOWN, f"not checked: {subject.unlooked}", _lookup_fix(subject))


def _lookup_fix(subject: Subject) -> str:
    if reserved_name(subject.name):
        return "use a real domain: names reserved for examples and tests are never looked up"
    return "point SENDPLANE_DNS_RESOLVER at a name server (empty: the system's), then check again"


def _unanswered(exc: Exception) -> Finding:
    return Finding(UNKNOWN, f"DNS did not answer: {exc}", "make sure the domain's name servers answer, then check again")


def rule_spf(subject: Subject, found: dict[str, Finding]) -> Finding:
    """SPF at the envelope sender's domain passes for every relay address (a receiver's check_host)."""
    if subject.answers is None:
        return _not_looked_up(subject)
    try:
        record = spf_record(subject.answers, subject.name)
    except SpfPermError as exc:
        return Finding(FAIL, str(exc), "keep one SPF record (merge the others into it)")
    except DnsUnanswered as exc:
        return _unanswered(exc)
    if record is None:
        return Finding(FAIL, f"{subject.name} publishes no SPF record", f"publish a TXT record at {subject.name}: {_spf_example(subject)}")
    if not subject.relay_ips:
        return Finding(UNKNOWN, f"{subject.name} has an SPF record; whether it covers the relay is not known", _RELAY_FIX, True)
    return _spf_for_relay(subject, record)


def _spf_for_relay(subject: Subject, record: str) -> Finding:
    assert subject.answers is not None
    sender = f"postmaster@{subject.name}"
    results = {ip: spf_check(subject.answers, ip, subject.name, sender=sender) for ip in subject.relay_ips}
    bad = {ip: result for ip, result in results.items() if result.result != "pass"}
    if not bad:
        reasons = "; ".join(f"{ip}: {result.reason}" for ip, result in results.items())
        if record.lower().split()[-1] in ("all", "+all"):
            warning = f"passes for the relay ({reasons}), but +all lets anyone send as {subject.name}"
            return Finding(WARN, warning, "end the record with -all or ~all")
        return Finding(PASS, f"passes for the relay: {reasons}")
    if any(result.result == "temperror" for result in bad.values()):
        return _unanswered(Exception("; ".join(result.reason for result in bad.values() if result.result == "temperror")))
    detail = "; ".join(f"{ip}: {result.result} ({result.reason})" for ip, result in bad.items())
    if any(result.result == "permerror" for result in bad.values()):
        return Finding(FAIL, f"SPF of {subject.name} is broken: {detail}", "fix the record: receivers treat a permerror as a failure")
    missing = " ".join(_mechanism(ip) for ip in bad)
    return Finding(FAIL, f"SPF of {subject.name} does not cover the relay: {detail}", f"add {missing} to the SPF record of {subject.name}")


def _mechanism(ip: IpAddress) -> str:
    return f"ip{ip.version}:{ip}"


def _spf_example(subject: Subject) -> str:
    covered = " ".join(_mechanism(ip) for ip in subject.relay_ips) or "ip4:<the relay's address>"
    return f'"v=spf1 {covered} -all"'


def rule_spf_lookups(subject: Subject, found: dict[str, Finding]) -> Finding:
    """The whole SPF tree takes at most 10 DNS-querying terms, or mail matched late gets permerror."""
    if subject.answers is None:
        return _not_looked_up(subject)
    try:
        count = spf_lookup_count(subject.answers, subject.name)
    except SpfPermError as exc:
        return Finding(FAIL, str(exc), "fix the SPF record: receivers treat a permerror as a failure")
    except DnsUnanswered as exc:
        return _unanswered(exc)
    if count > 10:
        return Finding(
            FAIL,
            f"SPF of {subject.name} takes more than 10 DNS lookups: receivers stop there and return permerror",
            "replace include:, a, mx and ptr terms by ip4:/ip6: networks, or drop includes of services you no longer use",
        )
    return Finding(PASS, f"SPF of {subject.name} takes {count} of the 10 DNS lookups allowed")


def rule_dkim(subject: Subject, found: dict[str, Finding]) -> Finding:
    """The selector is published and its p= is the public half of the key Sendplane signs with (``dkim_settings_check``)."""
    domain = subject.domain
    if not domain.dkim_selector and not domain.dkim_key_path:
        return Finding(
            FAIL,
            f"DKIM is not configured: {subject.name}'s mail goes out unsigned",
            "set a DKIM selector and key file for the domain (admin, or PATCH /api/v1/domains/<domain>/) and publish the key",
        )
    checked = dkim_settings_check(domain=subject.name, selector=domain.dkim_selector, key_path=domain.dkim_key_path)
    name = f"{domain.dkim_selector}._domainkey.{subject.name}"
    if checked.problem:
        hint = _dkim_record(domain.dkim_key_path)
        fix = f"publish at {name} the TXT record {hint}" if hint else "set a readable RSA key file of at least 1024 bits"
        return Finding(FAIL, checked.problem, fix)
    if checked.dns.startswith("unchecked"):
        return Finding(UNKNOWN, checked.dns, _lookup_fix(subject) if subject.answers is None else "make sure the name servers answer")
    return Finding(PASS, f"the signing key {checked.dns}")


def _dkim_record(key_path: str) -> str:
    """The record that would publish the key's public half, or "" when the key does not read."""
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return ""
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f'"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"'


def rule_spf_or_dkim(subject: Subject, found: dict[str, Finding]) -> Finding:
    """Gmail's rule for every sender: mail is authenticated by SPF or DKIM."""
    spf, dkim = found["spf"], found["dkim"]
    if spf.status in PASSING or dkim.status == PASS:
        return Finding(PASS, "authenticated: " + " and ".join(n for n, f in (("SPF", spf), ("DKIM", dkim)) if f.status in PASSING))
    if UNKNOWN in (spf.status, dkim.status):
        unconfigured = all(f.unconfigured for f in (spf, dkim) if f.status == UNKNOWN)
        return Finding(UNKNOWN, "neither SPF nor DKIM is known to pass (see spf and dkim)", _first_fix(spf, dkim), unconfigured)
    return Finding(FAIL, "neither SPF nor DKIM passes: receivers cannot authenticate the mail", _first_fix(dkim, spf))


def _first_fix(*findings: Finding) -> str:
    return next((f.fix for f in findings if f.fix), "")


def rule_dmarc(subject: Subject, found: dict[str, Finding]) -> Finding:
    """A DMARC record for the From domain: at ``_dmarc.<from domain>``, else at its organisational domain."""
    if subject.answers is None:
        return _not_looked_up(subject)
    try:
        where, records = _dmarc_records(subject.answers, subject.from_domain, subject.org_domain)
    except DnsUnanswered as exc:
        return _unanswered(exc)
    example = f'"v=DMARC1; p=none; rua=mailto:dmarc-reports@{subject.org_domain}"'
    if not records:
        return Finding(
            FAIL,
            f"no DMARC record at _dmarc.{subject.from_domain} or _dmarc.{subject.org_domain}",
            f"publish a TXT record at _dmarc.{subject.org_domain}: {example} (p=none is enough; quarantine or reject later)",
        )
    if len(records) > 1:
        return Finding(FAIL, f"_dmarc.{where} holds {len(records)} DMARC records; receivers then apply none", "keep one")
    return _dmarc_policy(subject, where, records[0], example)


def _dmarc_policy(subject: Subject, where: str, tags: dict[str, str], example: str) -> Finding:
    if tags.get("p", "").lower() not in ("none", "quarantine", "reject"):
        return Finding(FAIL, f"the DMARC record at _dmarc.{where} has no valid p= (none, quarantine or reject)", f"publish {example} there")
    below = where != subject.from_domain and "sp" in tags  # a subdomain's mail gets the organisational domain's sp=
    policy = (tags["sp"] if below else tags["p"]).lower()
    modes = {name: tags.get(name, "r").lower() for name in ("adkim", "aspf")}
    return Finding(PASS, f"published at _dmarc.{where}: policy {policy} for mail from {subject.from_domain}", data=modes)


def _dmarc_records(answers: DnsAnswers, from_domain: str, org_domain: str) -> tuple[str, list[dict[str, str]]]:
    """Where the record was found, and the DMARC records there (RFC 7489 section 6.6.3)."""
    for name in dict.fromkeys((from_domain, org_domain)):
        records = [_tags(text) for text in answers.txt(f"_dmarc.{name}")]
        records = [tags for tags in records if tags.get("v") == "DMARC1"]
        if records:
            return name, records
    return org_domain, []


def _tags(text: str) -> dict[str, str]:
    pairs = [part.partition("=") for part in text.split(";")]
    return {tag.strip().lower(): value.strip() for tag, eq, value in pairs if eq and tag.strip()}


def rule_alignment(subject: Subject, found: dict[str, Finding]) -> Finding:
    """The From domain aligns with a passing SPF or DKIM domain (relaxed: same organisational domain; strict: equal)."""
    modes = found["dmarc"].data or {"adkim": "r", "aspf": "r"}
    aligned = {
        "SPF": found["spf"].status in PASSING and _aligned(subject.name, subject.from_domain, modes["aspf"]),
        "DKIM": found["dkim"].status == PASS and _aligned(subject.name, subject.from_domain, modes["adkim"]),
    }
    if any(aligned.values()):
        names = " and ".join(name for name, ok in aligned.items() if ok)
        return Finding(PASS, f"{subject.from_domain} (From) aligns with {names} passing for {subject.name}")
    unknown = [f for f in (found["spf"], found["dkim"]) if f.status == UNKNOWN]
    if unknown:
        unconfigured = all(f.unconfigured for f in unknown)
        return Finding(UNKNOWN, "alignment not known: SPF or DKIM could not be checked", unknown[0].fix, unconfigured)
    return Finding(
        FAIL,
        f"no authentication passing for {subject.name} aligns with the From domain {subject.from_domain}: DMARC fails",
        _first_fix(found["dkim"], found["spf"]),
    )


def _aligned(domain: str, from_domain: str, mode: str) -> bool:
    if mode == "s":
        return domain == from_domain
    return organisational_domain(domain) == organisational_domain(from_domain)


def rule_reverse_dns(subject: Subject, found: dict[str, Finding]) -> Finding:
    """Each relay address has a PTR name that resolves back to it (forward-confirmed reverse DNS)."""
    if not subject.relay_ips:
        return Finding(UNKNOWN, "the relay's addresses are not known", _RELAY_FIX, True)
    if subject.answers is None:
        return _not_looked_up(subject)
    try:
        problems = [problem for ip in subject.relay_ips if (problem := _fcrdns(subject.answers, ip))]
    except DnsUnanswered as exc:
        return _unanswered(exc)
    if problems:
        return Finding(
            FAIL,
            "; ".join(problems),
            "ask whoever holds the relay's addresses (the hosting provider) for a PTR naming a host whose A/AAAA is that address",
        )
    return Finding(PASS, "every relay address has a PTR name that resolves back to it: " + ", ".join(map(str, subject.relay_ips)))


def _fcrdns(answers: DnsAnswers, ip: IpAddress) -> str:
    """Empty when a PTR name of ``ip`` resolves back to it, else the problem."""
    names = [rdata.target.to_text(omit_final_dot=True) for rdata in ptr_lookup(answers, ip)]
    if not names:
        return f"{ip} has no PTR record"
    for name in names[:10]:
        if ip in answers.addresses(name, ip.version):
            return ""
    return f"PTR of {ip} names {', '.join(names)}, which does not resolve back to {ip}"


def rule_unsubscribe(subject: Subject, found: dict[str, Finding]) -> Finding:
    """One-click unsubscribe: Sendplane always sends List-Unsubscribe and List-Unsubscribe-Post; the link must be https."""
    url: str = settings.SENDPLANE_PUBLIC_URL
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return Finding(PASS, f"List-Unsubscribe=One-Click links point to {url}/u/...")
    return Finding(
        FAIL,
        f"one-click unsubscribe links point to {url}, not https: providers ignore them",
        "set SENDPLANE_PUBLIC_URL to the https:// URL recipients reach Sendplane at",
    )


RULES: dict[str, Callable[[Subject, dict[str, Finding]], Finding]] = {
    "spf": rule_spf,
    "spf_lookups": rule_spf_lookups,
    "dkim": rule_dkim,
    "spf_or_dkim": rule_spf_or_dkim,
    "dmarc": rule_dmarc,
    "alignment": rule_alignment,
    "reverse_dns": rule_reverse_dns,
    "unsubscribe": rule_unsubscribe,
}


# --- the check ------------------------------------------------------------------------------------------


def relay_ips() -> tuple[IpAddress, ...]:
    return tuple(ipaddress.ip_address(text) for text in settings.SENDPLANE_RELAY_IPS)


def _subject(domain: SendingDomain) -> Subject:
    from_domain = domain.default_sender.rpartition("@")[2].lower() or domain.domain
    org_domain = organisational_domain(from_domain)
    common = partial(Subject, domain, from_domain, org_domain, is_bulk_sender(organisational_domain(domain.domain)), relay_ips())
    if reserved_name(domain.domain):
        return common(None, f"{domain.domain} is reserved for examples and tests, never looked up")
    try:
        resolver = dns_resolver()
    except dns.exception.DNSException:  # no /etc/resolv.conf
        return common(None, "no resolver configured")
    if resolver is None:
        return common(None, "DNS lookups are off (SENDPLANE_DNS_RESOLVER=off)")
    return common(DnsAnswers(resolver))


def domain_check(sending_domain: SendingDomain) -> DomainCheckReport:
    """Run every rule (DNS lookups, no transaction held) and store the outcome as the domain's ``DomainCheck``."""
    subject = _subject(sending_domain)
    found: dict[str, Finding] = {}
    results = []
    for rule, check in RULES.items():
        finding = found[rule] = check(subject, found)
        required = REQUIRED[rule][subject.bulk] and not finding.unconfigured
        results.append(RuleResult(rule, finding.status, required, finding.message, "" if finding.status == PASS else finding.fix))
    passed = all(result.status in PASSING for result in results if result.required)
    report = DomainCheckReport(sending_domain.domain, subject.org_domain, subject.bulk, timezone.now(), passed, results)
    DomainCheck.objects.update_or_create(
        sending_domain=sending_domain,
        defaults={"checked_at": report.checked_at, "passed": passed, "results": [asdict(result) for result in results]},
    )
    return report


def domain_check_report(stored: DomainCheck) -> DomainCheckReport:
    """A stored check as a report (bulk status as it is now)."""
    domain = stored.sending_domain
    org_domain = organisational_domain(domain.default_sender.rpartition("@")[2] or domain.domain)
    results = [RuleResult(**{name: entry.get(name) for name in RuleResult.__dataclass_fields__}) for entry in stored.results]
    bulk = is_bulk_sender(organisational_domain(domain.domain))
    return DomainCheckReport(domain.domain, org_domain, bulk, stored.checked_at, stored.passed, results)


# --- the launch gate ------------------------------------------------------------------------------------


def sender_rules_refusal(sending_domain: SendingDomain) -> str | None:
    """Why a marketing campaign of ``sending_domain`` may not launch, in one line; None when it may.

    None under the "warn" policy, with DNS lookups off (no DNS checks at all), for a name reserved for examples
    and tests (never looked up), or when the domain's last check passes. The last check is run again when
    missing, older than SENDPLANE_SENDER_CHECK_MAX_AGE_MINUTES, or judged before the domain became a bulk sender.
    """
    if sending_domain.sender_rules == WARN_ONLY or reserved_name(sending_domain.domain) or _lookups_off():
        return None
    report = _fresh_report(sending_domain)
    if report.passed:
        return None
    failing = ", ".join(f"{result.rule} ({result.status})" for result in report.failing())
    return (
        f"{sending_domain.domain} fails the providers' required sender rules: {failing}; "
        f"manage.py domain_check {sending_domain.domain} says what to fix"
    )


def _lookups_off() -> bool:
    try:
        return dns_resolver() is None
    except dns.exception.DNSException:  # the system resolver is not configured: checked, and reported unknown
        return False


def _fresh_report(sending_domain: SendingDomain) -> DomainCheckReport:
    stored = DomainCheck.objects.filter(sending_domain=sending_domain).select_related("sending_domain").first()
    if stored is None or _stale(stored):
        return domain_check(sending_domain)
    return domain_check_report(stored)


def _stale(stored: DomainCheck) -> bool:
    minutes: int = settings.SENDPLANE_SENDER_CHECK_MAX_AGE_MINUTES
    if stored.checked_at < timezone.now() - dt.timedelta(minutes=minutes):
        return True
    was_bulk = any(entry.get("rule") == _BULK_MARKER and entry.get("required") for entry in stored.results)
    return was_bulk != is_bulk_sender(organisational_domain(stored.sending_domain.domain))
