"""Browser tests: Playwright drives Debian's Chromium (ops/test installs it) against pytest-django's live server.

Every test here runs on the real PostgreSQL test database with committed
transactions (the live server and the worker threads read what the test
wrote), the real spamd and, where mail moves, the SMTP sink. No browser is
downloaded: Playwright launches /usr/bin/chromium. Each test leaves a
screenshot of its last page in var/test-artifacts/<test name>.png.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.contrib.auth.models import User
from django.db import connections
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
PASSWORD = "correct-horse-battery-staple"  # tests/conftest.py's actors
TIMEOUT_MS = 10_000
T = TypeVar("T")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Started per module, not per session: while it runs, its event loop is this thread's running loop.

    So the ORM calls a test makes between browser steps need DJANGO_ALLOW_ASYNC_UNSAFE (they are still
    synchronous and alone on their connection), and code that runs its own loop (the spamd client's
    asyncio.run) goes through ``off_the_loop``. Stopping it after the module gives later test files a
    thread without a loop.
    """
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as driver:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: ./ops/test installs Debian's chromium"
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
    yield browser
    browser.close()


def off_the_loop(function: Callable[..., T], **kwargs: Any) -> T:
    """Call ``function`` on a thread of its own (no running event loop), with its own database connection."""

    def run() -> T:
        try:
            return function(**kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def page(browser: Browser, live_server: Any, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    yield page
    page.screenshot(path=str(artifacts / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.name)}.png"), full_page=True)
    context.close()


def login(page: Page, user: User) -> None:
    """Through the admin's login form, as a staff member with the user's role."""
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    page.goto("/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(user.username)


SERIOUS = ("serious", "critical")


def axe_serious(page: Page, *, exclude: list[str] | None = None) -> list[str]:
    """axe-core over the page as it is now: each serious or critical violation, one line (rule, impact, first targets).

    ``exclude``: CSS selectors left out (a rendered email in an iframe is the template author's, not the admin's).
    """
    context = {"exclude": [[selector] for selector in exclude]} if exclude else None
    results = Axe().run(page, context=context, options={"resultTypes": ["violations"]})
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
        for v in results.response["violations"]
        if v["impact"] in SERIOUS
    ]
