"""Real Celery worker processes for integration tests, against the real broker and database.

Each worker is its own process group (``start_new_session``), so ``kill9``
takes the whole worker down at once (a solo worker is one process; a prefork
worker is a parent and its pool children), and ``stop`` never leaves a child
behind. The broker traffic of a test run goes to a RabbitMQ virtual host of
its own when ``rabbitmqctl`` can create one, so it never mixes with another
run's hints; otherwise it uses the broker as configured and purges the queue.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from kombu import pools

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def broker_reachable(url: str, timeout: float = 3.0) -> bool:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False


def _rabbitmqctl(*args: str) -> bool:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, *args], check=False, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def with_vhost(url: str, vhost: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, parts.fragment))


@contextmanager
def private_broker(base_url: str) -> Iterator[str]:
    """A broker URL for this test run only: a fresh vhost when possible, else ``base_url``."""
    scheme = urlsplit(base_url).scheme
    vhost = f"sendplane-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    created = scheme.startswith("amqp") and _rabbitmqctl("add_vhost", vhost)
    if created and not _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"):
        _rabbitmqctl("delete_vhost", vhost)
        created = False
    try:
        yield with_vhost(base_url, vhost) if created else base_url
    finally:
        if created:
            _rabbitmqctl("delete_vhost", vhost)


@contextmanager
def app_broker(app: Any, url: str) -> Iterator[None]:
    """Point the (test process's) Celery app at ``url``; its cached pools are rebuilt either way.

    Celery reads ``CELERY_BROKER_URL`` from the environment before its own
    configuration, so the variable is switched too.
    """
    old, old_env = app.conf.broker_url, os.environ.get("CELERY_BROKER_URL")

    def reset() -> None:
        pools.reset()  # kombu keeps connection pools per URL, process-wide; closed ones are dropped too
        app._pool = None
        app.amqp._producer_pool = None

    reset()
    app.conf.broker_url = os.environ["CELERY_BROKER_URL"] = url
    try:
        yield
    finally:
        reset()
        app.conf.broker_url = old
        if old_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = old_env


def purge(app: Any) -> int:
    with app.connection_for_write() as conn:
        return app.control.purge(connection=conn)


def database_url(settings_dict: dict[str, Any]) -> str:
    """The URL of the database this test process uses (the test database)."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


class Worker:
    """One ``celery worker`` process (group). ``pool="solo"`` is one process doing the work."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, *, pool: str = "solo", concurrency: int = 1) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        argv = [
            sys.executable, "-m", "celery", "-A", "controlplane", "worker",
            f"--pool={pool}", f"--concurrency={concurrency}", "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
        ]  # fmt: skip
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def is_ready(self) -> bool:
        return " ready." in self.log()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if not self.alive():
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.name} not ready after {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the group id is the worker's pid (start_new_session)
        except ProcessLookupError:
            pass

    def kill9(self) -> None:
        """kill -9 the worker and every process it started, mid-whatever it is doing."""
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL for anything still there; always reaps the group."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # pool children that outlived their parent, if any
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


class WorkerFleet:
    """Starts workers with one environment and guarantees they are all gone at ``close``."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.workers: list[Worker] = []

    def start(self, name: str, **options: Any) -> Worker:
        worker = Worker(name, self.env, self.log_dir, **options)
        self.workers.append(worker)
        return worker

    def start_many(self, names: list[str], **options: Any) -> list[Worker]:
        started = [self.start(name, **options) for name in names]
        for worker in started:
            worker.wait_ready()
        return started

    def logs(self) -> str:
        return "\n".join(f"----- {w.name} (pid {w.pid}) -----\n{w.log()[-4000:]}" for w in self.workers)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()


def worker_env(
    *, database_url: str, broker_url: str, secret_key: str, email_port: int, log_format: str = "plain", **dispatch: str
) -> dict[str, str]:
    """The whole environment a worker needs; ``dispatch`` sets SENDPLANE_DISPATCH_<KEY> values.

    Logs are plain by default: most tests read Celery's own task lines from the worker's log.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENDPLANE_", "EMAIL_", "CELERY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        DATABASE_URL=database_url,
        SECRET_KEY=secret_key,
        CELERY_BROKER_URL=broker_url,
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(email_port),
        EMAIL_USE_TLS="false",
        EMAIL_USE_SSL="false",
        LOG_LEVEL="INFO",
        SENDPLANE_LOG_FORMAT=log_format,
        SENDPLANE_INSECURE_PUBLIC_URL="true",  # PostgreSQL is production: its links must be https unless said otherwise
        PYTHONUNBUFFERED="1",
    )
    env.pop("SECRET_KEY_FILE", None)
    env.pop("EMAIL_HOST_PASSWORD_FILE", None)
    for key, value in dispatch.items():  # smtp_connections=1 -> SENDPLANE_SMTP_CONNECTIONS, batch_size -> SENDPLANE_DISPATCH_...
        name = key.upper() if key.startswith("smtp_") else f"DISPATCH_{key.upper()}"
        env[f"SENDPLANE_{name}"] = str(value)
    return env
