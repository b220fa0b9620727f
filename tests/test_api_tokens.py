"""API tokens (hashed at rest, per user, revocable) and API throttling.

``Authorization: Token sp_<prefix>_<secret>`` (or ``Bearer``); only the
secret's SHA-256 is stored; revoked tokens and inactive users get a one-line
401; ``create_token`` / ``revoke_token`` and the admin issue and revoke;
every API view is throttled per user (and per address when anonymous).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from access.authentication import ApiTokenAuthentication
from access.models import ApiToken
from access.services import TOUCH_EVERY, token_create, token_revoke, token_touch
from access.throttling import AnonRateThrottle
from audit.models import AuditEntry
from tests.conftest import assert_error
from tests.test_settings import load_settings

pytestmark = pytest.mark.django_db
URL = "/api/v1/templates/"
ADMIN_URL = "/admin/access/apitoken/"
TOKEN_SHAPE = re.compile(r"sp_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


def client_with(header: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


def issue(user: User, name: str = "ci") -> tuple[ApiToken, str]:
    return token_create(user=user, name=name, created_by=None)


def fresh(token: ApiToken) -> ApiToken:
    return ApiToken.objects.get(pk=token.pk)


# --- storage -----------------------------------------------------------------------------------


def test_only_the_hash_of_the_secret_is_stored(marketer: User) -> None:
    token, plaintext = issue(marketer)
    assert TOKEN_SHAPE.fullmatch(plaintext), plaintext
    secret = plaintext.split("_", 2)[2]
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert row["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert row["prefix"] == plaintext[3:11]
    stored = [str(value) for value in row.values()]
    stored += [str(value) for entry in AuditEntry.objects.values() for value in entry.values()]
    assert not [value for value in stored if secret in value or plaintext in value]


def test_every_token_is_new(marketer: User) -> None:
    (first, one), (second, two) = issue(marketer), issue(marketer)
    assert one != two and first.prefix != second.prefix and first.key_hash != second.key_hash


# --- authentication ------------------------------------------------------------------------------


def test_a_valid_token_authenticates_and_is_request_auth(marketer: User) -> None:
    token, plaintext = issue(marketer)
    assert client_with(f"Token {plaintext}").get(URL).status_code == 200
    request = Request(APIRequestFactory().get(URL, HTTP_AUTHORIZATION=f"Token {plaintext}"))
    assert ApiTokenAuthentication().authenticate(request) == (marketer, token)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "token"])
def test_bearer_and_any_case_of_the_scheme_work(marketer: User, scheme: str) -> None:
    _, plaintext = issue(marketer)
    assert client_with(f"{scheme} {plaintext}").get(URL).status_code == 200


def test_a_revoked_token_is_401_with_one_line(marketer: User, admin_role: User) -> None:
    token, plaintext = issue(marketer)
    client = client_with(f"Token {plaintext}")
    assert client.get(URL).status_code == 200
    assert token_revoke(token=token, revoked_by=admin_role) is True
    assert assert_error(client.get(URL), 401)["error"] == "Token revoked."


def test_a_token_of_an_inactive_user_is_401(marketer: User) -> None:
    _, plaintext = issue(marketer)
    marketer.is_active = False
    marketer.save(update_fields=["is_active"])
    assert assert_error(client_with(f"Token {plaintext}").get(URL), 401)["error"] == "User inactive or deleted."


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("Token", "Invalid Authorization header: expected 'Token <token>'."),
        ("Token sp_a b", "Invalid Authorization header: expected 'Token <token>'."),
        ("Token sp_0123456é_x", "Invalid Authorization header: the token is not ASCII."),
        ("Token sp_short", "Invalid token."),
        ("Token 0123456789abcdef0123456789abcdef01234567", "Invalid token."),  # an old DRF authtoken key
        ("Basic bWFyYTpwYXNzd29yZA==", "Authentication credentials were not provided."),
    ],
)
def test_a_malformed_header_is_401_with_one_line(marketer: User, header: str, error: str) -> None:
    response = client_with(header).get(URL)
    assert assert_error(response, 401)["error"] == error
    assert response["WWW-Authenticate"] == "Token"


def test_a_known_secret_under_another_prefix_is_refused(marketer: User) -> None:
    token, plaintext = issue(marketer)
    forged = f"sp_{'0' * 8 if token.prefix != '0' * 8 else '1' * 8}_{plaintext[12:]}"
    assert assert_error(client_with(f"Token {forged}").get(URL), 401)["error"] == "Invalid token."


def test_last_used_at_is_written_at_most_once_a_minute(marketer: User) -> None:
    token, plaintext = issue(marketer)
    client = client_with(f"Token {plaintext}")
    assert fresh(token).last_used_at is None
    client.get(URL)
    first = fresh(token).last_used_at
    assert first is not None
    client.get(URL)
    assert fresh(token).last_used_at == first  # within the minute: no write
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - TOUCH_EVERY)
    client.get(URL)
    assert fresh(token).last_used_at > first


def test_touch_is_a_conditional_update(marketer: User) -> None:
    token, _ = issue(marketer)
    now = timezone.now()
    stale_copy = fresh(token)  # another request that loaded the row before the first touch
    assert token_touch(token=token, now=now) is True
    assert token_touch(token=stale_copy, now=now + timedelta(seconds=30)) is False  # the database says: touched
    assert token_touch(token=token, now=now + TOUCH_EVERY) is True
    assert fresh(token).last_used_at == now + TOUCH_EVERY


# --- commands ----------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        call_command(*args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_create_token_prints_a_working_token_once(marketer: User, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "create_token", marketer.username, "--name", "AI generator")
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 1 and TOKEN_SHAPE.fullmatch(out.strip())
    token = ApiToken.objects.get(user=marketer)
    assert (token.name, token.prefix, token.created_by) == ("AI generator", out[3:11], None)
    assert client_with(f"Token {out.strip()}").get(URL).status_code == 200
    entry = AuditEntry.objects.get(action="token.create")
    assert (entry.actor_label, entry.target_id) == ("command:create_token", str(token.pk))


@pytest.mark.parametrize(
    ("args", "error"), [(["nobody"], "no user named 'nobody'"), (["--name", "x" * 101], "a token name must be 1 to 100 characters")]
)
def test_create_token_refuses_with_one_line(marketer: User, capsys: pytest.CaptureFixture[str], args: list[str], error: str) -> None:
    args = args if args[0] == "nobody" else [marketer.username, *args]
    code, out, err = run(capsys, "create_token", *args)
    assert (code, out, err.strip()) == (1, "", error)
    assert not ApiToken.objects.exists()


def test_revoke_token_revokes_and_says_so(marketer: User, capsys: pytest.CaptureFixture[str]) -> None:
    token, plaintext = issue(marketer, "old laptop")
    code, out, err = run(capsys, "revoke_token", token.prefix)
    assert (code, out.strip(), err) == (0, f"revoked token {token.prefix} (old laptop) of mara-marketer", "")
    assert_error(client_with(f"Token {plaintext}").get(URL), 401)
    code, out, _ = run(capsys, "revoke_token", token.prefix)
    assert code == 0 and out.startswith(f"token {token.prefix} (old laptop) of mara-marketer was already revoked at ")
    entry = AuditEntry.objects.get(action="token.revoke")  # the second run recorded nothing
    assert (entry.actor_label, entry.target_id) == ("command:revoke_token", str(token.pk))


def test_revoke_token_refuses_an_unknown_prefix(marketer: User, capsys: pytest.CaptureFixture[str]) -> None:
    token, _ = issue(marketer)
    code, out, err = run(capsys, "revoke_token", "nope")
    assert (code, out, err.strip()) == (1, "", "no token with prefix 'nope'")
    assert fresh(token).revoked_at is None


# --- admin -------------------------------------------------------------------------------------


def revoke_in_admin(client: Any, *tokens: ApiToken) -> Any:
    return client.post(ADMIN_URL, {"action": "revoke", "_selected_action": [t.pk for t in tokens]}, follow=True)


def test_admin_role_revokes_with_the_action(admin_role: User, marketer: User, staff_client: Any) -> None:
    token, plaintext = issue(marketer)
    page = revoke_in_admin(staff_client(admin_role), token)
    assert "1 token(s) revoked." in page.content.decode()
    assert fresh(token).revoked_at is not None
    assert_error(client_with(f"Token {plaintext}").get(URL), 401)
    assert AuditEntry.objects.get(action="token.revoke").actor == admin_role


@pytest.mark.parametrize("role", ["marketer", "oncall"])
def test_other_roles_cannot_revoke_even_their_own_token(request: Any, staff_client: Any, role: str) -> None:
    user = request.getfixturevalue(role)
    token, _ = issue(user)
    revoke_in_admin(staff_client(user), token)
    assert fresh(token).revoked_at is None
    assert not AuditEntry.objects.filter(action="token.revoke").exists()


def test_admin_sees_every_token_other_roles_only_their_own(
    admin_role: User, oncall: User, marketer: User, staff_client: Any
) -> None:
    mine, _ = issue(oncall, "pager bot")
    theirs, _ = issue(marketer, "generator")
    admin_page = staff_client(admin_role).get(ADMIN_URL).content.decode()
    assert mine.prefix in admin_page and theirs.prefix in admin_page
    oncall_client = staff_client(oncall)
    own_page = oncall_client.get(ADMIN_URL).content.decode()
    assert mine.prefix in own_page and theirs.prefix not in own_page
    assert oncall_client.get(f"{ADMIN_URL}{theirs.pk}/change/").status_code == 302  # "does not exist" redirect
    assert oncall_client.get(f"{ADMIN_URL}add/").status_code == 403


def test_adding_a_token_in_the_admin_shows_it_once(admin_role: User, marketer: User, staff_client: Any) -> None:
    client = staff_client(admin_role)
    page = client.post(f"{ADMIN_URL}add/", {"user": marketer.pk, "name": "CI"}, follow=True).content.decode()
    shown = TOKEN_SHAPE.findall(page)
    assert len(set(shown)) == 1, page
    token = ApiToken.objects.get(user=marketer)
    assert (token.name, token.prefix, token.created_by) == ("CI", shown[0][3:11], admin_role)
    assert client_with(f"Token {shown[0]}").get(URL).status_code == 200
    assert shown[0] not in client.get(ADMIN_URL).content.decode()
    assert shown[0] not in client.get(f"{ADMIN_URL}{token.pk}/change/").content.decode()


def test_outsider_is_refused_the_token_pages(outsider: User, staff_client: Any) -> None:
    assert staff_client(outsider).get(ADMIN_URL).status_code == 403


# --- throttling --------------------------------------------------------------------------------


@pytest.fixture
def low_rates(settings: Any) -> Iterator[None]:
    cache.clear()  # counters of earlier tests in this process
    settings.SENDPLANE_API_THROTTLE = {"user": "3/minute", "anon": "2/minute"}
    yield
    cache.clear()


def test_a_user_over_the_rate_gets_429_with_retry_after_and_others_do_not(
    low_rates: None, api_as: Any, marketer: User, oncall: User
) -> None:
    client = api_as(marketer)
    assert [client.get(URL).status_code for _ in range(3)] == [200, 200, 200]
    response = client.get(URL)
    body = assert_error(response, 429)
    assert body["error"].startswith("Request was throttled.")
    assert 0 < int(response["Retry-After"]) <= 60
    assert api_as(oncall).get(URL).status_code == 200


def test_a_second_token_of_the_same_user_shares_the_budget(low_rates: None, api_as: Any, marketer: User) -> None:
    first = api_as(marketer)
    assert [first.get(URL).status_code for _ in range(3)] == [200, 200, 200]
    assert_error(api_as(marketer).get(URL), 429)


def test_with_a_redis_cache_the_budget_lives_in_redis_for_every_process(
    low_rates: None, settings: Any, api_as: Any, marketer: User
) -> None:
    """SENDPLANE_CACHE_URL's shape against the machine's Redis: the counts are there, not in this process."""
    import redis

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/15"}}
    server = redis.Redis.from_url("redis://127.0.0.1:6379/15")
    server.flushdb()
    client = api_as(marketer)
    assert [client.get(URL).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert any(b"throttle_user" in key for key in server.keys("*"))
    server.flushdb()  # another process resetting the shared store resets this one's budget too
    assert client.get(URL).status_code == 200
    server.flushdb()


def test_anonymous_requests_are_throttled_per_address(low_rates: None) -> None:
    factory = APIRequestFactory()

    def allowed(address: str, forwarded_for: str = "") -> bool:
        request = factory.get(URL, REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR=forwarded_for)
        return AnonRateThrottle().allow_request(Request(request), None)

    assert [allowed("192.0.2.1") for _ in range(2)] == [True, True]
    assert not allowed("192.0.2.1", forwarded_for="198.51.100.7")  # a header the client writes changes nothing
    assert allowed("192.0.2.2")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SENDPLANE_API_THROTTLE_USER": "1200/fortnight"}, "SENDPLANE_API_THROTTLE_USER must look like 1200/minute"),
        ({"SENDPLANE_API_THROTTLE_ANON": "lots"}, "SENDPLANE_API_THROTTLE_ANON must look like 1200/minute"),
        ({"SENDPLANE_API_THROTTLE_ANON": "0/minute"}, "SENDPLANE_API_THROTTLE_ANON must look like 1200/minute"),
        ({"SENDPLANE_CACHE_URL": "memcached://x"}, "SENDPLANE_CACHE_URL must be a redis:// or rediss:// URL"),
    ],
)
def test_a_malformed_rate_or_cache_stops_start_up_naming_it(tmp_path: Path, env: dict[str, str], named: str) -> None:
    result = load_settings(tmp_path, **env)
    assert result.returncode != 0 and named in result.stderr


def test_well_formed_rates_are_accepted(tmp_path: Path) -> None:
    result = load_settings(tmp_path, SENDPLANE_API_THROTTLE_USER="10/s", SENDPLANE_API_THROTTLE_ANON="5/hour")
    assert result.returncode == 0, result.stderr

