"""/healthz (the process answers), /readyz (its dependencies answer) and /metrics (Prometheus).

/readyz checks the database, the broker and spamd in parallel, each with its
own connection and a short timeout, so a probe answers within about
``CHECK_TIMEOUT_SECONDS`` whatever is down. Only the database and the broker
decide readiness (``REQUIRED``): a balancer takes a host out of rotation on a
503, and with it the unsubscribe endpoint, the webhooks and the trigger API,
none of which needs spamd (a version spamd cannot score waits, "not scored",
and is never sent). spamd is reported beside them, ``"required": false``,
the answer ``"degraded"``; ``/readyz/spamd`` answers 503 for spamd alone,
for an alert. /metrics and the error text of
/readyz are for operators only: with ``SENDPLANE_METRICS_TOKEN`` set they need
``Authorization: Bearer <token>``; unset, only a loopback client that came
through no proxy (ops/configuration.md, "Metrics and health").
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from math import ceil
from pathlib import Path
from urllib.parse import urlsplit

import aiospamc
from aiospamc import Timeout
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.utils import load_backend
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST

from controlplane import metrics

CHECK_TIMEOUT_SECONDS = 2.0
_PROXY_HEADERS = ("X-Forwarded-For", "X-Real-Ip", "Forwarded")


# --- who may read operator data ---------------------------------------------------------------------


def operator_allowed(request: HttpRequest) -> bool:
    """The bearer token when one is configured; else a loopback client with no proxy in between."""
    token = settings.SENDPLANE_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    # A same-host reverse proxy connects from loopback too: a forwarding header means "not local".
    return _loopback(request.META.get("REMOTE_ADDR", "")) and not any(h in request.headers for h in _PROXY_HEADERS)


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


# --- views ------------------------------------------------------------------------------------------


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not operator_allowed(request):
        if settings.SENDPLANE_METRICS_TOKEN:
            response = JsonResponse({"error": "a valid bearer token is required"}, status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        return JsonResponse({"error": "metrics are served to loopback only unless SENDPLANE_METRICS_TOKEN is set"}, status=403)
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process serves requests. Touches no dependency, so a database outage restarts nothing."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when the database and the broker answer (spamd reported beside them), else 503 naming what is down."""
    return _answer(request, checks_run(CHECKS))


@never_cache
@require_safe
def readyz_spamd(request: HttpRequest) -> JsonResponse:
    """spamd alone: 200 when it answers, else 503 (for an alert; it never takes the host out of rotation)."""
    return _answer(request, checks_run({"spamd": spamd_check}), required=("spamd",))


def _answer(request: HttpRequest, results: dict[str, dict], required: tuple[str, ...] | None = None) -> JsonResponse:
    required = REQUIRED if required is None else required
    if not operator_allowed(request):  # anyone may probe; only operators see hosts and messages
        for result in results.values():
            result["error"] = result["error"] and result["error"].split(":", 1)[0]
    for name, result in results.items():
        result["required"] = name in required
    ready = all(result["up"] for name, result in results.items() if name in required)
    status = "unavailable" if not ready else "ok" if all(result["up"] for result in results.values()) else "degraded"
    return JsonResponse({"status": status, "checks": results}, status=200 if ready else 503)


# --- the checks: each returns nothing or raises ------------------------------------------------------


def database_check() -> None:
    """A fresh connection (not this thread's pooled one) and ``SELECT 1``."""
    params = connections.settings[DEFAULT_DB_ALIAS]
    backend = load_backend(params["ENGINE"])
    options = dict(params.get("OPTIONS") or {})
    if backend.DatabaseWrapper.vendor == "postgresql":
        options["connect_timeout"] = max(2, ceil(CHECK_TIMEOUT_SECONDS))  # libpq's minimum is 2 s
    wrapper = backend.DatabaseWrapper({**params, "OPTIONS": options}, DEFAULT_DB_ALIAS)
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        wrapper.close()


def broker_check() -> None:
    """Open a connection to CELERY_BROKER_URL; for the filesystem broker, its folders must be writable."""
    url = settings.CELERY_BROKER_URL
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return
    if scheme == "filesystem":
        return _folders_writable(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "socket_connect_timeout": CHECK_TIMEOUT_SECONDS / 2}
    with Connection(url, connect_timeout=CHECK_TIMEOUT_SECONDS / 2, transport_options=options) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=CHECK_TIMEOUT_SECONDS)


def _folders_writable(options: dict) -> None:
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = options.get(key)
        if folder and not (Path(folder).is_dir() and os.access(folder, os.W_OK | os.X_OK)):
            raise OSError(f"broker folder {folder} is missing or not writable")


def spamd_check() -> None:
    """SPAMC PING to SPAMD_HOST:SPAMD_PORT, answered PONG."""
    timeout = Timeout(total=min(settings.SPAMD_TIMEOUT, CHECK_TIMEOUT_SECONDS))
    try:
        response = asyncio.run(aiospamc.ping(host=settings.SPAMD_HOST, port=settings.SPAMD_PORT, timeout=timeout))
    except Exception as exc:  # noqa: BLE001 - aiospamc's errors often carry no text: name the target
        raise ConnectionError(f"spamd at {settings.SPAMD_HOST}:{settings.SPAMD_PORT}: {type(exc).__name__} {exc}".strip()) from exc
    if response.message != "PONG":
        raise ConnectionError(f"spamd answered {response.message!r} to PING")


CHECKS: dict[str, Callable[[], None]] = {"database": database_check, "broker": broker_check, "spamd": spamd_check}
REQUIRED = ("database", "broker")  # what readiness needs; spamd is reported, and has its own probe


def checks_run(checks: dict[str, Callable[[], None]]) -> dict[str, dict]:
    """Every check in its own thread; one that outlives the deadline counts as down."""
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="readyz")
    try:
        futures = {name: pool.submit(_timed, check) for name, check in checks.items()}
        deadline = time.monotonic() + CHECK_TIMEOUT_SECONDS + 0.5
        return {name: _result(future, deadline) for name, future in futures.items()}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _timed(check: Callable[[], None]) -> dict:
    started = time.perf_counter()
    try:
        check()
        error = None
    except Exception as exc:  # noqa: BLE001 - any failure of a dependency is "down", reported by name
        error = f"{type(exc).__name__}: {exc}".strip()[:300]
    return {"up": error is None, "latency_ms": round((time.perf_counter() - started) * 1000, 1), "error": error}


def _result(future: object, deadline: float) -> dict:
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))  # type: ignore[attr-defined]
    except FutureTimeout:
        return {"up": False, "latency_ms": None, "error": f"TimeoutError: no answer within {CHECK_TIMEOUT_SECONDS} s"}
