"""Issue 16: a recipient's provider group from its domain's MX, read from a real DNS server on loopback.

Google Workspace and Microsoft 365 customers' own domains share Gmail's and
Outlook's streams; consumer domains need no lookup; a failure, a timeout or
lookups turned off give "" (as before MX were read). Answers are cached per
process; a trigger looks its distinct domains up at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dns.resolver
import pytest
from django.core.exceptions import ImproperlyConfigured

from controlplane.dns import dns_resolver, name_server
from deliverability import providers
from deliverability.providers import provider_of, providers_of
from dispatch.models import Message
from dispatch.services.triggers import trigger_accept
from tests.conftest import SIMPLE_VARIABLES
from tests.dns_server import DnsServer, dns_server  # noqa: F401 - the fixture
from tests.test_settings import load_settings

WORKSPACE = {"@": ["MX 1 aspmx.l.google.com.", "MX 5 alt1.aspmx.l.google.com.", "MX 10 aspmx2.googlemail.com."]}
OFFICE_365 = {"@": ["MX 0 contoso-com.mail.protection.outlook.com."]}
YAHOO_HOSTED = {"@": ["MX 20 mta5.am0.yahoodns.net.", "MX 20 mta6.am0.yahoodns.net."]}
SELF_HOSTED = {"@": ["MX 10 mx1.smallshop.net.", "MX 20 aspmx.l.google.com."]}  # Google only as the backup
NULL_MX = {"@": ["MX 0 ."]}


def served(server: DnsServer, zones: dict[str, dict[str, list[str]]]) -> None:
    for origin, records in zones.items():
        server.add_zone(origin, records)


def mx_queries(server: DnsServer) -> list[str]:
    return [q.name for q in server.queries if q.type == "MX"]


def asked_since(server: DnsServer, seen: list[int]) -> list[str]:
    """The MX names asked since the last call (``seen`` keeps the count)."""
    names = mx_queries(server)
    new, seen[0] = names[seen[0]:], len(names)
    return sorted(new)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The providers cache's clock, moved on by hand: now[0] seconds are added to the real one."""
    now = [0.0]
    real = time.monotonic
    monkeypatch.setattr(providers, "_clock", lambda: real() + now[0])
    return now


# --- the groups ------------------------------------------------------------------------------


def test_a_workspace_domain_is_gmail(dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    served(dns_server, {"acme.com": WORKSPACE})
    assert provider_of("ana@acme.com") == "gmail"
    assert provider_of("ana@Acme.COM") == "gmail"  # one lookup: the domain is matched as its key
    assert mx_queries(dns_server) == ["acme.com"]


def test_a_microsoft_365_domain_is_microsoft(dns_server: DnsServer) -> None:  # noqa: F811
    served(dns_server, {"contoso.com": OFFICE_365, "fabrikam.com": {"@": ["MX 0 fabrikam-com.c-v1.mx.microsoft."]}})
    assert providers_of(["a@contoso.com", "b@fabrikam.com"]) == ["microsoft", "microsoft"]


def test_a_yahoo_hosted_domain_is_yahoo(dns_server: DnsServer) -> None:  # noqa: F811
    served(dns_server, {"rocketshop.net": YAHOO_HOSTED})
    assert provider_of("a@rocketshop.net") == "yahoo"


def test_an_icloud_custom_domain_is_apple(dns_server: DnsServer) -> None:  # noqa: F811
    served(dns_server, {"family.org": {"@": ["MX 10 mx01.mail.icloud.com.", "MX 10 mx02.mail.icloud.com."]}})
    assert provider_of("a@family.org") == "apple"


def test_the_most_preferred_mx_decides(dns_server: DnsServer) -> None:  # noqa: F811
    served(dns_server, {"smallshop.net": SELF_HOSTED, "evilgoogle.com": {"@": ["MX 10 mx.notgoogle.com.", "MX 20 google.com.evil.net."]}})
    assert providers_of(["a@smallshop.net", "b@evilgoogle.com"]) == ["", ""]


def test_an_unrelated_mx_is_no_provider(dns_server: DnsServer) -> None:  # noqa: F811
    served(dns_server, {"smallshop.net": {"@": ["MX 10 mail.smallshop.net."]}})
    assert provider_of("a@smallshop.net") == ""


def test_a_null_mx_is_no_provider(dns_server: DnsServer) -> None:  # noqa: F811
    served(dns_server, {"nomail.net": NULL_MX})
    assert provider_of("a@nomail.net") == ""


def test_nxdomain_and_no_mx_fall_back(dns_server: DnsServer) -> None:  # noqa: F811
    served(dns_server, {"acme.com": WORKSPACE, "bare.net": {"@": ["A 192.0.2.7"]}})
    # gone.acme.com: NXDOMAIN; bare.net: no MX, mail goes to its A; elsewhere.org: outside the server's zones (REFUSED).
    assert providers_of(["a@gone.acme.com", "b@bare.net", "c@elsewhere.org"]) == ["", "", ""]
    assert sorted(mx_queries(dns_server)) == ["bare.net", "elsewhere.org", "gone.acme.com"]


def test_a_consumer_domain_needs_no_lookup(dns_server: DnsServer) -> None:  # noqa: F811
    # The server has no zone for them: a lookup would be refused and give "".
    assert providers_of(["a@gmail.com", "b@Hotmail.co.uk", "c@yahoo.fr", "d@me.com"]) == ["gmail", "microsoft", "yahoo", "apple"]
    assert dns_server.queries == []


def test_reserved_names_are_never_looked_up(dns_server: DnsServer) -> None:  # noqa: F811
    addresses = ["a@example.org", "b@mail.example.com", "c@shop.test", "d@x.example", "e@nohost.invalid", "f@[192.0.2.1]"]
    assert providers_of(addresses) == [""] * 6
    assert dns_server.queries == []


def test_an_idn_domain_is_looked_up_as_a_labels(dns_server: DnsServer) -> None:  # noqa: F811
    served(dns_server, {"xn--bcher-kva.ch": WORKSPACE, "xn--e1afmkfd.xn--p1ai": OFFICE_365})  # bücher.ch, пример.рф
    assert providers_of(["ana@Bücher.ch", "ivan@ПРИМЕР.рф", "eva@xn--bcher-kva.ch"]) == ["gmail", "microsoft", "gmail"]
    assert sorted(mx_queries(dns_server)) == ["xn--bcher-kva.ch", "xn--e1afmkfd.xn--p1ai"]


# --- the cache ---------------------------------------------------------------------------------


def test_a_second_call_makes_no_query(dns_server: DnsServer) -> None:  # noqa: F811
    served(dns_server, {"acme.com": WORKSPACE})
    assert provider_of("a@acme.com") == "gmail"
    assert provider_of("a@nowhere.net") == ""  # refused: a failure is cached too
    dns_server.drop_all = True  # a lookup now would time out and answer ""
    assert providers_of(["b@acme.com", "c@acme.com", "d@nowhere.net"]) == ["gmail", "gmail", ""]
    assert mx_queries(dns_server) == ["acme.com", "nowhere.net"]


def test_an_answer_is_kept_for_its_ttl_within_an_hour_a_failure_five_minutes(
    dns_server: DnsServer, clock: list[float]  # noqa: F811
) -> None:
    served(dns_server, {"acme.com": {"@": ["7200 MX 1 aspmx.l.google.com."]}, "brief.net": {"@": ["600 MX 1 aspmx.l.google.com."]}})
    people, seen = ["a@acme.com", "b@brief.net", "c@gone.acme.com"], [0]

    def asked_at(seconds: float) -> list[str]:
        clock[0] = seconds
        assert providers_of(people) == ["gmail", "gmail", ""]
        return asked_since(dns_server, seen)

    assert asked_at(0) == ["acme.com", "brief.net", "gone.acme.com"]
    assert asked_at(299) == []
    assert asked_at(301) == ["gone.acme.com"]  # NXDOMAIN: five minutes
    assert asked_at(599) == []
    assert asked_at(602) == ["brief.net", "gone.acme.com"]  # brief.net's TTL of 600 s
    assert asked_at(3599) == ["brief.net", "gone.acme.com"]  # acme.com's 7200 s ...
    assert asked_at(3601) == ["acme.com"]  # ... capped at an hour


def test_the_cache_is_bounded(dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:  # noqa: F811
    # Eviction only: no lookup may come back late (cached as unanswered, then stored again), even on a loaded machine.
    settings.SENDPLANE_DNS_TIMEOUT_SECONDS = 30.0
    monkeypatch.setattr(providers, "_CACHE", providers._Cache(3))
    for name in ("a", "b", "c", "d"):
        served(dns_server, {f"{name}.net": WORKSPACE})
    seen = [0]
    providers_of(["x@a.net", "x@b.net", "x@c.net"])
    providers_of(["x@a.net"])  # a is used again: b is now the least recently used
    providers_of(["x@d.net"])
    assert len(providers._CACHE) == 3 and asked_since(dns_server, seen) == ["a.net", "b.net", "c.net", "d.net"]
    assert providers_of(["x@a.net", "x@c.net", "x@d.net"]) == ["gmail"] * 3 and asked_since(dns_server, seen) == []
    assert providers_of(["x@b.net"]) == ["gmail"] and asked_since(dns_server, seen) == ["b.net"]


# --- time bounds and concurrency ---------------------------------------------------------------


def test_an_unanswering_server_falls_back_within_the_bound(dns_server: DnsServer, settings: Any) -> None:  # noqa: F811
    settings.SENDPLANE_DNS_TIMEOUT_SECONDS = 0.5
    served(dns_server, {"acme.com": WORKSPACE})
    dns_server.drop_all = True
    started = time.monotonic()
    found = providers_of([f"u{i}@shop{i}.net" for i in range(40)] + ["a@acme.com", "b@gmail.com"])
    elapsed = time.monotonic() - started
    assert found == [""] * 41 + ["gmail"]
    assert elapsed < 1.5, elapsed  # one lifetime (0.5 s) for all 41 domains, not 41 of them
    asked = len(dns_server.queries)
    assert 0 < asked <= 2 * 16  # the lookups in flight (one retry each); the rest never started
    started = time.monotonic()
    assert providers_of([f"u{i}@shop{i}.net" for i in range(40)] + ["a@acme.com"]) == [""] * 41  # cached: no second wait
    assert len(dns_server.queries) == asked and time.monotonic() - started < 0.25


def test_one_silent_domain_does_not_cost_the_others_their_answer(dns_server: DnsServer, settings: Any) -> None:  # noqa: F811
    settings.SENDPLANE_DNS_TIMEOUT_SECONDS = 0.5
    served(dns_server, {"acme.com": WORKSPACE, "contoso.com": OFFICE_365, "slow.net": WORKSPACE})
    dns_server.drop_names = {"slow.net"}
    assert providers_of(["a@acme.com", "b@slow.net", "c@contoso.com"]) == ["gmail", "", "microsoft"]


def test_a_timed_out_domain_is_asked_again_after_a_minute(
    dns_server: DnsServer, settings: Any, clock: list[float]  # noqa: F811
) -> None:
    settings.SENDPLANE_DNS_TIMEOUT_SECONDS = 0.3
    served(dns_server, {"acme.com": WORKSPACE})
    dns_server.drop_all = True
    assert provider_of("a@acme.com") == ""
    dns_server.drop_all = False
    clock[0] = 59
    assert provider_of("a@acme.com") == ""
    clock[0] = 61
    assert provider_of("a@acme.com") == "gmail"


def test_distinct_domains_are_looked_up_at_once(dns_server: DnsServer, settings: Any) -> None:  # noqa: F811
    # Each answer takes 0.25 s; one at a time, 32 domains would take 8 s and most would miss the 2 s bound.
    settings.SENDPLANE_DNS_TIMEOUT_SECONDS = 2.0
    for i in range(32):
        served(dns_server, {f"shop{i}.net": WORKSPACE})
    dns_server.delay_seconds = 0.25
    people = [f"u{i}.{k}@shop{i}.net" for i in range(32) for k in range(3)]
    assert providers_of(people) == ["gmail"] * 96
    assert len(mx_queries(dns_server)) == 32


# --- off, and the setting ----------------------------------------------------------------------


def test_off_makes_no_query(dns_server: DnsServer, settings: Any) -> None:  # noqa: F811
    served(dns_server, {"acme.com": WORKSPACE})
    settings.SENDPLANE_DNS_RESOLVER = "off"
    assert dns_resolver() is None
    assert providers_of(["a@acme.com", "b@gmail.com"]) == ["", "gmail"]
    assert dns_server.queries == []
    settings.SENDPLANE_DNS_RESOLVER = dns_server.address  # nothing was cached while off: turning it on takes effect
    assert provider_of("a@acme.com") == "gmail"


@pytest.mark.parametrize(
    ("value", "server"),
    [("", None), ("off", None), ("OFF", None), ("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
     ("[::1]:5353", ("::1", 5353)), ("::1", ("::1", 53)), ("[2001:db8::1]", ("2001:db8::1", 53))],
)
def test_the_resolver_setting_reads(value: str, server: tuple[str, int] | None) -> None:
    assert name_server(value) == server


@pytest.mark.parametrize("value", ["ns.example.net", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:dns", "[::1", "[::1]x", "1.2.3"])
def test_a_malformed_resolver_setting_is_refused(value: str, settings: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match="SENDPLANE_DNS_RESOLVER must be"):
        name_server(value)
    settings.SENDPLANE_DNS_RESOLVER = value  # set behind the start-up check's back: the first lookup says so
    with pytest.raises(ImproperlyConfigured, match="SENDPLANE_DNS_RESOLVER must be"):
        dns_resolver()


@pytest.mark.parametrize(
    ("env", "named"),
    [({"SENDPLANE_DNS_RESOLVER": "dns.internal:53"}, "SENDPLANE_DNS_RESOLVER must be empty (the system resolver), off, or"),
     ({"SENDPLANE_DNS_TIMEOUT_SECONDS": "0"}, "SENDPLANE_DNS_TIMEOUT_SECONDS must be at least 0.1")],
)
def test_a_malformed_setting_stops_start_up(tmp_path: Path, env: dict[str, str], named: str) -> None:
    result = load_settings(tmp_path, **env)
    assert result.returncode != 0 and named in result.stderr


def test_a_well_formed_setting_starts(tmp_path: Path) -> None:
    result = load_settings(tmp_path, SENDPLANE_DNS_RESOLVER="[::1]:5353", SENDPLANE_DNS_TIMEOUT_SECONDS="0.5")
    assert result.returncode == 0, result.stderr


def test_the_resolver_has_the_configured_server_and_lifetime(settings: Any) -> None:
    settings.SENDPLANE_DNS_RESOLVER, settings.SENDPLANE_DNS_TIMEOUT_SECONDS = "[::1]:5353", 1.5
    resolver = dns_resolver()
    assert resolver is not None and resolver.nameservers == ["::1"] and resolver.port == 5353
    assert resolver.lifetime == 1.5 and resolver.timeout == 0.75


# --- the server, as issue 18's domain checks will use it ---------------------------------------


def test_the_server_answers_what_domain_checks_ask(dns_server: DnsServer) -> None:  # noqa: F811
    dkim = "v=DKIM1; k=rsa; p=" + "A" * 392
    served(dns_server, {
        "acme.com": {
            "@": ['TXT "v=spf1 include:_spf.google.com ~all"', "MX 1 smtp.google.com."],
            "_dmarc": ['TXT "v=DMARC1; p=reject; rua=mailto:dmarc@acme.com"'],
            "s1._domainkey": [f'TXT "{dkim[:255]}" "{dkim[255:]}"'],
            "mail": ["A 192.0.2.25", "AAAA 2001:db8::25"],
            "www": ["CNAME mail.acme.com."],
        },
        "2.0.192.in-addr.arpa": {"25": ["PTR mail.acme.com."]},
    })
    resolver = dns_resolver()
    assert resolver is not None

    def ask(name: str, rdtype: str) -> list[str]:
        return [r.to_text() for r in resolver.resolve(name, rdtype, search=False)]

    assert ask("acme.com", "TXT") == ['"v=spf1 include:_spf.google.com ~all"']
    assert ask("_dmarc.acme.com", "TXT") == ['"v=DMARC1; p=reject; rua=mailto:dmarc@acme.com"']
    assert b"".join(resolver.resolve("s1._domainkey.acme.com", "TXT", search=False)[0].strings).decode() == dkim
    assert ask("www.acme.com", "AAAA") == ["2001:db8::25"]  # through the CNAME
    assert ask("25.2.0.192.in-addr.arpa", "PTR") == ["mail.acme.com."]
    with pytest.raises(dns.resolver.NoAnswer):  # the name exists (it has names below it): NODATA, not NXDOMAIN
        resolver.resolve("_domainkey.acme.com", "TXT", search=False)
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("s2._domainkey.acme.com", "TXT", search=False)
    with pytest.raises(dns.resolver.NoNameservers):  # REFUSED: not a zone it serves
        resolver.resolve("example.net", "MX", search=False)


def test_a_large_answer_comes_over_tcp(dns_server: DnsServer) -> None:  # noqa: F811
    served(dns_server, {"acme.com": {"@": [f'TXT "record {i} {"x" * 200}"' for i in range(4)]}})
    resolver = dns_resolver()
    assert resolver is not None
    assert len(resolver.resolve("acme.com", "TXT", search=False)) == 4
    assert [q.transport for q in dns_server.queries] == ["udp", "tcp"]


# --- through the trigger -----------------------------------------------------------------------


def test_a_trigger_stores_each_recipients_group(dns_server: DnsServer, campaign: Any) -> None:  # noqa: F811
    served(dns_server, {"acme.com": WORKSPACE, "contoso.com": OFFICE_365, "smallshop.net": {"@": ["MX 10 mail.smallshop.net."]}})
    addresses = ["ana@acme.com", "bo@acme.com", "cy@contoso.com", "di@gmail.com", "ed@smallshop.net", "fa@example.org"]
    response, _ = trigger_accept(
        campaign=campaign, idempotency_key="mx-1", recipients=[{"address": a, "context": SIMPLE_VARIABLES} for a in addresses]
    )
    assert response["accepted"] == 6
    stored = dict(Message.objects.filter(campaign=campaign).values_list("recipient", "provider"))
    assert stored == {"ana@acme.com": "gmail", "bo@acme.com": "gmail", "cy@contoso.com": "microsoft", "di@gmail.com": "gmail",
                      "ed@smallshop.net": "", "fa@example.org": ""}
    assert sorted(mx_queries(dns_server)) == ["acme.com", "contoso.com", "smallshop.net"]  # one per distinct domain
