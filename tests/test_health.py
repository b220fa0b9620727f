"""/healthz, /readyz against the real database, broker and spamd, and who may read /metrics."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from django.db import connections

pytestmark = pytest.mark.django_db
TOKEN = "metrics-token-for-tests-0123456789"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def down_only(response: Any) -> set[str]:
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["status"] == "unavailable"
    return {name for name, check in body["checks"].items() if not check["up"]}


def test_healthz_answers_ok_without_touching_a_dependency(client: Any, settings: Any) -> None:
    settings.SPAMD_PORT = closed_port()
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_is_200_when_database_broker_and_spamd_answer(client: Any) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    checks = response.json()["checks"]
    assert set(checks) == {"database", "broker", "spamd"}
    for check in checks.values():
        assert check["up"] and check["error"] is None and check["latency_ms"] >= 0
    assert response["Cache-Control"].startswith("max-age=0")


def test_readyz_names_the_database_when_it_is_down(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The check opens its own connection from these settings; the tests' open connection keeps its own copy.
    monkeypatch.setitem(connections.settings, "default", {**connections.settings["default"], "PORT": str(closed_port())})
    response = client.get("/readyz")
    assert down_only(response) == {"database"}
    assert response.json()["checks"]["database"]["error"].startswith("OperationalError")


def test_readyz_names_the_broker_when_it_is_down(client: Any, settings: Any) -> None:
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{closed_port()}//"
    response = client.get("/readyz")
    assert down_only(response) == {"broker"}
    assert response.json()["checks"]["broker"]["latency_ms"] < 3000


def test_readyz_names_a_filesystem_broker_whose_folder_is_missing(client: Any, settings: Any, tmp_path: Any) -> None:
    settings.CELERY_BROKER_URL = "filesystem://localhost/"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path / "missing"), "data_folder_out": str(tmp_path)}
    response = client.get("/readyz")
    assert down_only(response) == {"broker"}
    assert "missing" in response.json()["checks"]["broker"]["error"]


def test_readyz_stays_ready_when_spamd_is_down_and_says_so(client: Any, settings: Any) -> None:
    """Issue 18: a 503 takes the host out of rotation, and the unsubscribe endpoint, webhooks and the trigger API with
    it; none needs spamd (an unscored version waits and is never sent). spamd is reported, and has its own probe."""
    settings.SPAMD_PORT = closed_port()
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "degraded"
    assert {name: (c["up"], c["required"]) for name, c in body["checks"].items()} == {
        "database": (True, True), "broker": (True, True), "spamd": (False, False),
    }
    assert f":{settings.SPAMD_PORT}" in body["checks"]["spamd"]["error"]
    alone = client.get("/readyz/spamd")
    assert down_only(alone) == {"spamd"}


def test_readyz_spamd_is_200_when_spamd_answers(client: Any) -> None:
    response = client.get("/readyz/spamd")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_readyz_shows_a_remote_prober_only_the_error_class(client: Any, settings: Any) -> None:
    settings.SPAMD_PORT = closed_port()
    response = client.get("/readyz/spamd", REMOTE_ADDR="10.1.2.3")
    assert down_only(response) == {"spamd"}
    error = response.json()["checks"]["spamd"]["error"]
    assert error and ":" not in error and str(settings.SPAMD_PORT) not in error  # no host, no port


# --- who may read /metrics -----------------------------------------------------------------------


def test_metrics_without_a_token_answer_loopback_only(client: Any, settings: Any) -> None:
    settings.SENDPLANE_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403


def test_metrics_through_a_same_host_proxy_are_refused_without_a_token(client: Any, settings: Any) -> None:
    settings.SENDPLANE_METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403
    assert client.get("/metrics", HTTP_FORWARDED="for=203.0.113.9").status_code == 403


def test_metrics_with_a_token_need_it_from_everywhere_loopback_included(client: Any, settings: Any) -> None:
    settings.SENDPLANE_METRICS_TOKEN = TOKEN
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong-token-wrong-token").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 401
    allowed = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert allowed.status_code == 200 and allowed["Content-Type"].startswith("text/plain")


def test_metrics_refuse_other_methods(client: Any) -> None:
    assert client.post("/metrics").status_code == 405
