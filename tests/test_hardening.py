"""Issue 15's hardening, each attack replayed: admin password guessing is locked out (django-axes); HTTPS
settings come from the environment and are on by default when the public URL is https; the schema and its
Swagger UI are for roles only and load nothing from another host; unauthenticated API calls and the public
unsubscribe page are throttled per address; a token made in the admin never travels in a cookie.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.staticfiles import finders
from django.core.cache import cache
from django.http import HttpRequest
from django.test import Client
from rest_framework.test import APIClient

from access.models import ApiToken
from dispatch.models import Message
from dispatch.services.triggers import trigger_accept
from dispatch.services.unsubscribe import unsubscribe_token
from tests.conftest import recipients

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery-staple"  # the shared actors' (tests/conftest.py)
TOKEN_SHAPE = re.compile(r"sp_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


@pytest.fixture(autouse=True)
def _empty_counters() -> Iterator[None]:
    """Throttle counters live in the cache, shared by every test of the process."""
    cache.clear()
    yield
    cache.clear()


# --- (1) admin login lockout ------------------------------------------------------------------------


def admin_login(client: Client, username: str, password: str, address: str = "192.0.2.10") -> Any:
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.fixture
def staff_admin(admin_role: User) -> User:
    admin_role.is_staff = True
    admin_role.save(update_fields=["is_staff"])
    return admin_role


def test_admin_login_is_locked_after_the_failure_limit_even_with_the_right_password(staff_admin: User, settings: Any) -> None:
    assert settings.AXES_FAILURE_LIMIT == 10
    client = Client()
    for _ in range(11):
        assert admin_login(client, staff_admin.username, "wrong-guess").status_code in (200, 429)
    response = admin_login(client, staff_admin.username, PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still sent to the login page


def test_the_lockout_is_per_username_and_address(staff_admin: User) -> None:
    for _ in range(10):
        admin_login(Client(), staff_admin.username, "wrong-guess", address="192.0.2.10")
    assert admin_login(Client(), staff_admin.username, PASSWORD, address="192.0.2.10").status_code == 429
    elsewhere = Client()
    assert admin_login(elsewhere, staff_admin.username, PASSWORD, address="198.51.100.20").status_code == 302
    assert elsewhere.get("/admin/").status_code == 200


def test_behind_the_proxy_the_lockout_is_per_client_address(staff_admin: User, settings: Any) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}

    def login(password: str, address: str) -> int:
        client = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=address)
        return int(client.post("/admin/login/?next=/admin/", {"username": staff_admin.username, "password": password}).status_code)

    for _ in range(10):
        login("wrong-guess", "192.0.2.60")
    assert login(PASSWORD, "192.0.2.60") == 429
    assert login(PASSWORD, "192.0.2.61") == 302  # the admin elsewhere still logs in


def test_a_right_password_under_the_limit_logs_in_and_starts_the_count_again(staff_admin: User) -> None:
    for _ in range(9):
        admin_login(Client(), staff_admin.username, "wrong-guess")
    assert admin_login(Client(), staff_admin.username, PASSWORD).status_code == 302
    for _ in range(9):
        admin_login(Client(), staff_admin.username, "wrong-guess")
    assert admin_login(Client(), staff_admin.username, PASSWORD).status_code == 302


# --- (2) HTTPS settings from the environment --------------------------------------------------------


def check_deploy(tmp_path: Path, *, starts: bool = True, **env: str) -> str:
    ours = ("SENDPLANE_", "DATABASE_URL", "SECRET_KEY", "CELERY_", "EMAIL_", "SPAMD_", "SECURE_", "SESSION_", "CSRF_", "AXES_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    clean.update(
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        SENDPLANE_DATA_DIR=str(tmp_path),
        DATABASE_URL="postgres://sendplane@db.invalid:5432/sendplane",
        SECRET_KEY="Zq7-production-like-key-for-check-deploy-9f8e7d6c5b4a3210",
        ALLOWED_HOSTS="sendplane.example.com",
        **env,
    )
    command = [sys.executable, "manage.py", "check", "--deploy"]
    result = subprocess.run(command, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)
    assert ("Traceback" not in result.stderr) == starts, result.stderr
    return result.stdout + result.stderr


HTTPS_WARNINGS = ["security.W004", "security.W008", "security.W012", "security.W016"]


def test_production_behind_https_passes_the_deploy_checks(tmp_path: Path) -> None:
    report = check_deploy(tmp_path, SENDPLANE_PUBLIC_URL="https://sendplane.example.com")
    assert [w for w in HTTPS_WARNINGS if w in report] == [], report


def test_each_https_setting_comes_from_the_environment(tmp_path: Path) -> None:
    report = check_deploy(
        tmp_path,
        SENDPLANE_PUBLIC_URL="http://localhost:8000",
        SENDPLANE_INSECURE_PUBLIC_URL="true",
        SECURE_HSTS_SECONDS="63072000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="true",
        SECURE_HSTS_PRELOAD="true",
        SECURE_SSL_REDIRECT="true",
        SESSION_COOKIE_SECURE="true",
        CSRF_COOKIE_SECURE="true",
    )
    assert [w for w in [*HTTPS_WARNINGS, "security.W005", "security.W021"] if w in report] == [], report


def test_plain_http_defaults_to_none_of_them_and_false_turns_one_off(tmp_path: Path) -> None:
    # SENDPLANE_PUBLIC_URL's default, http://localhost:8000, which production allows only when told: tests, faults
    report = check_deploy(tmp_path, SENDPLANE_INSECURE_PUBLIC_URL="true")
    assert [w for w in HTTPS_WARNINGS if w in report] == HTTPS_WARNINGS, report
    report = check_deploy(tmp_path, SENDPLANE_PUBLIC_URL="https://sendplane.example.com", SECURE_SSL_REDIRECT="false")
    assert [w for w in HTTPS_WARNINGS if w in report] == ["security.W008"], report


def test_a_malformed_https_setting_stops_start_up_naming_it(tmp_path: Path) -> None:
    assert "SECURE_HSTS_SECONDS must be an integer" in check_deploy(
        tmp_path, starts=False, SENDPLANE_PUBLIC_URL="https://sendplane.example.com", SECURE_HSTS_SECONDS="a year"
    )


def test_probes_are_not_redirected_to_https(client: Client, settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200  # the balancer calls the web process over plain HTTP
    assert client.get("/admin/login/").status_code == 301


# --- (3) the schema and its UI --------------------------------------------------------------------


SCHEMA_URLS = ["/api/v1/schema/", "/api/v1/schema/ui/"]


@pytest.mark.parametrize("url", SCHEMA_URLS)
def test_the_schema_is_refused_without_a_role(url: str, api_as: Callable[[User | None], APIClient], outsider: User) -> None:
    assert api_as(None).get(url).status_code == 401
    assert api_as(outsider).get(url).status_code == 403


@pytest.mark.parametrize("url", SCHEMA_URLS)
def test_the_schema_is_served_to_a_role(url: str, api_as: Callable[[User | None], APIClient], marketer: User) -> None:
    assert api_as(marketer).get(url).status_code == 200


def test_a_no_role_admin_session_is_refused_the_swagger_ui(outsider: User, staff_client: Callable[[User], Client]) -> None:
    assert staff_client(outsider).get("/api/v1/schema/ui/").status_code == 403


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]


def test_the_swagger_ui_loads_nothing_from_another_host(marketer: User, staff_client: Callable[[User], Client]) -> None:
    page = staff_client(marketer).get("/api/v1/schema/ui/").content.decode()
    links = _Links()
    links.feed(page)
    scripts = [url for url in links.urls if url.endswith(".js")]
    assert scripts and all(url.startswith("/static/drf_spectacular_sidecar/") for url in scripts), links.urls
    assert [url for url in links.urls if urlsplit(url).netloc] == []
    assert "cdn" not in page.lower() and "@latest" not in page
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")  # served by collectstatic's proxy


# --- (4) throttling of unauthenticated requests -------------------------------------------------------


@pytest.fixture
def low_rates(settings: Any) -> None:
    settings.SENDPLANE_API_THROTTLE = {"user": "100/minute", "anon": "3/minute", "unsubscribe": "3/minute"}


def test_requests_without_a_token_are_throttled_per_address(
    low_rates: None, api_as: Callable[[User | None], APIClient], marketer: User
) -> None:
    client = APIClient()
    assert [client.get("/api/v1/templates/").status_code for _ in range(3)] == [401, 401, 401]
    throttled = client.get("/api/v1/templates/")
    assert throttled.status_code == 429 and 0 < int(throttled["Retry-After"]) <= 60
    assert client.get("/api/v1/templates/", REMOTE_ADDR="198.51.100.30").status_code == 401  # another address
    assert api_as(marketer).get("/api/v1/templates/").status_code == 200  # a token holder has a budget of its own


def test_guessing_tokens_is_throttled_per_address(low_rates: None) -> None:
    def guess(n: int) -> int:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token sp_{n:08x}_{'A' * 43}")
        return int(client.get("/api/v1/templates/").status_code)

    assert [guess(n) for n in range(3)] == [401, 401, 401]
    assert guess(3) == 429


@pytest.fixture
def message(campaign: Any) -> Message:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(1))
    return Message.objects.get()


def test_the_unsubscribe_page_is_throttled_per_address(low_rates: None, message: Message) -> None:
    url = f"/u/{unsubscribe_token(message)}"
    assert [Client().post(url, REMOTE_ADDR="192.0.2.40").status_code for _ in range(3)] == [200, 200, 200]
    throttled = Client().post(url, REMOTE_ADDR="192.0.2.40")
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    assert Client().get(url, REMOTE_ADDR="192.0.2.40").status_code == 429
    assert Client().post(url, REMOTE_ADDR="192.0.2.41").status_code == 200  # another recipient's address


def test_behind_the_proxy_each_recipient_is_counted_alone(low_rates: None, message: Message, settings: Any) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}  # SENDPLANE_NUM_PROXIES=1
    url = f"/u/{unsubscribe_token(message)}"

    def post(client_address: str, written_by_client: str = "203.0.113.99") -> int:
        forwarded = f"{written_by_client}, {client_address}"  # the proxy appends the address it saw
        return int(Client().post(url, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=forwarded).status_code)

    assert [post("192.0.2.50") for _ in range(3)] == [200, 200, 200]
    assert post("192.0.2.50", written_by_client="192.0.2.77") == 429  # what the client wrote itself changes nothing
    assert post("192.0.2.51") == 200  # the proxy's own address is not the one counted


def test_the_default_unsubscribe_rate_lets_a_recipient_through(message: Message, settings: Any) -> None:
    assert settings.SENDPLANE_API_THROTTLE["unsubscribe"] == "60/minute"
    url = f"/u/{unsubscribe_token(message)}"
    assert Client().get(url).status_code == 200
    assert Client().post(url, {"List-Unsubscribe": "One-Click"}).status_code == 200


# --- (5) a new token never travels in a cookie ---------------------------------------------------


def test_a_token_made_in_the_admin_is_in_the_page_and_in_no_cookie(
    admin_role: User, marketer: User, staff_client: Callable[[User], Client]
) -> None:
    client = staff_client(admin_role)
    response = client.post("/admin/access/apitoken/add/", {"user": marketer.pk, "name": "CI"})
    assert response.status_code == 200
    shown = TOKEN_SHAPE.findall(response.content.decode())
    assert len(set(shown)) == 1 and ApiToken.objects.get(user=marketer).prefix == shown[0][3:11]
    assert "no-store" in response["Cache-Control"]
    secret = shown[0].split("_", 2)[2]
    for cookie in response.cookies.values():
        assert secret not in cookie.value
        decoded = CookieStorage(HttpRequest())._decode(cookie.value) if cookie.key == "messages" else None
        assert not [m for m in decoded or [] if secret in str(m)], cookie.key
    assert "messages" not in response.cookies
    assert secret not in str(dict(client.session))
