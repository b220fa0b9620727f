"""ESP transports (django-anymail, or any Django backend that is not SMTP): many API calls in flight at once.

An ESP's HTTP API answers in 50-200 ms, so one call at a time sends 5-20
messages a second. A chunk's messages therefore go out on up to
``SENDPLANE_ESP["CONCURRENCY"]`` calls at once, each a message of its own:
our messages are rendered whole per recipient (body, Message-ID,
List-Unsubscribe), which anymail's batch send (one message, the ESP merging
per-recipient data into it) cannot carry; ``ops/architecture.md`` gives the
reasons.

Each call runs on a thread of this process's pool, and each thread keeps its
own backend, opened once and kept across batches: anymail's backends hold a
``requests.Session``, which requests does not promise to be thread-safe, and
one keep-alive connection per thread is what the concurrency needs anyway. The
pool is made in the process that uses it (Celery's prefork children), never
inherited across a fork, as ``smtp_pool.py``'s are.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from anymail.exceptions import AnymailError, AnymailRecipientsRefused
from django.conf import settings
from django.core.mail import EmailMultiAlternatives

from controlplane import metrics
from deliverability.models import SendingDomain
from dispatch.models import Message, MessageStatus
from dispatch.services.delivery import (
    ESP_METADATA_KEY,
    SENT,
    Outcome,
    Prepared,
    Transport,
    build_email,
    envelope_sender,
    log_unexpected,
    one_line,
)
from templates_registry.rendering import RenderError

# What a pool thread hands back for a message it did not send: past the deadline, stopped, or no backend could be made.
_NOT_STARTED = None
Result = Outcome | BaseException | None


class BackendTransport(Transport):
    """Any other Django backend (anymail ESPs, locmem, console): one API call per message, many calls at once.

    The backend ``open_transport`` made only names the class; the calls go
    through the pool's own backends (one per thread, made from the same
    settings), so ``open`` and ``close`` have nothing to do per batch.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def prepare(self, message: Message, domain: SendingDomain) -> Prepared | Outcome:
        try:
            email = build_email(message, domain)
        except RenderError as exc:
            return Outcome(MessageStatus.FAILED, None, f"render: {exc}")
        email.extra_headers["Return-Path"] = envelope_sender(message)
        # ESPs echo metadata in their tracking webhooks: how a webhook event finds its message.
        email.metadata = {ESP_METADATA_KEY: message.uuid.hex}  # type: ignore[attr-defined]
        return Prepared(message, email)

    def send(self, prepared: Prepared) -> Outcome:
        outcomes: dict[int, Outcome] = {}
        self.send_many([prepared], outcomes=outcomes, deadline=math.inf)
        return outcomes[prepared.message.pk]

    def send_many(self, chunk: Sequence[Prepared], *, outcomes: dict[int, Outcome], deadline: float) -> None:
        """Every message of the chunk in its own call, up to the pool's limit at once; none started after ``deadline``.

        A message whose thread could not make a backend has no outcome (nothing
        was sent: it goes back to the queue); when no message got one, that
        error is the batch's, raised.
        """
        failure = esp_pool(self.backend).hand_over(chunk, outcomes, deadline)
        if failure is not None and not any(p.message.pk in outcomes for p in chunk):
            raise failure


@metrics.timed_send("backend")
def _call(backend: Any, prepared: Prepared) -> Outcome:
    """One message, one API call, classified as it always was (a call that raised tells why)."""
    try:
        backend.send_messages([prepared.payload])
    except AnymailRecipientsRefused as exc:
        return Outcome(MessageStatus.FAILED, None, one_line(exc))
    except (AnymailError, OSError) as exc:  # the ESP or the network (requests' errors are OSErrors): retry with backoff
        return Outcome(MessageStatus.DEFERRED, None, one_line(exc))
    except Exception as exc:  # noqa: BLE001 - anything else is about this message (bad data, a bug): it ends here
        log_unexpected(prepared.message, "sending")
        return Outcome(MessageStatus.FAILED, None, one_line(exc))
    return _anymail_outcome(prepared.payload)


def _anymail_outcome(email: EmailMultiAlternatives) -> Outcome:
    status = getattr(email, "anymail_status", None)
    statuses = set(getattr(status, "status", None) or {"sent"})
    # "unknown": the ESP took the message but reports no per-recipient status.
    if statuses & {"rejected", "invalid", "failed"}:
        return Outcome(MessageStatus.FAILED, None, f"ESP status {sorted(statuses)}")
    return SENT


class BackendPool:
    """Up to ``limit`` threads, each with its own backend, opened on first use and kept until the pool closes."""

    def __init__(self, factory: Callable[[], Any], *, limit: int) -> None:
        self._factory, self.limit = factory, limit
        self._local = threading.local()
        self._backends: list[Any] = []  # every backend made, so that close() reaches those of idle threads
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="esp")

    def hand_over(self, chunk: Sequence[Prepared], outcomes: dict[int, Outcome], deadline: float) -> BaseException | None:
        """Send the chunk, writing each outcome as its call returns; the first error that kept a message from starting.

        Outcomes are written here, by the caller's thread, never by the pool's:
        if the caller is stopped (SystemExit, KeyboardInterrupt) nothing more
        is started and ``outcomes`` holds exactly the calls that had returned;
        the worker records the others it handed as ``unknown``.
        """
        stop = threading.Event()
        futures: dict[Future[Result], Prepared] = {}
        failure: BaseException | None = None
        try:
            for n, prepared in enumerate(chunk):
                # The first message always starts, as in Transport.send_many: a chunk always makes progress.
                futures[self._threads.submit(self._run, prepared, math.inf if n == 0 else deadline, stop)] = prepared
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    error = _collect(futures[future], future.result(), outcomes)
                    failure = failure or error
        except BaseException:
            stop.set()  # calls already in flight end on their own; queued ones return without sending
            raise
        return failure

    def _run(self, prepared: Prepared, deadline: float, stop: threading.Event) -> Result:
        if stop.is_set() or time.monotonic() > deadline:
            return _NOT_STARTED
        try:
            backend = self._backend()
        except Exception as exc:  # noqa: BLE001 - a backend that cannot be made sends nothing: the caller decides what it means
            return exc
        return _call(backend, prepared)

    def _backend(self) -> Any:
        backend = getattr(self._local, "backend", None)
        if backend is None:
            backend = self._factory()
            backend.open()  # anymail's backends keep their Session (and its keep-alive connection) while open
            with self._lock:
                self._backends.append(backend)
            self._local.backend = backend
        return backend

    def close(self, *, wait_calls: bool = False) -> None:
        """Let the threads end and close every backend (tests, a change of settings)."""
        self._threads.shutdown(wait=wait_calls, cancel_futures=True)
        with self._lock:
            backends, self._backends = self._backends, []
        for backend in backends:
            try:
                backend.close()
            except Exception:  # noqa: BLE001 - closing a broken session may fail in any way; it is gone either way
                pass


def _collect(prepared: Prepared, result: Result, outcomes: dict[int, Outcome]) -> BaseException | None:
    if isinstance(result, Outcome):
        outcomes[prepared.message.pk] = result
        return None
    return result  # an error that kept the message from starting, or None when it was not started


_pool: tuple[tuple[Any, ...], BackendPool] | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def esp_pool(backend: Any) -> BackendPool:
    """This process's pool for ``backend``'s class and the settings it reads, made on first use.

    One pool per process (a process has one EMAIL_BACKEND); a change of
    backend or of ANYMAIL settings (tests) closes the old pool and makes a new
    one, so no thread keeps a backend built from settings that no longer hold.
    """
    global _pool, _pool_pid
    key = (type(backend), repr(getattr(settings, "ANYMAIL", None)), settings.SENDPLANE_ESP["CONCURRENCY"])
    with _pool_lock:
        if _pool_pid != os.getpid():  # a forked child: the parent's threads and sessions are not ours
            _pool, _pool_pid = None, os.getpid()
        if _pool is not None and _pool[0] == key:
            return _pool[1]
        old, _pool = _pool, (key, BackendPool(_factory(type(backend)), limit=key[2]))
    if old is not None:
        old[1].close()
    return _pool[1]


def esp_pools_close(*, wait_calls: bool = False) -> None:
    """Close this process's pool (tests; ``wait_calls`` waits for calls in flight to return)."""
    global _pool
    with _pool_lock:
        old = _pool if _pool_pid == os.getpid() else None
        _pool = None
    if old is not None:
        old[1].close(wait_calls=wait_calls)


def _factory(cls: type) -> Callable[[], Any]:
    """New backends of the class, configured from settings as ``open_transport``'s ``get_connection()`` is."""
    return lambda: cls(fail_silently=False)
