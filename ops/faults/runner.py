"""The fault suite: campaigns of thousands of messages through real workers while things break.

Usage: ops/faults/run [--short] [--only NAME ...] [--latency-ms LO-HI ...] [--messages N] [--workers N] [--load-seconds S]

Everything runs against services this runner starts and tears down itself:
a private PostgreSQL cluster and a private Redis broker on free loopback
ports (restarted by the scenarios; the machine's shared PostgreSQL and
RabbitMQ are never touched), the fault SMTP sink, the API under gunicorn (or
the stdlib's WSGI server), and several ``celery worker --pool=solo``
processes. The runner plays beat: it calls the sweeper every half second.

Every scenario runs once for each receiver latency given (``--latency-ms``,
each ``LO-HI`` or ``MS``: every SMTP reply of the sink waits a delay drawn
uniformly in [LO, HI] ms): the short form at 30-100 ms, the long form at 0
and at 30-100 ms.

After each scenario the conservation check (ops/faults/checks.py) runs; the
last line is ``RESULT scenarios=K accepted=N lost=L duplicates=D
sent_while_paused=P sent_to_suppressed=S unknown=U latency_ms=LO-HI[,LO-HI]``. Exit 1 when any of
lost, duplicates, sent_while_paused, sent_to_suppressed is not 0, when an
unknown row is unexplained, or when a scenario's own assertion failed.
"""

from __future__ import annotations

import argparse
import atexit
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[0] = str(ROOT)  # not ops/faults: its module names must not shadow the stdlib

from ops.faults.infra import ApiServer, Children, PrivatePostgres, PrivateRedis, free_port  # noqa: E402
from ops.faults.sink import FaultSink, latency_text  # noqa: E402

TICK = 0.5  # the runner's beat: the sweeper's period


@dataclass(frozen=True)
class Size:
    messages: int  # per scenario, across its sending domains
    workers: int
    load_seconds: float
    load_clients: int
    drain_timeout: float
    storm_seconds: float
    short: bool
    latencies: tuple[tuple[float, float], ...]  # the receiver's reply delays (ms), one pass of every scenario each


RECEIVER = (30.0, 100.0)  # a receiver in another region (DESIGN.md: "receivers are 10-100 ms away")
SHORT = Size(messages=300, workers=3, load_seconds=8, load_clients=8, drain_timeout=120, storm_seconds=3, short=True, latencies=(RECEIVER,))
LONG = Size(
    messages=3000, workers=3, load_seconds=20, load_clients=16, drain_timeout=600, storm_seconds=8, short=False,
    latencies=((0.0, 0.0), RECEIVER),
)  # fmt: skip
DISPATCH = {"BATCH_SIZE": "50", "LEASE_SECONDS": "10", "MAX_ATTEMPTS": "12", "RETRY_BASE_SECONDS": "0.5", "RECHECK_EVERY": "10"}


def child_env(*, db: str, broker: str, secret: str, data_dir: Path, smtp_port: int, spamd_port: int) -> dict[str, str]:
    """The environment of every process of the run (only documented variables, ops/configuration.md)."""
    ours = ("SENDPLANE_", "EMAIL_", "CELERY_", "DATABASE_", "SPAMD_", "SECRET_KEY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(
        DJANGO_SETTINGS_MODULE="controlplane.settings", DATABASE_URL=db, CELERY_BROKER_URL=broker, SECRET_KEY=secret,
        SENDPLANE_DATA_DIR=str(data_dir), EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(smtp_port), EMAIL_USE_TLS="false", EMAIL_USE_SSL="false", EMAIL_TIMEOUT="20", SPAMD_PORT=str(spamd_port),
        SENDPLANE_DETECTOR_ENABLED="false", SENDPLANE_RESUME_RAMP_MINUTES="0", SENDPLANE_API_THROTTLE_USER="1000000/minute",
        SENDPLANE_LOG_FORMAT="plain", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1", SENDPLANE_INSECURE_PUBLIC_URL="true",
    )  # fmt: skip
    env.update({f"SENDPLANE_DISPATCH_{k}": v for k, v in DISPATCH.items()})
    return env


@dataclass
class Run:
    """Everything a scenario may use: the services, the workers, the sink, the actors and the template."""

    size: Size
    base: Path
    children: Children
    pg: PrivatePostgres
    redis: PrivateRedis
    sink: FaultSink
    env: dict[str, str]
    api: ApiServer | None = None
    workers: list[Any] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, Any] = field(default_factory=dict)
    template: Any = None
    spamd_port: int = 783
    closed_port: int = 0
    load_figures: Any = None
    tag: str = ""  # in the names a scenario creates (sending domains, templates): "" in the first pass, "-p2" in the second
    _worker_serial: int = 0

    # --- workers -------------------------------------------------------------------------
    def worker_start(self) -> Any:
        from tests.celery_workers import Worker

        self._worker_serial += 1
        worker = Worker(f"faults{self._worker_serial}", self.env, self.base)
        self.workers.append(worker)
        self.children.adopt(worker.proc)
        return worker

    def worker_kill9(self, worker: Any) -> None:
        worker.kill9()
        self.workers.remove(worker)

    @contextmanager
    def more_workers(self, processes: int, *, per_host: int = 1) -> Iterator[list[Any]]:
        """Extra workers until ``processes`` worker processes send at once; stopped on the way out.

        ``per_host`` > 1 starts prefork workers of that many processes (a host
        of a fleet); 1 starts solo workers, one process each, each with its own log.
        """
        from tests.celery_workers import Worker

        extra: list[Any] = []
        missing = processes - len(self.workers)
        try:
            while missing > 0:
                self._worker_serial += 1
                n = min(per_host, missing)
                pool = {"pool": "prefork", "concurrency": n} if per_host > 1 else {}
                extra.append(Worker(f"faults{self._worker_serial}", self.env, self.base, **pool))
                self.children.adopt(extra[-1].proc)
                missing -= n
            for worker in extra:
                worker.wait_ready()
            yield extra
        finally:
            for worker in extra:
                worker.stop()

    # --- the runner's beat ---------------------------------------------------------------
    def beat(self) -> None:
        """What beat does every period. The broker or the database may be down: log and go on."""
        from django.db import connections

        from dispatch.services.sweeper import sweep

        try:
            sweep()
        except Exception as exc:  # noqa: BLE001 - beat survives a broker or database outage
            print(f"  beat: sweep failed: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            connections.close_all()

    def pending(self, campaign_ids: list[int]) -> int | None:
        """Rows not yet terminal; None while the database is unreachable."""
        from django.db import DatabaseError, connections

        from dispatch.models import TERMINAL, Message

        try:
            return Message.objects.filter(campaign_id__in=campaign_ids).exclude(status__in=TERMINAL).count()
        except DatabaseError:
            connections.close_all()
            return None

    def drain(
        self,
        campaign_ids: list[int],
        *,
        events: Sequence[tuple[float, Callable[[], None]]] = (),
        settle: Callable[[], bool] | None = None,
        quiet: float = 0.0,
    ) -> float:
        """Beat until every row of the campaigns is terminal, firing ``events`` (seconds from now, action) on the way.

        ``quiet``: no beat for that many seconds first, so no sweeper hint spreads the work (what the workers do alone).
        """
        start = time.monotonic()
        todo = sorted(events, key=lambda e: e[0])
        while True:
            elapsed = time.monotonic() - start
            while todo and todo[0][0] <= elapsed:
                todo.pop(0)[1]()
            if elapsed >= quiet:
                self.beat()
            left = self.pending(campaign_ids)
            if left == 0 and not todo and (settle is None or settle()):
                return time.monotonic() - start
            if elapsed > self.size.drain_timeout:
                print(f"  drain: {left} rows still not terminal after {self.size.drain_timeout:.0f} s", flush=True)
                return elapsed
            time.sleep(TICK)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.children.close()


def _bootstrap(size: Size, base: Path, children: Children) -> Run:
    """Start the private services, point Django at them, migrate, and make the actors and the template."""
    pg, redis = PrivatePostgres(children, base), PrivateRedis(children, base)
    pg.init()
    redis.start()
    sink = FaultSink(free_port()).__enter__()
    atexit.register(sink.__exit__, None, None, None)
    (base / "data").mkdir()
    closed = free_port()  # nothing listens here: "spamd down"
    secret = secrets.token_urlsafe(48)
    env = child_env(db=pg.url, broker=redis.url, secret=secret, data_dir=base / "data", smtp_port=sink.port, spamd_port=closed)
    os.environ.update({**env, "SPAMD_PORT": os.environ.get("SPAMD_PORT", "783"), "LOG_LEVEL": "WARNING"})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    run = Run(size, base, children, pg, redis, sink, env, spamd_port=int(os.environ["SPAMD_PORT"]), closed_port=closed)
    from ops.faults import fixtures

    fixtures.actors(run)
    fixtures.approved_template(run)
    run.api = ApiServer(children, base, env)
    for _ in range(size.workers):
        run.worker_start()
    for worker in run.workers:
        worker.wait_ready()
    return run


def _parse(argv: list[str]) -> tuple[argparse.Namespace, Size]:
    from ops.faults.scenarios import SCENARIOS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="fewer messages, every scenario (CI)")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--messages", type=int, help="messages per scenario")
    parser.add_argument("--workers", type=int, help="celery worker processes")
    parser.add_argument("--load-seconds", type=float, help="duration of the load scenario")
    parser.add_argument("--latency-ms", nargs="+", type=_latency, metavar="LO-HI",
                        help="the receiver's reply delay; every scenario runs once per value (short: 30-100; long: 0 30-100)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs) afterwards")
    args = parser.parse_args(argv)
    size = SHORT if args.short else LONG
    overrides = {"messages": args.messages, "workers": args.workers, "load_seconds": args.load_seconds, "latencies": args.latency_ms}
    size = Size(**{**size.__dict__, **{k: (tuple(v) if k == "latencies" else v) for k, v in overrides.items() if v}})
    return args, size


def _latency(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    try:
        got = (float(lo), float(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want LO-HI or MS (milliseconds)") from None
    if not 0 <= got[0] <= got[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: want 0 <= LO <= HI")
    return got


def main(argv: list[str]) -> int:
    args, size = _parse(argv)
    from ops.faults.scenarios import SCENARIOS

    base = Path(tempfile.mkdtemp(prefix="sendplane-faults-"))
    children = Children()
    cleanup = _cleanup(children, base, keep=args.keep)
    atexit.register(cleanup)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    began = time.monotonic()
    form = "short" if args.short else "long"
    receivers = ", ".join(f"{latency_text(lat)} ms" for lat in size.latencies)
    print(f"fault suite: {form} form, {size.messages} messages a scenario, {size.workers} workers, receiver latency {receivers}, "
          f"in {base}", flush=True)  # fmt: skip
    run = _bootstrap(size, base, children)
    print(f"  services up in {time.monotonic() - began:.1f} s: PostgreSQL :{run.pg.port}, Redis :{run.redis.port}, "
          f"SMTP sink :{run.sink.port}, API :{run.api.port} ({run.api.kind})", flush=True)  # fmt: skip
    from ops.faults.report import report_scenario, result_line

    verdicts = []
    for n, latency in enumerate(size.latencies, start=1):
        run.sink.latency(*latency)  # the receiver every scenario of this pass talks to
        run.tag = f"-p{n}" if n > 1 else ""
        print(f"=== receiver: every reply {latency_text(latency)} ms", flush=True)
        for name in args.only or list(SCENARIOS):
            verdicts.append(report_scenario(name, SCENARIOS[name], run))
    run.close()
    print(f"  total {time.monotonic() - began:.0f} s", flush=True)
    line, ok = result_line(verdicts, ",".join(latency_text(lat) for lat in size.latencies))
    print(line, flush=True)
    return 0 if ok else 1


def _cleanup(children: Children, base: Path, *, keep: bool) -> Callable[[], None]:
    def cleanup() -> None:
        children.close()
        if not keep:
            import shutil

            shutil.rmtree(base, ignore_errors=True)

    return cleanup


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
