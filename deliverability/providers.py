"""Mailbox provider groups, so one provider's limits pace only its own stream.

An address's group comes from its domain (as A-labels, ``address_key``):
1. the consumer domains below answer at once, with no lookup;
2. any other domain is looked up: the group of its most preferred MX hosts, so
   a Google Workspace or Microsoft 365 customer's own domain (``acme.com``,
   MX ``aspmx.l.google.com``) shares Gmail's or Outlook's stream, as it shares
   their receiving servers, limits and reputation;
3. no answer (NXDOMAIN, a failure, a timeout, lookups ``off``): "" (everyone
   else), as before MX were read.
Answers are cached per process (an answer for its TTL, between 5 minutes and
an hour; a failure 5 minutes, a timeout one minute), at most ``_CACHE_SIZE``
domains. ``providers_of`` looks a trigger's distinct uncached domains up at
once on a few threads and waits at most ``SENDPLANE_DNS_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import dns.exception
import dns.name
import dns.resolver

from controlplane.addresses import address_key
from controlplane.dns import dns_resolver

logger = logging.getLogger("sendplane.providers")

# Domains that share one provider's infrastructure (and its rate limits).
PROVIDER_DOMAINS = {
    "gmail": {"gmail.com", "googlemail.com"},
    "microsoft": {"outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk", "outlook.fr", "live.co.uk"},
    "yahoo": {"yahoo.com", "ymail.com", "rocketmail.com", "yahoo.co.uk", "yahoo.fr", "aol.com"},
    "apple": {"icloud.com", "me.com", "mac.com"},
}
_BY_DOMAIN = {domain: group for group, domains in PROVIDER_DOMAINS.items() for domain in domains}
OTHER_PROVIDERS = "other"  # what the API and admin call the stream to every receiver outside the groups (stored as "")

# MX host suffixes of each provider's receiving servers: a host is the suffix itself or ends in "." + suffix.
PROVIDER_MX_SUFFIXES = {
    "gmail": (
        "google.com",  # Workspace: aspmx.l.google.com, alt1-4.aspmx.l.google.com, and smtp.google.com (its one MX since 2023)
        "googlemail.com",  # Workspace's older secondaries, aspmx2-5.googlemail.com
    ),
    "microsoft": (
        "mail.protection.outlook.com",  # Microsoft 365 (Exchange Online Protection): <tenant>.mail.protection.outlook.com
        "mx.microsoft",  # Microsoft 365 with DNSSEC and DANE inbound (2024 on): <tenant>.<id>.mx.microsoft
        "outlook.com",  # Outlook.com's own servers, *.olc.protection.outlook.com
        "hotmail.com",  # Outlook.com's custom domains of old (Windows Live Custom Domains): mx1-4.hotmail.com
    ),
    "yahoo": (
        "yahoodns.net",  # Yahoo's and AOL's inbound since their merger: mta5.am0.yahoodns.net, mx-aol.mail.gm0.yahoodns.net
        "yahoo.com",  # Yahoo-hosted domains' MX names from before yahoodns.net (mx1.mail.yahoo.com and the like)
        "aol.com",  # AOL-hosted domains of old (mailin-0x.mx.aol.com); AOL is in Yahoo's group above too
    ),
    "apple": (
        "icloud.com",  # iCloud+ custom domains: mx01.mail.icloud.com, mx02.mail.icloud.com
    ),
}
_BY_MX_SUFFIX = {suffix: group for group, suffixes in PROVIDER_MX_SUFFIXES.items() for suffix in suffixes}

# Names that are never a real recipient's (RFC 2606, RFC 6761, RFC 6762, RFC 7686): documentation, tests and local
# networks. Not looked up, so examples, tests and demos make no DNS query and get "" (example.com has a null MX anyway).
_RESERVED_TLDS = {"test", "example", "invalid", "localhost", "local", "onion"}
_RESERVED_DOMAINS = {"example.com", "example.net", "example.org"}

_ANSWER_SECONDS = (300.0, 3600.0)  # an answer's TTL, within these: a group changes when a company moves its mail
_FAILURE_SECONDS = 300.0  # NXDOMAIN, SERVFAIL, REFUSED: asked again after 5 minutes
_UNANSWERED_SECONDS = 60.0  # no answer in time: most likely a passing hiccup of our resolver
_CACHE_SIZE = 20_000  # domains; an entry is ~200 bytes
_LOOKUP_THREADS = 16  # lookups in flight at once: ~20 ms each, so 300 domains in ~0.4 s without flooding the resolver


def _clock() -> float:
    return time.monotonic()  # a function, so tests can move time on


class _Cache:
    """Domain -> (group, expiry), least recently used dropped beyond ``size``; shared by every thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, domain: str) -> str | None:
        with self._lock:
            entry = self._entries.get(domain)
            if entry is None or entry[1] <= _clock():
                self._entries.pop(domain, None)
                return None
            self._entries.move_to_end(domain)
            return entry[0]

    def put(self, domain: str, group: str, seconds: float, *, keep: bool = False) -> None:
        """Remember ``group`` for ``seconds``; ``keep``: not over an entry already there (a late real answer)."""
        with self._lock:
            if keep and domain in self._entries:
                return
            self._entries[domain] = (group, _clock() + seconds)
            self._entries.move_to_end(domain)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_CACHE = _Cache(_CACHE_SIZE)


def providers_cache_clear() -> None:
    _CACHE.clear()


def provider_of(address: str) -> str:
    """The provider group of an address, or "" for everyone else (may look its domain's MX up: see the module)."""
    return providers_of([address])[0]


def providers_of(addresses: Iterable[str]) -> list[str]:
    """The provider group of each address, in order; each distinct domain is looked up once, all at once."""
    domains = [address_key(address).rpartition("@")[2] for address in addresses]
    groups = domain_groups(set(domains))
    return [groups[domain] for domain in domains]


def domain_groups(domains: set[str]) -> dict[str, str]:
    """The group of each domain (A-labels, lower case): the static table, the cache, else a lookup."""
    groups: dict[str, str] = {}
    for domain in domains:
        known = _BY_DOMAIN.get(domain, "" if reserved_name(domain) else None)
        if known is None:
            known = _CACHE.get(domain)
        if known is not None:
            groups[domain] = known
    missing = sorted(domains - groups.keys())
    return groups | _looked_up(missing) if missing else groups


def reserved_name(domain: str) -> bool:
    """A name reserved for examples, tests or local networks (never looked up in DNS)."""
    if "." not in domain or domain.startswith("["):  # a bare label or an address literal: there is no MX to read
        return True
    return domain.rpartition(".")[2] in _RESERVED_TLDS or any(
        domain == name or domain.endswith(f".{name}") for name in _RESERVED_DOMAINS
    )


def _looked_up(domains: list[str]) -> dict[str, str]:
    """Looks ``domains`` up on a few threads, waiting at most one lookup's lifetime; the late ones answer "" for now."""
    try:
        resolver = dns_resolver()
    except dns.exception.DNSException:  # the system resolver is not configured (no /etc/resolv.conf): as unanswered
        logger.warning("MX lookups: no resolver configured; set SENDPLANE_DNS_RESOLVER, or off")
        for domain in domains:
            _CACHE.put(domain, _fallback(domain), _UNANSWERED_SECONDS)
        return {domain: _fallback(domain) for domain in domains}
    if resolver is None:  # SENDPLANE_DNS_RESOLVER=off: nothing cached, so turning lookups on takes effect at once
        return {domain: _fallback(domain) for domain in domains}
    pool = ThreadPoolExecutor(max_workers=min(_LOOKUP_THREADS, len(domains)), thread_name_prefix="mx-lookup")
    try:
        futures = {domain: pool.submit(_lookup, resolver, domain) for domain in domains}
        wait(futures.values(), timeout=resolver.lifetime)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a lookup still running caches its answer when it comes
    groups = {domain: _result(domain, future) for domain, future in futures.items()}
    late = sum(1 for future in futures.values() if not future.done() or future.cancelled())
    if late:
        logger.warning("MX lookups: %d of %d domains unanswered within %.1f s; provider group \"\" for now", late,
                       len(domains), resolver.lifetime)
    return groups


def _result(domain: str, future: Future[str]) -> str:
    if future.done() and not future.cancelled():
        try:
            return future.result()
        except Exception:  # a bug in reading one answer must not refuse the trigger: that domain gets ""
            logger.exception("MX lookup of %s failed", domain)
            _CACHE.put(domain, _fallback(domain), _FAILURE_SECONDS)
            return _fallback(domain)
    _CACHE.put(domain, _fallback(domain), _UNANSWERED_SECONDS, keep=True)
    return _fallback(domain)


def _fallback(domain: str) -> str:
    return _BY_DOMAIN.get(domain, "")


def _lookup(resolver: dns.resolver.Resolver, domain: str) -> str:
    group, seconds = _mx_group(resolver, domain)
    _CACHE.put(domain, group, seconds)
    return group


def _mx_group(resolver: dns.resolver.Resolver, domain: str) -> tuple[str, float]:
    """(group, seconds to cache it) from the domain's MX records."""
    try:
        answer = resolver.resolve(dns.name.from_text(domain), "MX", search=False, raise_on_no_answer=False)
    except dns.exception.Timeout:
        return _fallback(domain), _UNANSWERED_SECONDS
    except dns.exception.DNSException:  # NXDOMAIN; every server failed or refused; not a domain name at all
        return _fallback(domain), _FAILURE_SECONDS
    low, high = _ANSWER_SECONDS
    seconds = min(max(answer.expiration - time.time(), low), high)
    if answer.rrset is None:  # no MX: mail goes to the domain's own address (RFC 5321 5.1), no provider's
        return _fallback(domain), seconds
    return mx_group([(mx.preference, mx.exchange) for mx in answer.rrset]), seconds


def mx_group(records: list[tuple[int, dns.name.Name]]) -> str:
    """The group of the most preferred MX hosts (where the mail goes), or "".

    A null MX (RFC 7505: the one host ".", the domain takes no mail) matches no suffix.
    """
    if not records:
        return ""
    best = min(preference for preference, _ in records)
    hosts = sorted(exchange.to_text(omit_final_dot=True).lower() for preference, exchange in records if preference == best)
    return next((group for host in hosts if (group := _host_group(host))), "")


def _host_group(host: str) -> str:
    labels = host.split(".")
    return next((_BY_MX_SUFFIX[suffix] for i in range(len(labels)) if (suffix := ".".join(labels[i:])) in _BY_MX_SUFFIX), "")
