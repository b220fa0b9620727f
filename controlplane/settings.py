"""Sendplane settings: one module, environment variables, fail loudly.

With no variable set this is the embedded default (a SQLite file and kombu's
filesystem broker under ``SENDPLANE_DATA_DIR``), so a newcomer needs no server.
Production sets ``DATABASE_URL``, ``CELERY_BROKER_URL`` and ``SECRET_KEY``.
Every variable is documented in ops/configuration.md.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from controlplane.dns import dns_resolver_setting
from controlplane.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
    reject_unknown,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("SENDPLANE_DATA_DIR", str(BASE_DIR / "var")) or "")

# --- Database -----------------------------------------------------------------
_default_db = f"sqlite:///{DATA_DIR / 'sendplane.sqlite3'}"
_database_url = env_str("DATABASE_URL", _default_db) or _default_db
_db_scheme = urlsplit(_database_url).scheme
if _db_scheme not in {"sqlite", "postgres", "postgresql", "pgsql"}:
    raise ImproperlyConfigured(f"DATABASE_URL must be a sqlite:// or postgres:// URL, got scheme {_db_scheme!r}")
# Health checks: a connection kept across a database restart is tested before reuse, so the
# first request or task after the restart does not fail on a dead socket (ops/faults found it).
DATABASES = {
    "default": dj_database_url.parse(
        _database_url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0), conn_health_checks=True
    )
}
EMBEDDED = _db_scheme == "sqlite"
if EMBEDDED:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # SQLite serializes writers; wait for the lock instead of failing at once.
    # IMMEDIATE takes the write lock at BEGIN, which is what select_for_update()
    # means on PostgreSQL: the token bucket and claims stay atomic on both.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


# --- Secrets --------------------------------------------------------------------
def _embedded_secret_key() -> str:
    """A per-checkout key for the embedded default only, kept so sessions survive restarts."""
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = env_secret("SECRET_KEY")
if SECRET_KEY is None:
    if not EMBEDDED:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) is required with a production DATABASE_URL")
    SECRET_KEY = _embedded_secret_key()
elif len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters")

DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- Applications -----------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the Swagger UI's files, served from STATIC_URL instead of a CDN
    "axes",  # admin login lockout (AXES_* below)
    "access",
    "audit",
    "templates_registry",
    "deliverability",
    "dispatch",
]

MIDDLEWARE = [
    "controlplane.correlation.CorrelationMiddleware",  # first: every later line of the request carries its id
    "controlplane.metrics.RequestMetricsMiddleware",  # counts every answer, by route name (never the raw path)
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into the lockout answer
]
# Axes first: a locked-out username and address is refused before the password is even checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "controlplane" / "templates"],  # admin/base_site.html: Sendplane's name and site-wide CSS
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# controlplane is no app: its static/ (the charts, and the vendored uPlot) is found through this; never a CDN.
STATICFILES_DIRS = [BASE_DIR / "controlplane" / "static"]

# --- API ------------------------------------------------------------------------
# Payloads are bounded before parsing: a trigger of 10,000 recipients with
# contexts fits in 16 MiB; anything larger is refused with 413-style errors.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("SENDPLANE_MAX_REQUEST_BYTES", 16 * 1024 * 1024, minimum=1024)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",  # the admin's session, for the schema UI
    ],
    # Rates are SENDPLANE_API_THROTTLE below, read per request (access/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": ["access.throttling.UserRateThrottle", "access.throttling.AnonRateThrottle"],
    # Anonymous clients (the API's, the unsubscribe page's, admin logins') are counted by REMOTE_ADDR, or behind N
    # proxies by the Nth X-Forwarded-For address from the right (what our proxy wrote); None would trust any header.
    "NUM_PROXIES": env_int("SENDPLANE_NUM_PROXIES", 0, minimum=0, maximum=5),
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["controlplane.api.BoundedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "controlplane.api_errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
}
_RATE_PERIODS = {"s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day"}


def _env_rate(name: str, default: str) -> str:
    """A DRF throttle rate, "<requests>/<second|minute|hour|day>"; DRF itself would read only the first letter."""
    value = env_str(name, default) or default
    count, _, period = value.partition("/")
    if not (count.isdigit() and int(count) > 0 and period in _RATE_PERIODS):
        raise ImproperlyConfigured(f"{name} must look like 1200/minute (per second, minute, hour or day), got {value!r}")
    return value


SENDPLANE_API_THROTTLE = {
    "user": _env_rate("SENDPLANE_API_THROTTLE_USER", "1200/minute"),  # per authenticated user, all tokens together
    "anon": _env_rate("SENDPLANE_API_THROTTLE_ANON", "60/minute"),  # per client address, unauthenticated
    # Per client address, the recipient-facing /u/<token> page and its one-click POST (dispatch/views.py).
    "unsubscribe": _env_rate("SENDPLANE_UNSUBSCRIBE_THROTTLE", "60/minute"),
}
# Throttle counters live in the default cache: LocMemCache is per process (each gunicorn
# worker counts alone); SENDPLANE_CACHE_URL=redis://... shares them.
_cache_url = env_str("SENDPLANE_CACHE_URL")
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if _cache_url is not None:
    if (_cache_scheme := urlsplit(_cache_url).scheme) not in {"redis", "rediss"}:
        raise ImproperlyConfigured(f"SENDPLANE_CACHE_URL must be a redis:// or rediss:// URL, got scheme {_cache_scheme!r}")
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sendplane API",
    "DESCRIPTION": "Templates, campaigns, triggers and deliverability controls.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its UI ask the permission table like every API view (access/schema.py); this is their fallback.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # The Swagger UI's JavaScript and CSS come from drf-spectacular-sidecar under STATIC_URL: no CDN, nothing unpinned.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Two vocabularies share the field name "reason": name both rather than let a hash suffix tell them apart.
    "ENUM_NAME_OVERRIDES": {
        "BounceReasonEnum": "deliverability.bounces.vocabulary.Reason",
        "SuppressionReasonEnum": "deliverability.models.SuppressionReason",
        "SenderRulesEnum": "deliverability.models.SenderRules",
    },
}

# --- Celery -----------------------------------------------------------------------
_broker_default = "filesystem://localhost/"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", _broker_default) or _broker_default
_broker_scheme = urlsplit(CELERY_BROKER_URL).scheme
if _broker_scheme not in {"filesystem", "amqp", "amqps", "pyamqp", "redis", "rediss", "memory"}:
    raise ImproperlyConfigured(f"CELERY_BROKER_URL: unsupported broker scheme {_broker_scheme!r}")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if _broker_scheme == "filesystem":
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # kombu's default is ./control in the working directory
        "store_processed": False,
        "polling_interval": 0.1,  # kombu's default of 1 s would cap a worker at one batch a second
    }
# Postgres is the source of truth; the broker only carries hints (DESIGN.md), so
# tasks are acknowledged late, re-queued when a worker dies, and prefetched one
# at a time so a killed worker strands at most one task.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# --- Email transport (Django's EMAIL_* settings) ---------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "") or ""
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are both true; set one")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30, minimum=1)

# --- Spam scoring -----------------------------------------------------------------
SPAMD_HOST = env_str("SPAMD_HOST", "127.0.0.1")
SPAMD_PORT = env_int("SPAMD_PORT", 783, minimum=1, maximum=65535)
SPAMD_TIMEOUT = env_float("SPAMD_TIMEOUT", 10.0, minimum=0.1)

# --- Template rendering limits (the sandbox) ------------------------------------------
SENDPLANE_RENDER = {
    # Source size of one version's MJML, refused at save above this.
    "MAX_SOURCE_BYTES": env_int("SENDPLANE_RENDER_MAX_SOURCE_BYTES", 512 * 1024, minimum=1024),
    # Rendered output (and any intermediate string) per recipient.
    "MAX_OUTPUT_BYTES": env_int("SENDPLANE_RENDER_MAX_OUTPUT_BYTES", 1024 * 1024, minimum=1024),
    # Loop iterations and calls summed over one render, nested loops included.
    "MAX_ITERATIONS": env_int("SENDPLANE_RENDER_MAX_ITERATIONS", 10_000, minimum=10),
    "MAX_CALLS": env_int("SENDPLANE_RENDER_MAX_CALLS", 10_000, minimum=10),
    # Wall-clock budget of one render; checked at every loop step, call and output chunk.
    "TIMEOUT_MS": env_int("SENDPLANE_RENDER_TIMEOUT_MS", 250, minimum=1),
    # Nesting of Jinja blocks and of brackets, refused at compile time.
    "MAX_NESTING": env_int("SENDPLANE_RENDER_MAX_NESTING", 12, minimum=2, maximum=18),
}

# --- Dispatch ----------------------------------------------------------------------
# Where recipients' unsubscribe links point (the one-click endpoint lives at /u/<token>).
SENDPLANE_PUBLIC_URL = (env_str("SENDPLANE_PUBLIC_URL", "http://localhost:8000") or "").rstrip("/")
# Production (any database but the embedded SQLite) refuses to start unless that URL is https: Gmail, Yahoo and
# Microsoft junk bulk mail whose one-click link is not, and an http://localhost link unsubscribes nobody.
# SENDPLANE_INSECURE_PUBLIC_URL=1 lifts it for an installation nobody outside reaches (the tests, benches, faults).
SENDPLANE_INSECURE_PUBLIC_URL = env_bool("SENDPLANE_INSECURE_PUBLIC_URL", False)
if not EMBEDDED and not SENDPLANE_INSECURE_PUBLIC_URL:
    _public = urlsplit(SENDPLANE_PUBLIC_URL)
    if _public.scheme != "https" or not _public.hostname:
        raise ImproperlyConfigured(
            f"SENDPLANE_PUBLIC_URL must be an https:// URL in production (unsubscribe links point there), "
            f"not {SENDPLANE_PUBLIC_URL!r}"
        )

# --- HTTPS (Django's SECURE_* and *_COOKIE_SECURE) ---------------------------------------
# An installation whose public URL is https:// is served over TLS: it defaults to HSTS, a redirect
# from http:// and cookies that never travel in clear. Anything else (the embedded default, the
# tests, the fault suite, a demo on http://localhost) defaults to none of them, which plain HTTP needs.
# The proxy must say X-Forwarded-Proto: https (gunicorn --forwarded-allow-ips makes that the request's
# scheme), or the redirect loops; the probes and /metrics are exempt, as the balancer and Prometheus
# call the web process directly over HTTP.
_SERVED_OVER_HTTPS = urlsplit(SENDPLANE_PUBLIC_URL).scheme == "https"
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if _SERVED_OVER_HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)  # binds every other host of the domain
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)  # browsers' lists: months to undo
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _SERVED_OVER_HTTPS)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^readyz/spamd$", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", _SERVED_OVER_HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", _SERVED_OVER_HTTPS)

# --- Admin login lockout (django-axes) ----------------------------------------------------
# After AXES_FAILURE_LIMIT wrong passwords for one username from one address, that pair is
# refused (429, even with the right password) until AXES_COOLOFF_MINUTES pass without another try.
# The address is the API throttles' (SENDPLANE_NUM_PROXIES), never a header the client alone wrote.
# `manage.py axes_reset_username <name>` lifts a lockout early (ops/configuration.md).
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # a right password before the limit starts the count again
AXES_HTTP_RESPONSE_CODE = 429
AXES_CLIENT_IP_CALLABLE = "access.throttling.client_address"
AXES_ENABLE_ADMIN = False  # its pages would sit outside the permission table; the commands above unlock


class DispatchSettings(TypedDict):
    # Typed so that settings.SENDPLANE_DISPATCH["BATCH_SIZE"] is an int to mypy, not the dict's joined float.
    BATCH_SIZE: int
    LEASE_SECONDS: int
    HOLD_SECONDS: float
    MAX_ATTEMPTS: int
    RETRY_BASE_SECONDS: float
    RECHECK_EVERY: int
    SWEEP_SECONDS: float


SENDPLANE_DISPATCH: DispatchSettings = {
    # Messages one claim takes at most (rendered, signed, then handed over in chunks of RECHECK_EVERY).
    "BATCH_SIZE": env_int("SENDPLANE_DISPATCH_BATCH_SIZE", 100, minimum=1, maximum=1000),
    # A claimed row still "sending" this long after its claim is marked unknown (never re-sent).
    "LEASE_SECONDS": env_int("SENDPLANE_DISPATCH_LEASE_SECONDS", 300, minimum=1),
    # A batch's reserved tokens are its own this long (reserve to hand-over: the render, ~0.1 s for 100 messages);
    # a dead worker's come back after it. Short, so that a crash never stalls a small-burst domain for long.
    "HOLD_SECONDS": env_float("SENDPLANE_DISPATCH_HOLD_SECONDS", 30.0, minimum=1.0),
    # 4xx replies are retried this many times in all, the wait doubling from the base.
    "MAX_ATTEMPTS": env_int("SENDPLANE_DISPATCH_MAX_ATTEMPTS", 6, minimum=1, maximum=50),
    "RETRY_BASE_SECONDS": env_float("SENDPLANE_DISPATCH_RETRY_BASE_SECONDS", 60.0, minimum=0.0),
    # Pause and suppression are re-read before every this many messages handed to the transport; a chunk is handed
    # over on up to SENDPLANE_SMTP_CONNECTIONS sessions at once, so this is also how much of the network one batch overlaps.
    "RECHECK_EVERY": env_int("SENDPLANE_DISPATCH_RECHECK_EVERY", 100, minimum=1),
    # How often beat runs the sweeper (seconds): wakes rows whose not_before passed, expires leases.
    "SWEEP_SECONDS": env_float("SENDPLANE_DISPATCH_SWEEP_SECONDS", 1.0, minimum=0.1),
}


class SmtpSettings(TypedDict):
    CONNECTIONS: int
    DELIVERIES_PER_CONNECTION: int
    IDLE_SECONDS: float


# SMTP sessions to the relay (EMAIL_HOST), per worker process (dispatch/services/smtp_pool.py).
SENDPLANE_SMTP: SmtpSettings = {
    # Sessions in flight at once: a chunk's messages are handed over on up to this many.
    "CONNECTIONS": env_int("SENDPLANE_SMTP_CONNECTIONS", 100, minimum=1, maximum=1000),
    # A session is closed after this many messages (relays limit it; a fresh one spreads load).
    "DELIVERIES_PER_CONNECTION": env_int("SENDPLANE_SMTP_DELIVERIES_PER_CONNECTION", 100, minimum=1),
    # An idle session older than this is closed instead of reused (relays drop idle sessions).
    "IDLE_SECONDS": env_float("SENDPLANE_SMTP_IDLE_SECONDS", 30.0, minimum=0.0),
}


class EspSettings(TypedDict):
    CONCURRENCY: int


# ESP API calls (any EMAIL_BACKEND that is not SMTP: django-anymail), per worker process (dispatch/services/esp.py).
SENDPLANE_ESP: EspSettings = {
    # Calls in flight at once, each on its own thread and backend (measured: ops/architecture.md, "ESP transport").
    "CONCURRENCY": env_int("SENDPLANE_ESP_CONCURRENCY", 100, minimum=1, maximum=1000),
}
# DNS lookups Sendplane makes itself (controlplane/dns.py): recipient domains' MX, for provider groups (issue 16).
# Empty: the system resolver; "off": no lookup at all; else a name server's IP address with an optional port.
SENDPLANE_DNS_RESOLVER = dns_resolver_setting(env_str("SENDPLANE_DNS_RESOLVER", "") or "")
# One lookup's total time, retries included; a trigger waits at most about this long for all its domains at once.
SENDPLANE_DNS_TIMEOUT_SECONDS = env_float("SENDPLANE_DNS_TIMEOUT_SECONDS", 2.0, minimum=0.1)
# The providers' sender rules (issue 18, deliverability/services/sender_rules.py). The relay's outbound addresses, where
# known: whether SPF covers them and their reverse DNS are checked only then (an ESP's addresses are the ESP's).
SENDPLANE_RELAY_IPS = env_list("SENDPLANE_RELAY_IPS", [])
for _relay_ip in SENDPLANE_RELAY_IPS:
    try:
        ipaddress.ip_address(_relay_ip)
    except ValueError:
        raise ImproperlyConfigured(f"SENDPLANE_RELAY_IPS must be IP addresses separated by commas, got {_relay_ip!r}") from None
# The launch gate of marketing campaigns re-runs a domain's check when its last one is older than this.
SENDPLANE_SENDER_CHECK_MAX_AGE_MINUTES = env_int("SENDPLANE_SENDER_CHECK_MAX_AGE_MINUTES", 60, minimum=1)
# Messages to Gmail in a UTC day from one organisational domain that make it a bulk sender, for good.
SENDPLANE_BULK_SENDER_DAILY = env_int("SENDPLANE_BULK_SENDER_DAILY", 5000, minimum=1)
# What the configured transport costs (issue 17): a price per 1,000 messages handed over (an ESP's list price, or a
# relay's cost spread over its volume), in SENDPLANE_COST_CURRENCY. Campaigns show it projected at launch and spent,
# per variant; each message is costed at the price of the day it was handed over. 0: costs are not shown.
SENDPLANE_COST_PER_1000 = env_float("SENDPLANE_COST_PER_1000", 0.0, minimum=0.0)
SENDPLANE_COST_CURRENCY = env_str("SENDPLANE_COST_CURRENCY", "USD") or "USD"
if not re.fullmatch(r"[A-Z]{3}", SENDPLANE_COST_CURRENCY):
    raise ImproperlyConfigured(f"SENDPLANE_COST_CURRENCY must be an ISO 4217 code such as USD or EUR, not {SENDPLANE_COST_CURRENCY!r}")


class RetentionSettings(TypedDict):
    CONTEXT_DAYS: int
    ADDRESS_DAYS: int
    FEEDBACK_DAYS: int
    TRIGGER_DAYS: int
    CONSENT_DAYS: int
    AUDIT_DAYS: int
    BATCH: int


# Retention (issue 18; dispatch/services/retention.py, ops/privacy.md): how long each class of recipient data is
# kept in clear, in days; 0 keeps it for ever. Suppressions are never purged (they hold a hash).
SENDPLANE_RETENTION: RetentionSettings = {
    # A final message's context (the values rendered into it), counted from when it was queued.
    "CONTEXT_DAYS": env_int("SENDPLANE_RETENTION_CONTEXT_DAYS", 30, minimum=0),
    # A final message's address, last reply and its attempts' replies (its context goes with them at the latest).
    "ADDRESS_DAYS": env_int("SENDPLANE_RETENTION_ADDRESS_DAYS", 365, minimum=0),
    # A feedback event's address, reply and details, counted from when it was received; its counts and hash stay.
    "FEEDBACK_DAYS": env_int("SENDPLANE_RETENTION_FEEDBACK_DAYS", 365, minimum=0),
    # A trigger answer's lists of suppressed and rejected addresses, and its Idempotency-Key (kept as its hash).
    "TRIGGER_DAYS": env_int("SENDPLANE_RETENTION_TRIGGER_DAYS", 30, minimum=0),
    # A withdrawn consent's address and evidence, counted from the withdrawal; the withdrawal stays, by hash.
    "CONSENT_DAYS": env_int("SENDPLANE_RETENTION_CONSENT_DAYS", 730, minimum=0),
    # Audit entries are deleted past this; the database refuses under its floor (audit/migrations/0003).
    "AUDIT_DAYS": env_int("SENDPLANE_RETENTION_AUDIT_DAYS", 730, minimum=0),
    # Rows changed per transaction: each batch holds its row locks only this long.
    "BATCH": env_int("SENDPLANE_RETENTION_BATCH", 1000, minimum=1, maximum=100_000),
}
AUDIT_RETENTION_FLOOR_DAYS = 365  # keep in step with FLOOR in audit/migrations/0003_retention_expiry.py
if 0 < SENDPLANE_RETENTION["AUDIT_DAYS"] < AUDIT_RETENTION_FLOOR_DAYS:
    raise ImproperlyConfigured(
        f"SENDPLANE_RETENTION_AUDIT_DAYS must be 0 (keep for ever) or at least {AUDIT_RETENTION_FLOOR_DAYS}, "
        f"got {SENDPLANE_RETENTION['AUDIT_DAYS']}"
    )
CELERY_BEAT_SCHEDULE = {
    "dispatch-sweep": {"task": "dispatch.tasks.sweep", "schedule": SENDPLANE_DISPATCH["SWEEP_SECONDS"]},
    # Versions spamd could not score are retried with the backoff their assessment set.
    "spam-assess-due": {"task": "deliverability.tasks.assess_due", "schedule": 15.0},
    # The anomaly detector: every minute, over every domain at once (SENDPLANE_DETECTOR_*).
    "anomaly-detect": {"task": "deliverability.tasks.detect", "schedule": 60.0},
    # Warm-up that follows reputation: each warming domain's previous day judged once a day (hourly: idempotent).
    "warmup-review": {"task": "deliverability.tasks.warmup", "schedule": 3600.0},
    # Variant guardrails: each running campaign's variants against their siblings (dispatch.services.guardrails).
    "variant-guardrails": {"task": "dispatch.tasks.guardrails", "schedule": 60.0},
    # Gmail bulk senders: an organisational domain's first day of 5,000 messages to Gmail, recorded for good.
    "bulk-senders": {"task": "deliverability.tasks.bulk_senders", "schedule": 3600.0},
    # Retention: a bounded run every 10 minutes; a backlog is worked off over the next ticks (SENDPLANE_RETENTION_*).
    "retention": {"task": "dispatch.tasks.retention", "schedule": 600.0},
    # Long jobs (dispatch.services.jobs): one whose runner died (lease out) or whose hint was lost is published again.
    "jobs-resume": {"task": "dispatch.tasks.jobs_resume", "schedule": 60.0},
}

# --- Feedback: suppression policy and bounce ingestion (issue 5) ----------------------
# Where each kind of suppression applies: "global" (every sending domain) or
# "domain" (the domain the event was about; an event tied to no domain suppresses globally).
_SCOPES = {"global", "domain"}


class SuppressionSettings(TypedDict):
    SCOPES: dict[str, str]  # suppression reason -> "global" or "domain"
    SOFT_BOUNCE_LIMIT: int
    SOFT_BOUNCE_WINDOW_HOURS: int


SENDPLANE_SUPPRESSION: SuppressionSettings = {
    "SCOPES": {
        "hard_bounce": env_choice("SENDPLANE_SUPPRESS_HARD_BOUNCE", "global", _SCOPES),
        "complaint": env_choice("SENDPLANE_SUPPRESS_COMPLAINT", "global", _SCOPES),
        "unsubscribed": env_choice("SENDPLANE_SUPPRESS_UNSUBSCRIBE", "domain", _SCOPES),
        "soft_bounce": env_choice("SENDPLANE_SUPPRESS_SOFT_BOUNCE", "domain", _SCOPES),
    },
    # Soft bounces about the mailbox itself (full, disabled, expired) suppress after N in the window.
    "SOFT_BOUNCE_LIMIT": env_int("SENDPLANE_SOFT_BOUNCE_LIMIT", 3, minimum=1),
    "SOFT_BOUNCE_WINDOW_HOURS": env_int("SENDPLANE_SOFT_BOUNCE_WINDOW_HOURS", 168, minimum=1),
}
# A raw bounce or complaint larger than this is refused (upload) or skipped (mailbox).
SENDPLANE_BOUNCE_MAX_BYTES = env_int("SENDPLANE_BOUNCE_MAX_BYTES", 10 * 1024 * 1024, minimum=1024)
# ESP webhooks (django-anymail) under /webhooks/<esp>/tracking/ answer 404 until a secret
# is set (dispatch/webhook_urls.py), so an unprotected endpoint never exists. Basic auth "user:password".
ANYMAIL = {
    key: value
    for key, value in {
        "WEBHOOK_SECRET": env_secret("ANYMAIL_WEBHOOK_SECRET"),
        "MAILGUN_WEBHOOK_SIGNING_KEY": env_secret("MAILGUN_WEBHOOK_SIGNING_KEY"),
        "POSTAL_WEBHOOK_KEY": env_secret("POSTAL_WEBHOOK_KEY"),
    }.items()
    if value
}

# --- Anomaly detection and pausing (issue 6) ----------------------------------------------
SENDPLANE_DETECTOR = {
    "ENABLED": env_bool("SENDPLANE_DETECTOR_ENABLED", True),
    # A cold start (or a start after an outage) feeds at most this many past minutes.
    "BACKFILL_MINUTES": env_int("SENDPLANE_DETECTOR_BACKFILL_MINUTES", 180, minimum=1, maximum=1440),
    # The longest an operator may override a detector pause (the override lapses on its own; issue 16).
    "OVERRIDE_MAX_MINUTES": env_int("SENDPLANE_DETECTOR_OVERRIDE_MAX_MINUTES", 240, minimum=1, maximum=7 * 24 * 60),
}
SENDPLANE_RESUME_RAMP_MINUTES = env_int("SENDPLANE_RESUME_RAMP_MINUTES", 30, minimum=0, maximum=7 * 24 * 60)
# Optional: every automatic pause is POSTed here as JSON (a chat or paging webhook).
SENDPLANE_ALERT_WEBHOOK_URL = env_str("SENDPLANE_ALERT_WEBHOOK_URL", "") or ""
if SENDPLANE_ALERT_WEBHOOK_URL and urlsplit(SENDPLANE_ALERT_WEBHOOK_URL).scheme not in {"http", "https"}:
    raise ImproperlyConfigured("SENDPLANE_ALERT_WEBHOOK_URL must be an http(s) URL")

# --- Metrics and health (issue 8) ---------------------------------------------------------
# /metrics needs "Authorization: Bearer <token>" when set; unset, it answers loopback clients only.
SENDPLANE_METRICS_TOKEN = env_secret("SENDPLANE_METRICS_TOKEN", "") or ""
if SENDPLANE_METRICS_TOKEN and len(SENDPLANE_METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("SENDPLANE_METRICS_TOKEN must be at least 16 characters")
# Read by prometheus-client itself: every process writes its metrics there and /metrics sums them.
_multiproc_dir = env_str("PROMETHEUS_MULTIPROC_DIR")
if _multiproc_dir is not None and not Path(_multiproc_dir).is_dir():
    raise ImproperlyConfigured(f"PROMETHEUS_MULTIPROC_DIR: {_multiproc_dir} is not a directory (create it, empty, at deployment start)")

# A management command (classify_bounce, ingest_bounces, ...) prints its own output and keeps
# stderr for one-line errors: service logs there start at WARNING unless LOG_LEVEL says otherwise.
_RUNNING_COMMAND = Path(sys.argv[0]).name == "manage.py" and len(sys.argv) > 1 and sys.argv[1] != "runserver"
LOG_LEVEL = env_choice("LOG_LEVEL", "WARNING" if _RUNNING_COMMAND else "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"})
# json: one object per line with the correlation id (production); plain: for a person (ops/demo sets it).
SENDPLANE_LOG_FORMAT = env_choice("SENDPLANE_LOG_FORMAT", "json", {"json", "plain"})
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "controlplane.logging.JsonFormatter"}, "plain": {"()": "controlplane.logging.PlainFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": SENDPLANE_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # aiosmtpd (the demo's and tests' SMTP sink) logs every SMTP command at INFO.
    "loggers": {"mail.log": {"level": "WARNING"}},
}

reject_unknown(
    "SENDPLANE_",
    {
        "SENDPLANE_DATA_DIR",
        "SENDPLANE_MAX_REQUEST_BYTES",
        "SENDPLANE_RENDER_MAX_SOURCE_BYTES",
        "SENDPLANE_RENDER_MAX_OUTPUT_BYTES",
        "SENDPLANE_RENDER_MAX_ITERATIONS",
        "SENDPLANE_RENDER_MAX_CALLS",
        "SENDPLANE_RENDER_TIMEOUT_MS",
        "SENDPLANE_RENDER_MAX_NESTING",
        "SENDPLANE_PUBLIC_URL",
        "SENDPLANE_INSECURE_PUBLIC_URL",
        "SENDPLANE_DISPATCH_BATCH_SIZE",
        "SENDPLANE_DISPATCH_LEASE_SECONDS",
        "SENDPLANE_DISPATCH_HOLD_SECONDS",
        "SENDPLANE_DISPATCH_MAX_ATTEMPTS",
        "SENDPLANE_DISPATCH_RETRY_BASE_SECONDS",
        "SENDPLANE_DISPATCH_RECHECK_EVERY",
        "SENDPLANE_DISPATCH_SWEEP_SECONDS",
        "SENDPLANE_SMTP_CONNECTIONS",
        "SENDPLANE_SMTP_DELIVERIES_PER_CONNECTION",
        "SENDPLANE_SMTP_IDLE_SECONDS",
        "SENDPLANE_ESP_CONCURRENCY",
        "SENDPLANE_DNS_RESOLVER",
        "SENDPLANE_DNS_TIMEOUT_SECONDS",
        "SENDPLANE_RELAY_IPS",
        "SENDPLANE_SENDER_CHECK_MAX_AGE_MINUTES",
        "SENDPLANE_BULK_SENDER_DAILY",
        "SENDPLANE_COST_PER_1000",
        "SENDPLANE_COST_CURRENCY",
        "SENDPLANE_RETENTION_CONTEXT_DAYS",
        "SENDPLANE_RETENTION_ADDRESS_DAYS",
        "SENDPLANE_RETENTION_FEEDBACK_DAYS",
        "SENDPLANE_RETENTION_TRIGGER_DAYS",
        "SENDPLANE_RETENTION_CONSENT_DAYS",
        "SENDPLANE_RETENTION_AUDIT_DAYS",
        "SENDPLANE_RETENTION_BATCH",
        "SENDPLANE_SUPPRESS_HARD_BOUNCE",
        "SENDPLANE_SUPPRESS_COMPLAINT",
        "SENDPLANE_SUPPRESS_UNSUBSCRIBE",
        "SENDPLANE_SUPPRESS_SOFT_BOUNCE",
        "SENDPLANE_SOFT_BOUNCE_LIMIT",
        "SENDPLANE_SOFT_BOUNCE_WINDOW_HOURS",
        "SENDPLANE_BOUNCE_MAX_BYTES",
        "SENDPLANE_DETECTOR_ENABLED",
        "SENDPLANE_DETECTOR_BACKFILL_MINUTES",
        "SENDPLANE_DETECTOR_OVERRIDE_MAX_MINUTES",
        "SENDPLANE_RESUME_RAMP_MINUTES",
        "SENDPLANE_ALERT_WEBHOOK_URL",
        "SENDPLANE_API_THROTTLE_USER",
        "SENDPLANE_API_THROTTLE_ANON",
        "SENDPLANE_UNSUBSCRIBE_THROTTLE",
        "SENDPLANE_NUM_PROXIES",
        "SENDPLANE_CACHE_URL",
        "SENDPLANE_METRICS_TOKEN",
        "SENDPLANE_METRICS_TOKEN_FILE",
        "SENDPLANE_LOG_FORMAT",
    },
)
