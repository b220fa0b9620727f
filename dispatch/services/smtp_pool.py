"""SMTP sessions kept open in each worker process, many in flight at once.

A receiver 30-100 ms away answers each command one round trip later, so a
session that speaks one message at a time sends at most a few a second. A
chunk's messages therefore go out on up to ``CONNECTIONS`` sessions at once,
and a session stays open across batches for up to ``DELIVERIES_PER_CONNECTION``
messages (Postfix's destination concurrency limit and KumoMTA's
``connection_limit`` / ``max_deliveries_per_connection`` are the models). A
sending domain may set lower limits of its own: it then gets its own pool.

Each session is driven by a thread that blocks on its socket: Python releases
the GIL while it waits, so a hundred sessions in flight cost little CPU, and
the exchange itself stays the one smtplib transaction ``delivery.py`` already
classifies phase by phase (what a 4xx, a 5xx, a drop before or during DATA
mean). A pool per process and per relay; it is made in the process that uses
it (Celery's prefork children), never inherited across a fork.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend

if TYPE_CHECKING:
    from deliverability.models import SendingDomain

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Session:
    """One SMTP connection (Django's backend: host, port, TLS and login come from EMAIL_*) and what it has done."""

    backend: SmtpBackend
    deliveries: int = 0
    last_used: float = field(default_factory=time.monotonic)
    healthy: bool = True  # False once an exchange left it in a state nobody can trust: it is closed, not reused

    @property
    def smtp(self) -> Any:
        return self.backend.connection

    def close(self) -> None:
        try:
            self.backend.close()
        except Exception:  # noqa: BLE001 - closing a broken session may fail in any way; it is gone either way
            pass
        self.backend.connection = None


class SessionPool:
    """Idle sessions to one relay, and the threads that use them; at most ``limit`` sessions exist at once."""

    def __init__(self, factory: Callable[[], SmtpBackend], *, limit: int, per_connection: int, idle_seconds: float) -> None:
        self._factory, self.limit, self.per_connection, self.idle_seconds = factory, limit, per_connection, idle_seconds
        self._idle: list[Session] = []
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="smtp")

    def map(self, work: Callable[[Session, T], R], items: Sequence[T]) -> list[R | BaseException]:
        """``work(session, item)`` for every item, up to ``limit`` at once; each result or the exception it raised, in order."""
        futures = [self._threads.submit(self._run, work, item) for item in items]
        # One wait for the whole chunk (one wake-up, not one per message); then future.exception() hands
        # back what the work raised without blocking. Whatever strikes this thread while it waits
        # (SystemExit, KeyboardInterrupt: the worker is being stopped) is not caught here and reaches the
        # worker, which records what was in flight as ``unknown`` (worker._send_chunk), never as unsent.
        try:
            wait(futures)
            return [exc if (exc := future.exception()) is not None else future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()  # what has not started never will
            raise

    def _run(self, work: Callable[[Session, T], R], item: T) -> R:
        session = self._acquire()
        try:
            return work(session, item)
        except BaseException:
            session.healthy = False
            raise
        finally:
            session.deliveries += 1
            self._release(session)

    def _acquire(self) -> Session:
        """The most recently used idle session (LIFO keeps few sessions hot), else a new one; connected."""
        with self._lock:
            session = self._idle.pop() if self._idle else None
        if session is not None and time.monotonic() - session.last_used > self.idle_seconds:
            session.close()  # relays drop idle sessions; a fresh one costs less than a failed first command
            session = None
        if session is None:
            session = Session(self._factory())
        if session.smtp is None:
            session.backend.open()  # raises when the relay cannot be reached: the caller's error, this item's result
            session.deliveries = 0
        return session

    def _release(self, session: Session) -> None:
        session.last_used = time.monotonic()
        if not session.healthy or session.smtp is None or session.deliveries >= self.per_connection:
            session.close()
            return
        with self._lock:
            self._idle.append(session)

    def close(self) -> None:
        """Close the idle sessions and let the threads end (sessions in use close as they come back)."""
        self._threads.shutdown(wait=False)
        with self._lock:
            idle, self._idle = self._idle, []
        for session in idle:
            session.close()


_pools: dict[tuple[Any, ...], tuple[tuple[int, int], SessionPool]] = {}
_pools_pid = 0
_pools_lock = threading.Lock()


def session_pool(backend: SmtpBackend, domain: SendingDomain | None = None) -> SessionPool:
    """This process's pool for the relay ``backend`` points at (EMAIL_* settings), made on first use.

    A sending domain with limits of its own (``smtp_connections``,
    ``smtp_deliveries_per_connection``) gets a pool of its own for that relay,
    never allowed more sessions than the relay's; a domain whose limits
    changed gets a new pool and its old one is closed.
    """
    global _pools_pid
    cfg = settings.SENDPLANE_SMTP
    limits = (cfg["CONNECTIONS"], cfg["DELIVERIES_PER_CONNECTION"])
    key: tuple[Any, ...] = (backend.host, backend.port, backend.username, backend.use_tls, backend.use_ssl)
    if domain is not None and (domain.smtp_connections or domain.smtp_deliveries_per_connection):
        key += (domain.pk,)
        limits = (min(domain.smtp_connections or limits[0], limits[0]), domain.smtp_deliveries_per_connection or limits[1])
    stale: SessionPool | None = None
    with _pools_lock:
        if _pools_pid != os.getpid():  # a forked child: the parent's threads and sockets are not ours
            _pools.clear()
            _pools_pid = os.getpid()
        known = _pools.get(key)
        if known is not None and known[0] == limits:
            return known[1]
        stale = known[1] if known else None
        pool = SessionPool(_backend_factory(backend), limit=limits[0], per_connection=limits[1], idle_seconds=cfg["IDLE_SECONDS"])
        _pools[key] = (limits, pool)
    if stale is not None:
        stale.close()
    return pool


def pools_close() -> None:
    """Close every idle session of this process (tests, worker shutdown)."""
    with _pools_lock:
        pools = [pool for _, pool in _pools.values()] if _pools_pid == os.getpid() else []
        _pools.clear()
    for pool in pools:
        pool.close()


def _backend_factory(backend: SmtpBackend) -> Callable[[], SmtpBackend]:
    """New backends configured as ``backend`` is (it may carry arguments beyond the settings)."""
    options = {
        "host": backend.host, "port": backend.port, "username": backend.username, "password": backend.password,
        "use_tls": backend.use_tls, "use_ssl": backend.use_ssl, "timeout": backend.timeout,
        "ssl_keyfile": backend.ssl_keyfile, "ssl_certfile": backend.ssl_certfile,
    }
    return lambda: SmtpBackend(fail_silently=False, **options)
