"""The providers' sender rules (deliverability/services/sender_rules.py), every outcome against a real DNS server on loopback:
SPF, its lookups, DKIM, DMARC and alignment, forward-confirmed reverse DNS, one-click unsubscribe; the command, the API,
the admin action and the launch gate."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from deliverability.models import BulkSender, DomainCheck, SendingDomain
from deliverability.services.sender_rules import DomainCheckReport, RuleResult, domain_check, sender_rules_refusal
from tests.conftest import assert_error
from tests.dns_server import DnsServer, dns_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db

ORG = "acme-shop.com"
DOMAIN = f"news.{ORG}"  # the From domain is a subdomain: DMARC is found at the organisational domain
RELAY = "192.0.2.25"
REVERSE_ZONE = "2.0.192.in-addr.arpa"
Api = Callable[[User | None], APIClient]


def rsa_key(tmp_path: Path, name: str = "dkim.pem") -> tuple[Path, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / name
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path, key


def txt(text: str) -> str:
    """A zone-file TXT line, in strings of at most 200 characters as DNS requires (255 at most each)."""
    return "TXT " + " ".join(f'"{text[i : i + 200]}"' for i in range(0, len(text), 200))


def dkim_txt(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return txt(f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}")


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, rsa.RSAPrivateKey]:
    return rsa_key(tmp_path)


@pytest.fixture
def domain(key: tuple[Path, rsa.RSAPrivateKey], settings: Any) -> SendingDomain:
    settings.SENDPLANE_RELAY_IPS = [RELAY]
    settings.SENDPLANE_PUBLIC_URL = "https://sendplane.acme-shop.com"
    # Straight to the table: domain_create would refuse the broken set-ups these tests need.
    return SendingDomain.objects.create(domain=DOMAIN, default_sender=f"hello@{DOMAIN}", dkim_selector="s1", dkim_key_path=str(key[0]))


@pytest.fixture
def publish(dns_server: DnsServer, key: tuple[Path, rsa.RSAPrivateKey]) -> Callable[..., None]:  # noqa: F811 - the imported fixture
    """Serve a good set-up, with the owners given replaced (a list) or removed (None)."""

    def serve(reverse: dict[str, list[str]] | None = None, **owners: list[str] | None) -> None:
        records: dict[str, list[str] | None] = {
            "news": ['TXT "v=spf1 ip4:192.0.2.0/24 -all"'],
            "s1._domainkey.news": [dkim_txt(key[1])],
            "_dmarc": ['TXT "v=DMARC1; p=none; rua=mailto:dmarc@acme-shop.com"'],
            "relay": [f"A {RELAY}"],
            **owners,
        }
        dns_server.add_zone(ORG, {owner: lines for owner, lines in records.items() if lines is not None})
        dns_server.add_zone(REVERSE_ZONE, reverse if reverse is not None else {"25": [f"PTR relay.{ORG}."]})

    return serve


def rule(report: DomainCheckReport, name: str) -> RuleResult:
    return next(result for result in report.results if result.rule == name)


def bulk(domain: SendingDomain) -> None:
    BulkSender.objects.create(org_domain=ORG, since=timezone.now().date(), messages=6000)


# --- everything right ----------------------------------------------------------------------------------------------


def test_a_domain_publishing_everything_passes_every_rule_and_the_check_is_stored(
    domain: SendingDomain,
    publish: Callable[..., None],
    dns_server: DnsServer,  # noqa: F811 - the imported fixture
) -> None:
    publish()
    report = domain_check(domain)
    assert [(r.rule, r.status) for r in report.results] == [
        ("spf", "pass"), ("spf_lookups", "pass"), ("dkim", "pass"), ("spf_or_dkim", "pass"), ("dmarc", "pass"),
        ("alignment", "pass"), ("reverse_dns", "pass"), ("unsubscribe", "pass"),
    ]  # fmt: skip
    assert report.passed and not report.bulk_sender and report.org_domain == ORG
    assert all(r.fix == "" for r in report.results)
    assert "_dmarc.acme-shop.com" in rule(report, "dmarc").message  # found at the organisational domain...
    assert dns_server.queries_for(f"_dmarc.{DOMAIN}", "TXT")  # ...after the From domain's own name
    stored = DomainCheck.objects.get(sending_domain=domain)
    assert stored.passed and [entry["rule"] for entry in stored.results] == [r.rule for r in report.results]


def test_only_gmails_rules_for_every_sender_are_required_of_a_domain_that_is_not_a_bulk_sender(
    domain: SendingDomain, publish: Callable[..., None]
) -> None:
    publish()
    report = domain_check(domain)
    assert {r.rule for r in report.results if r.required} == {"spf_or_dkim", "reverse_dns"}


# --- SPF -----------------------------------------------------------------------------------------------------------


def test_spf_that_fails_the_relay_says_which_mechanism_to_add(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(news=['TXT "v=spf1 ip4:198.51.100.0/24 -all"'])
    result = rule(domain_check(domain), "spf")
    assert result.status == "fail" and f"{RELAY}: fail" in result.message
    assert f"ip4:{RELAY}" in result.fix


def test_spf_softfail_for_the_relay_is_a_failure(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(news=['TXT "v=spf1 ip4:198.51.100.7 ~all"'])
    result = rule(domain_check(domain), "spf")
    assert result.status == "fail" and "softfail" in result.message


def test_a_domain_without_spf_fails_and_is_told_the_record_to_publish(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(news=None)
    report = domain_check(domain)
    assert rule(report, "spf").status == "fail" and "publishes no SPF record" in rule(report, "spf").message
    assert f'"v=spf1 ip4:{RELAY} -all"' in rule(report, "spf").fix
    assert rule(report, "spf_or_dkim").status == "pass"  # DKIM still authenticates


def test_two_spf_records_are_an_error(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(news=['TXT "v=spf1 ip4:192.0.2.0/24 -all"', 'TXT "v=spf1 include:other.acme-shop.com -all"'])
    result = rule(domain_check(domain), "spf")
    assert result.status == "fail" and "2 SPF records" in result.message


def test_an_include_chain_is_followed_to_the_relay(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(
        news=[f'TXT "v=spf1 include:_spf.{ORG} -all"'],
        _spf=[f'TXT "v=spf1 ip4:198.51.100.0/24 include:_relay.{ORG} -all"'],
        _relay=[f'TXT "v=spf1 a:relay.{ORG} mx -all"'],
    )
    report = domain_check(domain)
    assert rule(report, "spf").status == "pass" and f"a:relay.{ORG}" in rule(report, "spf").message
    assert rule(report, "spf_lookups").message.endswith("takes 4 of the 10 DNS lookups allowed")


def test_a_redirect_is_followed(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(news=[f'TXT "v=spf1 redirect=_spf.{ORG}"'], _spf=['TXT "v=spf1 ip4:192.0.2.16/28 -all"'])
    assert rule(domain_check(domain), "spf").status == "pass"


def test_a_redirect_to_a_domain_without_spf_is_a_permerror(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(news=[f'TXT "v=spf1 redirect=_nothing.{ORG}"'])
    result = rule(domain_check(domain), "spf")
    assert result.status == "fail" and "permerror" in result.message and "without an SPF record" in result.message


def test_eleven_lookups_are_a_permerror_for_the_relay_and_fail_the_lookup_rule(domain: SendingDomain, publish: Callable[..., None]) -> None:
    includes = " ".join(f"include:i{n}.{ORG}" for n in range(11))
    publish(news=[txt(f"v=spf1 {includes} ip4:{RELAY} -all")], **{f"i{n}": ['TXT "v=spf1 -all"'] for n in range(11)})
    report = domain_check(domain)
    assert rule(report, "spf").status == "fail" and "more than 10 DNS lookups" in rule(report, "spf").message
    assert rule(report, "spf_lookups").status == "fail" and "ip4:/ip6:" in rule(report, "spf_lookups").fix


def test_a_tree_over_ten_lookups_fails_its_rule_even_when_the_relay_matches_first(
    domain: SendingDomain, publish: Callable[..., None]
) -> None:
    includes = " ".join(f"include:i{n}.{ORG}" for n in range(11))
    publish(news=[txt(f"v=spf1 ip4:{RELAY} {includes} -all")], **{f"i{n}": ['TXT "v=spf1 -all"'] for n in range(11)})
    report = domain_check(domain)
    assert rule(report, "spf").status == "pass"
    assert rule(report, "spf_lookups").status == "fail"


def test_plus_all_passes_with_a_warning(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(news=['TXT "v=spf1 +all"'])
    result = rule(domain_check(domain), "spf")
    assert result.status == "warn" and "-all" in result.fix


def test_without_the_relays_addresses_spf_coverage_and_reverse_dns_are_unknown_and_not_required(
    domain: SendingDomain, publish: Callable[..., None], settings: Any
) -> None:
    settings.SENDPLANE_RELAY_IPS = []
    publish()
    bulk(domain)
    report = domain_check(domain)
    for name in ("spf", "reverse_dns"):
        assert rule(report, name).status == "unknown" and not rule(report, name).required
        assert "SENDPLANE_RELAY_IPS" in rule(report, name).fix
    assert report.passed  # DKIM passes and aligns: nothing required is left open


# --- DKIM ----------------------------------------------------------------------------------------------------------


def test_a_selector_publishing_another_key_fails_and_the_fix_is_the_right_record(
    domain: SendingDomain, publish: Callable[..., None], key: tuple[Path, rsa.RSAPrivateKey], tmp_path: Path
) -> None:
    _, other = rsa_key(tmp_path, "other.pem")
    publish(**{"s1._domainkey.news": [dkim_txt(other)]})
    result = rule(domain_check(domain), "dkim")
    assert result.status == "fail" and "not the one published" in result.message
    assert (
        base64.b64encode(
            key[1].public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ).decode()
        in result.fix
    )


def test_an_unpublished_selector_fails(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(**{"s1._domainkey.news": None})
    result = rule(domain_check(domain), "dkim")
    assert result.status == "fail" and "not published" in result.message


def test_no_selector_configured_fails_optionally_then_required_of_a_bulk_sender(
    domain: SendingDomain, publish: Callable[..., None]
) -> None:
    SendingDomain.objects.filter(pk=domain.pk).update(dkim_selector="", dkim_key_path="")
    domain.refresh_from_db()
    publish()
    report = domain_check(domain)
    assert rule(report, "dkim").status == "fail" and not rule(report, "dkim").required and report.passed
    assert "unsigned" in rule(report, "dkim").message
    bulk(domain)
    report = domain_check(domain)
    assert rule(report, "dkim").required and not report.passed and [r.rule for r in report.failing()] == ["dkim"]


def test_neither_spf_nor_dkim_fails_the_rule_of_every_sender(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(news=['TXT "v=spf1 -all"'], **{"s1._domainkey.news": None})
    report = domain_check(domain)
    assert rule(report, "spf_or_dkim").status == "fail" and rule(report, "spf_or_dkim").required
    assert not report.passed


# --- DMARC and alignment -------------------------------------------------------------------------------------------


def test_a_missing_dmarc_record_fails_with_the_record_to_publish(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(_dmarc=None)
    result = rule(domain_check(domain), "dmarc")
    assert result.status == "fail" and f"_dmarc.{ORG}" in result.fix and "p=none" in result.fix


def test_a_dmarc_record_at_the_from_domain_itself_is_used_first(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(**{"_dmarc.news": ['TXT "v=DMARC1; p=reject"']})
    result = rule(domain_check(domain), "dmarc")
    assert result.status == "pass" and f"_dmarc.{DOMAIN}: policy reject" in result.message


def test_the_organisational_domains_subdomain_policy_applies(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(_dmarc=['TXT "v=DMARC1; p=reject; sp=quarantine"'])
    assert "policy quarantine" in rule(domain_check(domain), "dmarc").message


def test_a_dmarc_record_without_a_valid_policy_fails(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(_dmarc=['TXT "v=DMARC1; p=maybe"'])
    assert rule(domain_check(domain), "dmarc").status == "fail"


def test_dmarc_without_any_passing_authentication_is_misaligned(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(news=['TXT "v=spf1 -all"'], **{"s1._domainkey.news": None})
    bulk(domain)
    report = domain_check(domain)
    assert rule(report, "dmarc").status == "pass"
    assert rule(report, "alignment").status == "fail" and rule(report, "alignment").required
    assert {"dkim", "spf_or_dkim", "alignment", "spf"} <= {r.rule for r in report.failing()}


def test_a_from_domain_of_another_organisation_is_misaligned(
    domain: SendingDomain,
    publish: Callable[..., None],
    dns_server: DnsServer,  # noqa: F811 - the imported fixture
) -> None:
    SendingDomain.objects.filter(pk=domain.pk).update(default_sender="hello@other-brand.com")
    domain.refresh_from_db()
    publish()
    dns_server.add_zone("other-brand.com", {"_dmarc": ['TXT "v=DMARC1; p=quarantine"']})
    report = domain_check(domain)
    assert rule(report, "spf").status == rule(report, "dkim").status == "pass"
    assert rule(report, "alignment").status == "fail" and "other-brand.com" in rule(report, "alignment").message


def test_strict_alignment_needs_the_exact_domain(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(_dmarc=['TXT "v=DMARC1; p=none; adkim=s; aspf=s"'])
    assert rule(domain_check(domain), "alignment").status == "pass"  # the From domain is the signing and envelope domain


# --- reverse DNS ---------------------------------------------------------------------------------------------------


def test_a_ptr_that_does_not_resolve_back_fails(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(relay=["A 192.0.2.99"])
    result = rule(domain_check(domain), "reverse_dns")
    assert result.status == "fail" and f"relay.{ORG}, which does not resolve back" in result.message and "PTR" in result.fix


def test_a_relay_without_a_ptr_fails_the_rule_of_every_sender(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(reverse={"26": [f"PTR other.{ORG}."]})
    report = domain_check(domain)
    assert rule(report, "reverse_dns").status == "fail" and f"{RELAY} has no PTR record" in rule(report, "reverse_dns").message
    assert not report.passed and [r.rule for r in report.failing()] == ["reverse_dns"]


def test_an_ipv6_relay_is_checked_by_ip6_and_its_nibble_ptr(
    domain: SendingDomain,
    publish: Callable[..., None],
    dns_server: DnsServer,  # noqa: F811 - the imported fixture
    settings: Any,
) -> None:
    settings.SENDPLANE_RELAY_IPS = ["2001:db8::25"]
    publish(news=['TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"'], relay=["AAAA 2001:db8::25"])
    dns_server.add_zone("8.b.d.0.1.0.0.2.ip6.arpa", {".".join("5200" + "0" * 20): [f"PTR relay.{ORG}."]})
    report = domain_check(domain)
    assert rule(report, "spf").status == "pass" and "ip6:2001:db8::/32" in rule(report, "spf").message
    assert rule(report, "reverse_dns").status == "pass"


# --- unsubscribe ---------------------------------------------------------------------------------------------------


def test_an_http_public_url_fails_one_click_unsubscribe(domain: SendingDomain, publish: Callable[..., None], settings: Any) -> None:
    settings.SENDPLANE_PUBLIC_URL = "http://sendplane.acme-shop.com"
    publish()
    result = rule(domain_check(domain), "unsubscribe")
    assert result.status == "fail" and "SENDPLANE_PUBLIC_URL" in result.fix


# --- DNS that does not answer, or is off ---------------------------------------------------------------------------


def test_a_name_server_that_drops_every_query_leaves_each_dns_rule_unknown_and_the_check_not_passed(
    domain: SendingDomain,
    publish: Callable[..., None],
    dns_server: DnsServer,  # noqa: F811 - the imported fixture
    settings: Any,
) -> None:
    publish()
    dns_server.drop_all = True
    settings.SENDPLANE_DNS_TIMEOUT_SECONDS = 0.3
    report = domain_check(domain)
    statuses = {r.rule: r.status for r in report.results}
    assert statuses == {**dict.fromkeys(statuses, "unknown"), "unsubscribe": "pass"}
    assert "did not answer" in rule(report, "spf").message or "no answer" in rule(report, "spf").message
    assert not report.passed and {r.rule for r in report.failing()} == {"spf_or_dkim", "reverse_dns"}


def test_with_lookups_off_nothing_is_asked_and_each_dns_rule_says_so(domain: SendingDomain, settings: Any) -> None:
    settings.SENDPLANE_DNS_RESOLVER = "off"
    report = domain_check(domain)
    assert rule(report, "dmarc").status == "unknown" and "SENDPLANE_DNS_RESOLVER=off" in rule(report, "dmarc").message
    assert not report.passed


# --- the command ---------------------------------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("domain_check", *args, stdout=out, stderr=err)
    return int(exited.value.code or 0), out.getvalue(), err.getvalue()


def test_the_command_prints_a_line_per_rule_and_exits_0_when_every_required_rule_passes(
    domain: SendingDomain, publish: Callable[..., None]
) -> None:
    publish()
    code, out, err = run(DOMAIN)
    lines = out.splitlines()
    assert code == 0 and err == ""
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["PASS", name] for name in ("spf", "spf_lookups", "dkim", "spf_or_dkim", "dmarc", "alignment", "reverse_dns", "unsubscribe")
    ]
    assert lines[-1].startswith(f"{DOMAIN}: every required rule passes")


def test_the_command_exits_1_when_a_required_rule_fails_and_says_what_to_fix(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(reverse={"26": [f"PTR other.{ORG}."]})
    code, out, _ = run(DOMAIN.upper())
    assert code == 1
    line = next(line for line in out.splitlines() if "reverse_dns" in line)
    assert line.startswith("FAIL") and "required" in line and "-- fix: ask whoever holds" in line


def test_the_command_prints_json_with_every_result(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(_dmarc=None)
    code, out, _ = run(DOMAIN, "--json")
    body = json.loads(out)
    assert code == 0  # DMARC is not required of a domain that is not a bulk sender
    assert body["domain"] == DOMAIN and body["passed"] is True and body["bulk_sender"] is False
    dmarc = next(entry for entry in body["results"] if entry["rule"] == "dmarc")
    assert dmarc == {"rule": "dmarc", "status": "fail", "required": False, "message": dmarc["message"], "fix": dmarc["fix"]}


@pytest.mark.parametrize("given", ["unknown-domain.com", "not a domain", "a@b.com", "", "bad..dots.com"])
def test_the_command_refuses_bad_input_in_one_line_with_exit_2(domain: SendingDomain, given: str) -> None:
    code, out, err = run(given)
    assert code == 2 and out == ""
    assert err.strip() and "\n" not in err.strip() and "Traceback" not in err
    assert not DomainCheck.objects.exists()


# --- the API -------------------------------------------------------------------------------------------------------


def test_the_api_shows_the_last_check_to_every_role_and_runs_it_for_on_call(
    domain: SendingDomain, publish: Callable[..., None], api_as: Api, marketer: User, oncall: User, outsider: User
) -> None:
    publish()
    url = f"/api/v1/domains/{DOMAIN}/check"
    never = api_as(marketer).get(url)
    assert never.status_code == 200 and never.json()["checked_at"] is None and never.json()["results"] == []
    assert_error(api_as(marketer).post(url), 403)
    assert_error(api_as(marketer).get(url, {"refresh": "1"}), 403)
    assert_error(api_as(outsider).get(url), 403)
    ran = api_as(oncall).post(url)
    assert ran.status_code == 200 and ran.json()["passed"] is True and len(ran.json()["results"]) == 8
    shown = api_as(marketer).get(url).json()
    assert shown["checked_at"] == ran.json()["checked_at"] and shown["sender_rules"] == "enforce" and shown["org_domain"] == ORG
    refreshed = api_as(oncall).get(url, {"refresh": "true"}).json()
    assert refreshed["checked_at"] > shown["checked_at"]


def test_the_api_answers_404_for_an_unknown_domain_and_400_for_an_unknown_parameter(
    domain: SendingDomain, api_as: Api, oncall: User
) -> None:
    assert_error(api_as(oncall).get("/api/v1/domains/nowhere.example/check"), 404)
    assert_error(api_as(oncall).get(f"/api/v1/domains/{DOMAIN}/check", {"refrsh": "1"}), 400)


# --- the admin -----------------------------------------------------------------------------------------------------


def test_the_admin_checks_now_and_shows_the_results(
    domain: SendingDomain, publish: Callable[..., None], staff_client: Callable[[User], Client], oncall: User
) -> None:
    publish(_dmarc=None)
    client = staff_client(oncall)
    listing = "/admin/deliverability/sendingdomain/"
    response = client.post(listing, {"action": "check_now", "_selected_action": [domain.pk]}, follow=True)
    assert response.status_code == 200 and "every required sender rule passes" in response.content.decode()
    page = client.get(f"{listing}{domain.pk}/change/").content.decode()
    assert "no DMARC record" in page and "publish a TXT record at _dmarc.acme-shop.com" in page


# --- the launch gate -----------------------------------------------------------------------------------------------


def test_the_gate_refuses_a_domain_failing_a_required_rule_under_enforce_in_one_line(
    domain: SendingDomain, publish: Callable[..., None]
) -> None:
    publish(reverse={"26": [f"PTR other.{ORG}."]})
    reason = sender_rules_refusal(domain)
    assert reason is not None and "\n" not in reason
    assert DOMAIN in reason and "reverse_dns (fail)" in reason and f"domain_check {DOMAIN}" in reason


def test_the_gate_lets_a_warn_domain_and_a_passing_domain_through(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(reverse={"26": [f"PTR other.{ORG}."]})
    SendingDomain.objects.filter(pk=domain.pk).update(sender_rules="warn")
    domain.refresh_from_db()
    assert sender_rules_refusal(domain) is None
    assert not DomainCheck.objects.exists()  # warn asks nothing
    SendingDomain.objects.filter(pk=domain.pk).update(sender_rules="enforce")
    domain.refresh_from_db()
    publish()
    assert sender_rules_refusal(domain) is None


def test_the_gate_asks_nothing_when_lookups_are_off(domain: SendingDomain, settings: Any) -> None:
    settings.SENDPLANE_DNS_RESOLVER = "off"
    assert sender_rules_refusal(domain) is None
    assert not DomainCheck.objects.exists()


def test_the_gate_uses_a_fresh_check_and_reruns_a_stale_one(
    domain: SendingDomain,
    publish: Callable[..., None],
    dns_server: DnsServer,  # noqa: F811 - the imported fixture
    settings: Any,
) -> None:
    publish()
    assert sender_rules_refusal(domain) is None
    asked = len(dns_server.queries)
    publish(reverse={"26": [f"PTR other.{ORG}."]})  # broken meanwhile: a fresh check is trusted until it ages
    assert sender_rules_refusal(domain) is None and len(dns_server.queries) == asked
    settings.SENDPLANE_SENDER_CHECK_MAX_AGE_MINUTES = 30
    DomainCheck.objects.update(checked_at=timezone.now() - timedelta(minutes=31))
    assert "reverse_dns" in (sender_rules_refusal(domain) or "")


def test_the_gate_reruns_a_check_judged_before_the_domain_became_a_bulk_sender(domain: SendingDomain, publish: Callable[..., None]) -> None:
    publish(_dmarc=None)
    assert sender_rules_refusal(domain) is None  # DMARC is not required yet
    bulk(domain)
    reason = sender_rules_refusal(domain)
    assert reason is not None and "dmarc (fail)" in reason


# --- settings ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SENDPLANE_RELAY_IPS": "192.0.2.25, relay.acme-shop.com"}, "SENDPLANE_RELAY_IPS must be IP addresses"),
        ({"SENDPLANE_SENDER_CHECK_MAX_AGE_MINUTES": "0"}, "SENDPLANE_SENDER_CHECK_MAX_AGE_MINUTES must be at least 1"),
        ({"SENDPLANE_BULK_SENDER_DAILY": "lots"}, "SENDPLANE_BULK_SENDER_DAILY must be an integer"),
    ],
)
def test_a_malformed_sender_rules_setting_stops_start_up_naming_it(tmp_path: Path, env: dict[str, str], named: str) -> None:
    from tests.test_settings import load_settings

    result = load_settings(tmp_path, **env)
    assert result.returncode != 0 and named in result.stderr


def test_relay_addresses_in_both_families_start_up(tmp_path: Path) -> None:
    from tests.test_settings import load_settings

    assert load_settings(tmp_path, SENDPLANE_RELAY_IPS="192.0.2.25,2001:db8::25").returncode == 0


def test_the_gate_lets_a_name_reserved_for_examples_through_without_asking_dns(
    dns_server: DnsServer,  # noqa: F811 - the imported fixture
) -> None:
    demo = SendingDomain.objects.create(domain="mail.demo.test", default_sender="news@mail.demo.test")
    assert sender_rules_refusal(demo) is None
    assert dns_server.queries == []
    assert rule(domain_check(demo), "dmarc").message.startswith("not checked: mail.demo.test is reserved")
