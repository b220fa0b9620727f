"""Private services for the fault suite: a PostgreSQL cluster, a Redis broker, an API server.

The suite restarts its database and its broker on purpose, so it never
touches the machine's shared PostgreSQL (5432) or RabbitMQ (5672), which
other people's tests use: every service here is a child of the runner, on a
free loopback port, with its data in the run's temporary directory. Each
child is started in a process group of its own and every group is killed at
exit (``Children.close``, called from ``atexit`` and the signal handlers),
never anything found by name.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(check: Any, *, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(every)


class Children:
    """Every process group the runner started; ``close`` kills them all (TERM, then KILL)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], *, log: Path, user: str | None = None, **options: Any) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, user=user, **options
            )
        self.procs.append(proc)
        return proc

    def adopt(self, proc: subprocess.Popen[bytes]) -> None:
        self.procs.append(proc)

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, wait: float = 15.0) -> None:
        try:
            os.killpg(proc.pid, sig)  # the group id is the child's pid (start_new_session)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc, signal.SIGTERM, wait=5.0)
            self.kill(proc, signal.SIGKILL, wait=5.0)  # whatever outlived its leader in the group
        self.procs.clear()


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return exe


class PrivatePostgres:
    """A throw-away cluster: initdb into the run's directory, trust auth, loopback and a socket dir of its own.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the
    ``postgres`` user. ``restart`` is a crash (immediate shutdown: no
    checkpoint, recovery at the next start) unless ``mode="fast"``.
    """

    def __init__(self, children: Children, base: Path) -> None:
        self.children = children
        self.port = free_port()
        self.data, self.sockets, self.log = base / "pgdata", base / "pgsock", base / "postgres.log"
        self.user = "postgres" if os.geteuid() == 0 else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/sendplane"

    def init(self) -> None:
        for path in (self.data, self.sockets):
            path.mkdir(mode=0o700)
            if self.user:
                owner = pwd.getpwnam(self.user)
                os.chown(path, owner.pw_uid, owner.pw_gid)
        if self.user:
            os.chmod(self.data.parent, 0o755)  # the postgres user must reach its directories
        argv = [_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]
        with self.log.open("ab") as out:
            subprocess.run(argv, check=True, stdout=out, stderr=subprocess.STDOUT, user=self.user, cwd="/")
        self.start()
        subprocess.run(
            [_pg_bin("psql"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", "CREATE DATABASE sendplane"],
            check=True, capture_output=True,
        )  # fmt: skip

    def start(self) -> None:
        settings = ["listen_addresses=127.0.0.1", "fsync=off", "full_page_writes=off", "max_connections=300", "log_min_messages=warning"]
        argv = [_pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sockets)]
        for setting in settings:
            argv += ["-c", setting]
        self.proc = self.children.start(argv, log=self.log, user=self.user, cwd="/")
        wait_for(self.ready, timeout=60, what="private PostgreSQL")

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"private PostgreSQL exited:\n{self.log.read_text(errors='replace')[-2000:]}")
        probe = [_pg_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(probe, check=False).returncode == 0

    def stop(self, mode: str = "immediate") -> None:
        if self.proc is None:
            return
        sig = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        try:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        Children.kill(self.proc)  # backends that outlived the postmaster
        self.proc = None

    def restart(self, *, down_seconds: float, mode: str = "immediate") -> None:
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()


class PrivateRedis:
    """The broker: ``redis-server`` with no persistence, so a restart loses every hint it held."""

    def __init__(self, children: Children, base: Path) -> None:
        self.children = children
        self.port = free_port()
        self.base = base
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (ops/faults/run installs Debian's redis-server)")
        argv = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.proc = self.children.start(argv + ["--dir", str(self.base)], log=self.base / "redis.log")
        wait_for(lambda: port_open(self.port), timeout=20, what="private Redis")

    def stop(self) -> None:
        if self.proc is not None:
            Children.kill(self.proc)  # a crash: nothing is saved
            self.proc = None

    def restart(self, *, down_seconds: float) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


class ApiServer:
    """The WSGI app on loopback: gunicorn (the ``bench`` extra) when installed, else the stdlib's threaded server."""

    def __init__(self, children: Children, base: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        try:
            import gunicorn  # noqa: F401

            argv = [sys.executable, "-m", "gunicorn", "controlplane.wsgi:application", "-b", f"127.0.0.1:{self.port}",
                    "-w", "2", "--threads", "8", "--worker-class", "gthread", "--timeout", "120", "--log-level", "warning"]  # fmt: skip
            self.kind = "gunicorn -w 2 --threads 8 (gthread)"
        except ImportError:
            argv = [sys.executable, str(Path(__file__).with_name("wsgi_server.py")), str(self.port)]
            self.kind = "wsgiref ThreadingWSGIServer"
        self.proc = children.start(argv, log=base / "api.log", env=env, cwd=ROOT)
        wait_for(lambda: port_open(self.port), timeout=60, what="API server")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
