"""Sending domains configured through the service, the API and the admin: validated at save (the DKIM key against the
record published for its selector, on a real DNS server on loopback), audited, refused in one line naming the field."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditEntry
from deliverability.errors import DeliverabilityError
from deliverability.models import SendingDomain
from deliverability.services import domain_create, domain_update
from tests.conftest import assert_error
from tests.dns_server import DnsServer, dns_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db

ZONE = "acme-news.com"
DOMAIN = f"mail.{ZONE}"
RECORD = f"s1._domainkey.{DOMAIN}"
Api = Callable[[User | None], APIClient]


def rsa_key(tmp_path: Path, name: str = "dkim.pem", bits: int = 2048) -> tuple[Path, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    path = tmp_path / name
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path, key


def p_of(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def dkim_txt(p: str, *, tags: str = "v=DKIM1; k=rsa; ") -> str:
    """A zone-file TXT line, the record in strings of at most 200 characters as DNS requires (255 at most each)."""
    text = f"{tags}p={p}"
    return "TXT " + " ".join(f'"{text[i:i + 200]}"' for i in range(0, len(text), 200))


def publish(server: DnsServer, *lines: str, owner: str = "s1._domainkey.mail") -> None:
    server.add_zone(ZONE, {owner: list(lines), "mail": ["A 192.0.2.25"]})


def create(path: Path | str, **options: Any) -> SendingDomain:
    return domain_create(
        domain=DOMAIN, default_sender=f"news@{DOMAIN}", actor="tests", dkim_selector="s1", dkim_key_path=str(path), **options
    )


def refused(call: Callable[[], Any], field: str, *words: str) -> str:
    with pytest.raises(DeliverabilityError) as caught:
        call()
    line = str(caught.value)
    assert caught.value.field == field, line
    assert "\n" not in line and all(word in line for word in words), line
    return line


def nothing_written() -> None:
    assert not SendingDomain.objects.filter(domain=DOMAIN).exists()
    assert not AuditEntry.objects.filter(action__startswith="domain.").exists()


# --- the service: the DKIM check at save -------------------------------------------------------------------------


def test_a_key_matching_its_published_record_is_accepted_and_audited(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path, key = rsa_key(tmp_path)
    publish(dns_server, dkim_txt(p_of(key)))  # 2048 bits: the record spans strings, the answer needs TCP

    row = create(path)

    assert row.dkim_dns == f"matches {RECORD}"  # type: ignore[attr-defined]
    assert (row.dkim_selector, row.dkim_key_path) == ("s1", str(path))
    entry = AuditEntry.objects.get(action="domain.create", target_id=str(row.pk))
    assert entry.data["dkim_dns"] == f"matches {RECORD}"
    assert entry.data["dkim_key_path"] == str(path)
    assert dns_server.queries_for(RECORD, "TXT")


def test_a_record_published_as_a_bare_pkcs1_key_matches_too(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path, key = rsa_key(tmp_path, bits=1024)
    pkcs1 = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    publish(dns_server, dkim_txt(base64.b64encode(pkcs1).decode(), tags="v=DKIM1;k=rsa;t=s;"))
    assert create(path).dkim_dns == f"matches {RECORD}"  # type: ignore[attr-defined]


def test_a_missing_key_file_is_refused_and_nothing_is_written(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    refused(lambda: create(tmp_path / "nowhere.pem"), "dkim_key_path", "unreadable", "No such file or directory")
    nothing_written()
    assert not dns_server.queries  # the key is read before DNS is asked


def test_a_directory_instead_of_a_key_is_refused(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    refused(lambda: create(tmp_path), "dkim_key_path", "unreadable")
    nothing_written()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_key_file_the_process_cannot_read_is_refused(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path, _ = rsa_key(tmp_path)
    path.chmod(0)
    refused(lambda: create(path), "dkim_key_path", "unreadable", "Permission denied")
    nothing_written()


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path = tmp_path / "notes.txt"
    path.write_text("-----BEGIN NOTHING-----\nhello\n")
    refused(lambda: create(path), "dkim_key_path", "is not an RSA private key")
    nothing_written()


def test_an_ed25519_key_is_refused_since_the_signer_makes_rsa_sha256_only(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "ed.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    refused(lambda: create(path), "dkim_key_path", "is not an RSA private key", "Ed25519")
    nothing_written()


def test_a_relative_key_path_is_refused(dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    refused(lambda: create("keys/dkim.pem"), "dkim_key_path", "absolute path")
    nothing_written()


@pytest.mark.parametrize(
    ("options", "field"),
    [({"dkim_selector": "s1"}, "dkim_key_path"), ({"dkim_key_path": "/etc/dkim.pem"}, "dkim_selector")],
)
def test_selector_and_key_are_set_together_or_not_at_all(options: dict[str, str], field: str) -> None:
    refused(lambda: domain_create(domain=DOMAIN, default_sender=f"news@{DOMAIN}", **options), field, "both")
    nothing_written()


def test_a_selector_that_is_no_dns_label_is_refused(tmp_path: Path) -> None:
    path, _ = rsa_key(tmp_path, bits=1024)
    refused(
        lambda: domain_create(domain=DOMAIN, default_sender=f"news@{DOMAIN}", dkim_selector="s1;x", dkim_key_path=str(path)),
        "dkim_selector", "is not a selector",
    )


def test_the_published_key_of_another_private_key_is_refused(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path, _ = rsa_key(tmp_path)
    _, other = rsa_key(tmp_path, "other.pem")
    publish(dns_server, dkim_txt(p_of(other)))
    refused(lambda: create(path), "dkim_key_path", "public half", RECORD)
    nothing_written()


def test_a_revoked_selector_with_an_empty_p_is_refused(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path, _ = rsa_key(tmp_path)
    publish(dns_server, dkim_txt(""))
    refused(lambda: create(path), "dkim_selector", "revoked", RECORD)
    nothing_written()


def test_a_record_for_another_algorithm_is_refused(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path, key = rsa_key(tmp_path)
    publish(dns_server, dkim_txt(p_of(key), tags="v=DKIM1; k=ed25519; "))
    refused(lambda: create(path), "dkim_selector", "not an RSA DKIM record")


def test_a_p_that_is_no_key_is_refused(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path, _ = rsa_key(tmp_path)
    publish(dns_server, dkim_txt("bm90IGEga2V5"))
    refused(lambda: create(path), "dkim_selector", "is not a public key")


def test_a_selector_dns_says_does_not_exist_is_refused(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    """NXDOMAIN: every receiver would fail every signature (and DMARC with them), so it is not saved."""
    path, _ = rsa_key(tmp_path)
    publish(dns_server, "TXT \"v=spf1 -all\"", owner="other._domainkey.mail")
    refused(lambda: create(path), "dkim_selector", f"selector s1 is not published: {RECORD} does not exist in DNS")
    nothing_written()


def test_a_selector_name_without_a_txt_record_is_refused(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path, _ = rsa_key(tmp_path)
    publish(dns_server, "A 192.0.2.1")
    refused(lambda: create(path), "dkim_selector", f"{RECORD} has no TXT record")


def test_when_dns_does_not_answer_the_key_is_accepted_and_the_entry_says_unchecked(
    tmp_path: Path, dns_server: DnsServer, settings: Any  # noqa: F811 - the imported fixture
) -> None:
    path, _ = rsa_key(tmp_path)
    dns_server.drop_all = True
    settings.SENDPLANE_DNS_TIMEOUT_SECONDS = 0.3

    row = create(path)

    note = row.dkim_dns  # type: ignore[attr-defined]
    assert note.startswith("unchecked: no answer") and RECORD in note, note
    assert AuditEntry.objects.get(action="domain.create").data["dkim_dns"] == note
    assert dns_server.queries_for(RECORD, "TXT")


def test_with_lookups_off_the_key_is_accepted_unchecked(tmp_path: Path, settings: Any) -> None:
    path, _ = rsa_key(tmp_path)
    settings.SENDPLANE_DNS_RESOLVER = "off"
    row = create(path)
    assert row.dkim_dns == "unchecked: DNS lookups are off (SENDPLANE_DNS_RESOLVER=off)"  # type: ignore[attr-defined]
    assert AuditEntry.objects.get(action="domain.create").data["dkim_dns"] == row.dkim_dns  # type: ignore[attr-defined]


def test_a_name_reserved_for_examples_is_never_looked_up(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path, _ = rsa_key(tmp_path, bits=1024)
    row = domain_create(domain="mail.example.com", default_sender="news@mail.example.com", dkim_selector="s1", dkim_key_path=str(path))
    assert row.dkim_dns.startswith("unchecked: mail.example.com is reserved")  # type: ignore[attr-defined]
    assert not dns_server.queries


def test_an_update_of_the_key_is_checked_and_a_refusal_changes_nothing(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path, key = rsa_key(tmp_path)
    new_path, new_key = rsa_key(tmp_path, "new.pem")
    publish(dns_server, dkim_txt(p_of(key)))
    row = create(path)

    refused(lambda: domain_update(domain=row, actor="tests", dkim_key_path=str(new_path)), "dkim_key_path", "public half")
    row.refresh_from_db()
    assert row.dkim_key_path == str(path)
    assert not AuditEntry.objects.filter(action="domain.update").exists()

    publish(dns_server, dkim_txt(p_of(new_key)), owner="s2._domainkey.mail")
    updated = domain_update(domain=row, actor="tests", reason="key rotation", dkim_selector="s2", dkim_key_path=str(new_path))
    assert updated.dkim_dns == f"matches s2._domainkey.{DOMAIN}"  # type: ignore[attr-defined]
    entry = AuditEntry.objects.get(action="domain.update")
    assert entry.reason == "key rotation"
    assert entry.data["before"] == {"dkim_selector": "s1", "dkim_key_path": str(path)}
    assert entry.data["after"] == {"dkim_selector": "s2", "dkim_key_path": str(new_path)}
    assert entry.data["dkim_dns"] == f"matches s2._domainkey.{DOMAIN}"


def test_an_update_that_leaves_dkim_alone_asks_no_dns(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path, key = rsa_key(tmp_path, bits=1024)
    publish(dns_server, dkim_txt(p_of(key)))
    row = create(path)
    asked = len(dns_server.queries)
    updated = domain_update(domain=row, actor="tests", rate_per_second=3.5, dkim_selector="s1")
    assert updated.rate_per_second == 3.5 and updated.dkim_dns == ""  # type: ignore[attr-defined]
    assert len(dns_server.queries) == asked
    assert "dkim_dns" not in AuditEntry.objects.get(action="domain.update").data


def test_removing_dkim_takes_both_fields_and_asks_nothing(tmp_path: Path, dns_server: DnsServer) -> None:  # noqa: F811 - the imported fixture
    path, key = rsa_key(tmp_path, bits=1024)
    publish(dns_server, dkim_txt(p_of(key)))
    row = create(path)
    refused(lambda: domain_update(domain=row, actor="tests", dkim_selector=""), "dkim_selector", "both")
    updated = domain_update(domain=row, actor="tests", dkim_selector="", dkim_key_path="")
    assert (updated.dkim_selector, updated.dkim_key_path) == ("", "")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"rate_per_second": float("inf")}, "rate_per_second"),
        ({"burst": 2**31}, "burst"),
        ({"smtp_connections": 0}, "smtp_connections"),
        ({"warmup_schedule": [1, -2]}, "warmup_schedule"),
        ({"provider_rates": {"gmial": 5}}, "provider_rates"),
        ({"dkim_selector": "s1", "dkim_key_path": "/etc/dkim\x00.pem"}, "dkim_key_path"),
    ],
)
def test_settings_out_of_range_are_refused(options: dict[str, Any], field: str) -> None:
    refused(lambda: domain_create(domain=DOMAIN, default_sender=f"news@{DOMAIN}", **options), field)
    nothing_written()


def test_a_domain_that_is_no_domain_name_is_refused() -> None:
    refused(lambda: domain_create(domain="not a domain", default_sender="news@not a domain"), "domain", "is not a domain name")


def test_a_test_domain_as_the_demo_and_the_benches_use_is_a_domain_name() -> None:
    """RFC 6761 reserves .test for testing: ./ops/demo sends from demo.sendplane.test, the benches from *.sendplane.test."""
    row = domain_create(domain="demo.sendplane.test", default_sender="news@demo.sendplane.test")
    assert row.domain == "demo.sendplane.test"
    refused(lambda: domain_create(domain="a..test", default_sender="news@a..test"), "domain", "is not a domain name")


# --- the API -----------------------------------------------------------------------------------------------------


def _body(path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "domain": DOMAIN, "default_sender": f"news@{DOMAIN}", "rate_per_second": 20, "burst": 40,
        "dkim_selector": "s1", "dkim_key_path": str(path), "provider_rates": {"gmail": 5}, **extra,
    }


def test_api_create_needs_a_token_and_the_admin_role(
    api_as: Api, marketer: User, oncall: User, outsider: User, tmp_path: Path
) -> None:
    path, _ = rsa_key(tmp_path, bits=1024)
    assert_error(api_as(None).post("/api/v1/domains/", _body(path), format="json"), 401)
    for user in (marketer, oncall, outsider):
        assert_error(api_as(user).post("/api/v1/domains/", _body(path), format="json"), 403)
    nothing_written()


def test_api_create_as_admin_checks_dkim_and_answers_the_settings(
    api_as: Api, admin_role: User, tmp_path: Path, dns_server: DnsServer  # noqa: F811 - the imported fixture
) -> None:
    path, key = rsa_key(tmp_path)
    publish(dns_server, dkim_txt(p_of(key)))

    response = api_as(admin_role).post("/api/v1/domains/", _body(path), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["domain"] == DOMAIN and body["rate_per_second"] == 20 and body["provider_rates"] == {"gmail": 5}
    assert body["dkim_dns"] == f"matches {RECORD}"
    entry = AuditEntry.objects.get(action="domain.create")
    assert entry.actor == admin_role
    listed = api_as(admin_role).get("/api/v1/domains/").json()
    assert [d["domain"] for d in listed] == [DOMAIN]


def test_api_create_with_a_key_that_does_not_match_is_one_line_naming_the_field(
    api_as: Api, admin_role: User, tmp_path: Path, dns_server: DnsServer  # noqa: F811 - the imported fixture
) -> None:
    path, _ = rsa_key(tmp_path)
    _, other = rsa_key(tmp_path, "other.pem")
    publish(dns_server, dkim_txt(p_of(other)))
    body = assert_error(api_as(admin_role).post("/api/v1/domains/", _body(path), format="json"), 400, "dkim_key_path")
    assert body["error"].startswith("dkim_key_path: the key's public half")
    nothing_written()


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"colour": "red"}, "colour"), ({"burst": "many"}, "burst"), ({"dkim_key_path": str(Path("/nonexistent/k.pem"))}, "dkim_key_path")],
)
def test_api_create_bad_input_is_400(api_as: Api, admin_role: User, tmp_path: Path, extra: dict[str, Any], field: str) -> None:
    path, _ = rsa_key(tmp_path, bits=1024)
    assert_error(api_as(admin_role).post("/api/v1/domains/", _body(path, **extra), format="json"), 400, field)
    nothing_written()


def test_api_create_when_dns_is_off_says_unchecked(api_as: Api, admin_role: User, tmp_path: Path) -> None:
    path, _ = rsa_key(tmp_path, bits=1024)
    response = api_as(admin_role).post("/api/v1/domains/", _body(path), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["dkim_dns"].startswith("unchecked: DNS lookups are off")


def test_api_patch_changes_pace_with_a_reason_for_admins_only(
    api_as: Api, admin_role: User, marketer: User, oncall: User, tmp_path: Path
) -> None:
    row = domain_create(domain=DOMAIN, default_sender=f"news@{DOMAIN}", rate_per_second=10, burst=20)
    url = f"/api/v1/domains/{DOMAIN}/"
    change = {"rate_per_second": 50, "burst": 100, "reason": "warm-up done, OPS-77"}

    assert_error(api_as(None).patch(url, change, format="json"), 401)
    for user in (marketer, oncall):
        assert_error(api_as(user).patch(url, change, format="json"), 403)
    assert_error(api_as(admin_role).patch(url, {"rate_per_second": 50}, format="json"), 400, "reason")
    assert_error(api_as(admin_role).patch(url, {"reason": "nothing"}, format="json"), 400)
    assert_error(api_as(admin_role).patch(url, {"rate_per_second": -1, "reason": "x"}, format="json"), 400, "rate_per_second")
    assert_error(api_as(admin_role).patch("/api/v1/domains/nowhere.example.org/", change, format="json"), 404)
    row.refresh_from_db()
    assert (row.rate_per_second, row.burst) == (10, 20)

    response = api_as(admin_role).patch(url, change, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["rate_per_second"], response.json()["burst"]) == (50, 100)
    entry = AuditEntry.objects.get(action="domain.update")
    assert (entry.reason, entry.actor) == ("warm-up done, OPS-77", admin_role)
    assert entry.data == {"before": {"rate_per_second": 10.0, "burst": 20}, "after": {"rate_per_second": 50.0, "burst": 100}}


def test_api_patch_of_a_key_that_cannot_be_read_is_refused(api_as: Api, admin_role: User, tmp_path: Path) -> None:
    domain_create(domain=DOMAIN, default_sender=f"news@{DOMAIN}")
    change = {"dkim_selector": "s1", "dkim_key_path": str(tmp_path / "missing.pem"), "reason": "sign"}
    body = assert_error(api_as(admin_role).patch(f"/api/v1/domains/{DOMAIN}/", change, format="json"), 400, "dkim_key_path")
    assert "unreadable" in body["error"]
    assert SendingDomain.objects.get(domain=DOMAIN).dkim_key_path == ""


def test_the_schema_describes_create_and_update(api_as: Api, oncall: User) -> None:
    schema = api_as(oncall).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert {"get", "post"} <= set(schema["paths"]["/api/v1/domains/"])
    assert {"get", "patch"} <= set(schema["paths"]["/api/v1/domains/{domain}/"])
    assert "dkim_key_path" in schema["components"]["schemas"]["DomainCreateRequest"]["properties"]
    assert "reason" in schema["components"]["schemas"]["PatchedDomainUpdateRequest"]["properties"]


# --- the admin ---------------------------------------------------------------------------------------------------

ADD_URL = "/admin/deliverability/sendingdomain/add/"


def _form(path: Path | str, **extra: Any) -> dict[str, Any]:
    return {
        "domain": DOMAIN, "default_sender": f"news@{DOMAIN}", "rate_per_second": "20", "burst": "40",
        "dkim_selector": "s1", "dkim_key_path": str(path), "warmup_schedule": "[1, 5]", "warmup_daily_caps": "",
        "warmup_started_on": "", "provider_rates": '{"gmail": 5}', "smtp_connections": "", "smtp_deliveries_per_connection": "",
        "sender_rules": "enforce",
        **extra,
    }


def _change_url(row: SendingDomain) -> str:
    return f"/admin/deliverability/sendingdomain/{row.pk}/change/"


def _field_errors(response: Any, field: str) -> list[str]:
    assert response.status_code == 200, response.status_code
    return list(response.context["adminform"].form.errors.get(field, []))


def test_admin_adds_a_domain_through_the_service(
    staff_client: Callable[[User], Client], admin_role: User, tmp_path: Path, dns_server: DnsServer  # noqa: F811 - the imported fixture
) -> None:
    path, key = rsa_key(tmp_path)
    publish(dns_server, dkim_txt(p_of(key)))

    response = staff_client(admin_role).post(ADD_URL, _form(path))

    assert response.status_code == 302, response.content[:2000]
    row = SendingDomain.objects.get(domain=DOMAIN)
    assert (row.rate_per_second, row.warmup_schedule, row.provider_rates, row.smtp_connections) == (20.0, [1, 5], {"gmail": 5}, None)
    entry = AuditEntry.objects.get(action="domain.create")
    assert entry.actor == admin_role and entry.data["dkim_dns"] == f"matches {RECORD}"


def test_admin_add_shows_the_dkim_refusal_on_the_field(
    staff_client: Callable[[User], Client], admin_role: User, tmp_path: Path, dns_server: DnsServer  # noqa: F811 - the imported fixture
) -> None:
    path, _ = rsa_key(tmp_path)
    publish(dns_server, dkim_txt(""))

    errors = _field_errors(staff_client(admin_role).post(ADD_URL, _form(path)), "dkim_selector")

    assert len(errors) == 1 and "revoked" in errors[0] and "\n" not in errors[0], errors
    nothing_written()


def test_admin_add_when_dns_is_off_warns_that_dkim_is_unchecked(
    staff_client: Callable[[User], Client], admin_role: User, tmp_path: Path
) -> None:
    path, _ = rsa_key(tmp_path, bits=1024)
    response = staff_client(admin_role).post(ADD_URL, _form(path), follow=True)
    shown = [str(m) for m in response.context["messages"]]
    assert any("without checking its DNS record (unchecked: DNS lookups are off" in m for m in shown), shown
    assert SendingDomain.objects.filter(domain=DOMAIN).exists()


def test_admin_add_of_a_missing_key_is_a_field_error(staff_client: Callable[[User], Client], admin_role: User, tmp_path: Path) -> None:
    errors = _field_errors(staff_client(admin_role).post(ADD_URL, _form(tmp_path / "none.pem")), "dkim_key_path")
    assert errors == [f"DKIM key {tmp_path / 'none.pem'} unreadable: No such file or directory"]
    nothing_written()


def test_admin_changes_settings_with_a_reason(staff_client: Callable[[User], Client], admin_role: User) -> None:
    row = domain_create(domain=DOMAIN, default_sender=f"news@{DOMAIN}", rate_per_second=10, burst=20)
    client = staff_client(admin_role)
    form = _form("", dkim_selector="", rate_per_second="7.5", burst="20", warmup_schedule="[]", provider_rates="{}")

    errors = _field_errors(client.post(_change_url(row), form), "reason")
    assert errors and SendingDomain.objects.get(pk=row.pk).rate_per_second == 10

    response = client.post(_change_url(row), {**form, "reason": "Yahoo deferrals"})

    assert response.status_code == 302, response.content[:2000]
    entry = AuditEntry.objects.get(action="domain.update")
    assert entry.reason == "Yahoo deferrals"
    assert entry.data["after"] == {"rate_per_second": 7.5}
    assert SendingDomain.objects.get(pk=row.pk).rate_per_second == 7.5


def test_admin_change_shows_a_service_refusal_on_its_field(staff_client: Callable[[User], Client], admin_role: User) -> None:
    row = domain_create(domain=DOMAIN, default_sender=f"news@{DOMAIN}")
    form = _form("", dkim_selector="", default_sender="news@elsewhere.org", warmup_schedule="[]", provider_rates="{}", reason="x")
    errors = _field_errors(staff_client(admin_role).post(_change_url(row), form), "default_sender")
    assert errors == [f"must be an address at {DOMAIN}"]
    assert not AuditEntry.objects.filter(action="domain.update").exists()


@pytest.mark.parametrize("actor", ["marketer", "oncall"])
def test_other_roles_see_a_domain_read_only(staff_client: Callable[[User], Client], actor: str, request: Any) -> None:
    user = request.getfixturevalue(actor)
    row = domain_create(domain=DOMAIN, default_sender=f"news@{DOMAIN}", rate_per_second=10)
    client = staff_client(user)

    page = client.get(_change_url(row))
    assert page.status_code == 200
    assert b'name="rate_per_second"' not in page.content and b"10.0" in page.content
    assert client.get(ADD_URL).status_code == 403
    client.post(_change_url(row), _form("", dkim_selector="", rate_per_second="99", warmup_schedule="[]", provider_rates="{}", reason="x"))
    assert SendingDomain.objects.get(pk=row.pk).rate_per_second == 10
