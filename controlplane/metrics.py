"""Every Prometheus metric Sendplane exports, in one module every app imports.

Labels stay bounded: sending domains (few), statuses, event types and kinds,
detector signals and rules, URL route names. Never a recipient, an id or a raw path.

Processes record into prometheus-client's default registry; with
``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn workers, Celery pool children) each
process writes its own files there and ``/metrics`` sums them
(``MultiProcessCollector``). Gauges of the outbox, the queue and paused domains
are not recorded at all: ``/metrics`` computes them from the database at scrape
time (``DatabaseCollector``), one aggregate query each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar

from django.apps import apps
from django.db import transaction
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

F = TypeVar("F", bound=Callable[..., Any])
NO_DOMAIN = "none"  # events we could not tie to a sending domain

# --- dispatch: the worker --------------------------------------------------------------------
MESSAGES = Counter("sendplane_messages", "Outcomes of messages (the worker's, and a campaign cancel's), per message", ["domain", "status"])
SEND_SECONDS = Histogram(
    "sendplane_send_duration_seconds",
    "Hand-over time of one message to the SMTP server or ESP (the exchange only, not rendering)",
    ["domain", "transport"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TOKENS_DENIED = Counter(
    "sendplane_token_bucket_denied", "Prepared messages the domain's token bucket refused and pushed back", ["domain"]
)
PUSHBACK_SECONDS = Histogram(
    "sendplane_token_bucket_pushback_seconds",
    "How far a batch's refused rows were pushed back (not_before - now)",
    ["domain"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
LINT_FAILURES = Counter(
    "sendplane_message_lint_failures",
    "Built messages the header lint refused (never sent), per rule broken (templates_registry/rendering/lint.py Rule)",
    ["rule"],
)

# An unsubscribe is in force on every worker once it has committed (these two) and each chunk that read the
# suppressions before the commit has ended (the chunk window): at most the sum of the two (ops/architecture.md).
UNSUBSCRIBE_SECONDS = Histogram(
    "sendplane_unsubscribe_suppression_seconds",
    "From an unsubscribe's arrival (a one-click POST, a mail to the List-Unsubscribe mailto) to its suppression committed",
    ["via"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SUPPRESSION_WINDOW_SECONDS = Histogram(
    "sendplane_dispatch_suppression_window_seconds",
    "Per chunk of a worker: from its read of the suppressions to its last hand-over (a suppression committing meanwhile "
    "is in force on that worker at most this long after)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

# --- deliverability: feedback, detector, spam sandbox ----------------------------------------------
FEEDBACK_EVENTS = Counter(
    "sendplane_feedback_events", "Feedback events stored (bounces, complaints, unsubscribes...)", ["domain", "event_type", "kind"]
)
DETECTOR_PAUSES = Counter("sendplane_detector_pauses", "Sending domains paused by the anomaly detector", ["signal", "rule"])
DETECTOR_SECONDS = Histogram(
    "sendplane_detector_run_duration_seconds", "One detector run: lock, read counters, step, pause, save",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DETECTOR_EXCURSION = Gauge(
    "sendplane_detector_domains_in_excursion", "Domains whose CUSUM is above 0 after the last run", ["signal"],
    multiprocess_mode="mostrecent",
)
DETECTOR_CUSUM = Gauge(
    "sendplane_detector_cusum_max", "Largest CUSUM statistic over all domains after the last run (decides at 12)", ["signal"],
    multiprocess_mode="mostrecent",
)
DETECTOR_LAST_RUN = Gauge(
    "sendplane_detector_last_run_timestamp_seconds", "When the detector last fed minutes", multiprocess_mode="mostrecent"
)
SPAM_SCORES = Histogram(
    "sendplane_spam_score", "SpamAssassin score of each version spamd scored (cache hits excluded)",
    # No negative bounds: prometheus-client drops _sum when there are any; negative scores fall in le="0".
    buckets=(0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 25),
)

# --- retention (dispatch.services.retention) ----------------------------------------------------------
RETENTION_ROWS = Counter(
    "sendplane_retention_rows", "Rows retention blanked or deleted, per data class", ["data_class", "action"]
)
RETENTION_OVERDUE = Gauge(
    "sendplane_retention_overdue_seconds",
    "After the last run: how long past its limit the oldest row still in clear is (0: none; rises while a backlog lasts)",
    ["data_class"],
    multiprocess_mode="mostrecent",
)
RETENTION_LAST_RUN = Gauge(
    "sendplane_retention_last_run_timestamp_seconds", "When retention last finished a run", multiprocess_mode="mostrecent"
)

# --- HTTP -------------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter("sendplane_http_requests", "Requests by URL route name, method and status", ["view", "method", "code"])
HTTP_SECONDS = Histogram(
    "sendplane_http_request_duration_seconds", "Request time by URL route name", ["view"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# --- recording: one call from each place an event happens ---------------------------------------------


def batch_recorded(*, domain: str, counts: dict[str, int]) -> None:
    """The worker's outcomes of one batch; rows released unsent ("queued") are not outcomes."""
    for status, n in counts.items():
        if status != "queued" and n:
            MESSAGES.labels(domain=domain, status=status).inc(n)


def messages_cancelled(*, domain: str, count: int) -> None:
    """Waiting messages a campaign's cancel ended (dispatch.services.campaigns): an outcome, though no worker recorded it."""
    if count:
        MESSAGES.labels(domain=domain, status="cancelled").inc(count)


def tokens_denied(*, domain: str, count: int, pushback_seconds: float) -> None:
    TOKENS_DENIED.labels(domain=domain).inc(count)
    PUSHBACK_SECONDS.labels(domain=domain).observe(pushback_seconds)


def timed_send(transport: str) -> Callable[[F], F]:
    """Decorate a transport's ``send(self, prepared)``: observe its duration per domain."""

    def decorate(send: F) -> F:
        @wraps(send)
        def timed(self: Any, prepared: Any) -> Any:
            started = time.perf_counter()
            try:
                return send(self, prepared)
            finally:
                domain = prepared.message.sending_domain.domain
                SEND_SECONDS.labels(domain=domain, transport=transport).observe(time.perf_counter() - started)

        return timed  # type: ignore[return-value]

    return decorate


def unsubscribe_committed(*, via: str, arrived: float) -> None:
    """``arrived``: time.monotonic() when the request or mail came in; observed once the suppression commits."""
    transaction.on_commit(lambda: UNSUBSCRIBE_SECONDS.labels(via=via).observe(time.monotonic() - arrived))


def suppression_window(seconds: float) -> None:
    SUPPRESSION_WINDOW_SECONDS.observe(seconds)


def feedback_recorded(event: Any) -> None:
    """Count a stored event once its transaction commits (at once outside one)."""
    domain = event.sending_domain.domain if event.sending_domain_id else NO_DOMAIN
    labels = {"domain": domain, "event_type": event.event_type, "kind": event.kind or "none"}
    transaction.on_commit(lambda: FEEDBACK_EVENTS.labels(**labels).inc())


def timed_detector_run(run: F) -> F:
    @wraps(run)
    def timed(*args: Any, **kwargs: Any) -> Any:
        with DETECTOR_SECONDS.time():
            return run(*args, **kwargs)

    return timed  # type: ignore[return-value]


def detector_observed(state: Any, signals: Sequence[str]) -> None:
    """The detector's state after a run that fed minutes: per signal, domains in excursion and the top CUSUM.

    ``signals`` names the rows of ``state.cusum`` (the detector owns that vocabulary; controlplane imports no app).
    """
    cusum = state.cusum  # (len(signals), domains)
    for i, signal in enumerate(signals):
        DETECTOR_EXCURSION.labels(signal=signal).set(int((cusum[i] > 0).sum()))
        DETECTOR_CUSUM.labels(signal=signal).set(float(cusum[i].max()) if cusum.shape[1] else 0.0)
    DETECTOR_LAST_RUN.set_to_current_time()


def message_lint_failed(rules: Iterable[str]) -> None:
    """One message refused by the header lint: each rule it broke counted once (a ``Rule``, never the problem's text)."""
    for rule in set(rules):
        LINT_FAILURES.labels(rule=rule).inc()


def retention_observed(*, data_class: str, action: str, rows: int, overdue_seconds: float) -> None:
    """One data class after a retention run: rows it changed, and how far behind its limit it still is."""
    if rows:
        RETENTION_ROWS.labels(data_class=data_class, action=action).inc(rows)
    RETENTION_OVERDUE.labels(data_class=data_class).set(overdue_seconds)


def retention_finished() -> None:
    RETENTION_LAST_RUN.set_to_current_time()


def spam_scored(report: dict[str, Any]) -> None:
    SPAM_SCORES.observe(float(report["score"]))


def http_request(*, view: str, method: str, code: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(view=view, method=method if method in _METHODS else "other", code=str(code)).inc()
    HTTP_SECONDS.labels(view=view).observe(seconds)


class RequestMetricsMiddleware:
    """Count every request by its resolved route name (never the raw path: ids would explode the labels)."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        started = time.perf_counter()
        response = self.get_response(request)
        http_request(view=route_name(request), method=request.method, code=response.status_code,
                     seconds=time.perf_counter() - started)
        return response


def route_name(request: Any) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unresolved"
    return match.view_name or match.route or "unnamed"


# --- scrape time: the outbox and the queue, read from the database ---------------------------------


class DatabaseCollector(Collector):
    """Gauges computed when /metrics is read: two aggregate queries over the outbox's partial indexes, one over domains."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = timezone.now()
        yield outbox_family()
        yield from queue_families(now)
        yield paused_family()


def outbox_family() -> GaugeMetricFamily:
    """Rows not yet final, per domain and status (the message_claimable and message_leased indexes).

    Final statuses grow without bound and are counted as they happen by sendplane_messages_total.
    """
    family = GaugeMetricFamily("sendplane_outbox_messages", "Messages queued, deferred or sending now", labels=["domain", "status"])
    live = Q(status__in=["queued", "deferred"]) | Q(status="sending")
    rows = _messages().filter(live).values_list("sending_domain__domain", "status").annotate(n=Count("id"))
    for domain, status, n in rows.order_by():
        family.add_metric([domain, status], n)
    return family


def queue_families(now: datetime) -> Iterator[GaugeMetricFamily]:
    """Due rows the worker could claim now, and how long the oldest has been due, per domain.

    Paused domains and campaigns that are not running are left out, so a pause does not read as a stuck worker.
    """
    depth = GaugeMetricFamily(
        "sendplane_queue_due_messages", "Messages due now on running campaigns of unpaused domains", labels=["domain"]
    )
    age = GaugeMetricFamily(
        "sendplane_queue_oldest_due_age_seconds", "Seconds the oldest due message has waited since due", labels=["domain"]
    )
    due = _messages().filter(
        status__in=["queued", "deferred"], not_before__lte=now, campaign__status="running", sending_domain__paused=False
    )
    for domain, n, oldest in due.values_list("sending_domain__domain").annotate(n=Count("id"), oldest=Min("not_before")).order_by():
        depth.add_metric([domain], n)
        age.add_metric([domain], max(0.0, (now - oldest).total_seconds()))
    yield depth
    yield age


def paused_family() -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "sendplane_domain_paused", "1 while the sending domain is paused, by the detector or a person", labels=["domain", "by"]
    )
    for domain, paused, by in apps.get_model("deliverability", "SendingDomain").objects.values_list("domain", "paused", "paused_by"):
        family.add_metric([domain, "detector" if by == "detector" else "person" if paused else ""], int(paused))
    return family


def _messages() -> Any:
    # By name: dispatch sits above every other app (ops/architecture.md), and this module is imported by all of them.
    return apps.get_model("dispatch", "Message").objects


# --- exposition ------------------------------------------------------------------------------------


class _ProcessCollector(Collector):
    """This process's own metrics (the default registry), when not in multiprocess mode."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> bytes:
    """The text /metrics serves: every process's files in multiprocess mode, else this process; then the database gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if (path := multiprocess_dir()) is not None:
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry.register(_ProcessCollector())
    registry.register(DatabaseCollector())
    return generate_latest(registry)
