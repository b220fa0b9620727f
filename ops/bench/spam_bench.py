"""Spam sandbox throughput: versions scored per second by spamd, and the content-hash cache.

Run: ops/bench/spam [--versions N] [--cache-versions M] [--threads T] [--smoke]. Three parts:

1. Throughput against a private spamd (-L, loopback, a free port) with two
   children (-m 2, as ops/test and production run it), then the peer: the same
   messages against -m 1. N distinct versions (the newsletter fixture and the
   examples, varied subjects and sample values) are rendered into the exact
   message the sandbox sends (``sandbox_message``) before timing, then scored
   with ``deliverability.spam.spam_score`` from T client threads, twice each
   after a warm-up. No database.
2. The cache, against the -m 2 spamd: a throwaway PostgreSQL database
   (``bench_spam``, created, migrated and dropped here), M versions created
   through ``version_create`` of which ~40% repeat an earlier version's content
   (same content hash, in another variant or the same one), then
   ``version_assess`` on each in creation order, one at a time as the beat does.
   Hit rate = assessments with ``from_cache`` / M. Then the same M versions again
   with the cache bypassed in this process only (the assessments deleted and
   ``_cached_report`` answering None): scored per second with and without cache.

Figures are wall-clock on this machine; compare ratios across machines. The
last line is RESULT ... for scripts. ``--smoke`` (CI) runs all three parts on a
handful of versions, against its own database (``bench_spam_smoke``, or
``--db``); either form exits 1 when nothing was scored or the cache missed a
repeated content.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
BENCH = ROOT / "ops" / "bench"
Throughput = tuple[float, list[float], float]  # versions/s over all passes, per-pass rates, median score
EXAMPLES = ROOT / "ops" / "examples"
SUBJECTS = [
    "{{ first_name }}, the winter edit is here",
    "New in: {{ brand }} picks for this week",
    "Your {{ brand }} update",
    "A quick hello from {{ brand }}",
    "{{ first_name }}, three things to try first",
    "Last chance: {{ brand }} winter sale ends soon",
    "What's new this month at {{ brand }}",
    "{{ first_name }}, we saved these for you",
]


# --- Messages -------------------------------------------------------------------------------------


def django_setup(db_name: str) -> None:
    """Django against the bench's own database; imports of the project come after this, inside the functions."""
    import django

    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{db_name}"
    os.environ.setdefault("SECRET_KEY", "sendplane-bench-only-not-a-secret-0123456789")
    os.environ.setdefault("SENDPLANE_INSECURE_PUBLIC_URL", "true")  # loopback only: no recipient follows its links
    os.environ["CELERY_BROKER_URL"] = "memory://localhost/"  # version_create's on-commit hint goes nowhere: this driver assesses
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    django.setup()


def contents(n: int) -> list[Any]:
    """``n`` distinct versions: newsletter and the examples in turn, each with its own subject and values."""
    from newsletter_context import recipient

    from templates_registry.rendering import VersionContent
    from templates_registry.services import content_hash

    newsletter = (BENCH / "fixtures" / "newsletter.mjml").read_text(encoding="utf-8")
    examples = json.loads((EXAMPLES / "examples.json").read_text(encoding="utf-8"))
    welcome = {v["mjml_file"]: (EXAMPLES / v["mjml_file"]).read_text(encoding="utf-8") for v in examples["templates"][0]["variants"]}
    sources = [("newsletter", newsletter)] + sorted(welcome.items())
    out = []
    for i in range(n):
        name, mjml = sources[i % len(sources)]
        if name == "newsletter":
            variables = recipient(i)
        else:
            variables = {**examples["variables"], "first_name": f"Ana{i}", "email": f"ana{i}@example.com"}
        subject = f"{SUBJECTS[i % len(SUBJECTS)]} ({i // len(SUBJECTS) + 1})"
        out.append(VersionContent(mjml_body=mjml, subject=subject, sender_name="{{ brand }}", preheader="", variables=variables))
    hashes = {content_hash(c) for c in out}
    assert len(hashes) == n, "versions must be distinct"
    return out


def message(content: Any) -> bytes:
    from deliverability import assessments
    from templates_registry.models import VariantVersion
    from templates_registry.rendering import compile_version
    from templates_registry.services import content_hash

    rendered = compile_version(content).render(content.variables)
    return assessments.sandbox_message(VariantVersion(content_hash=content_hash(content)), rendered, None)


# --- A private spamd ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Spamd:
    """spamd in the foreground in its own process group; the group is listed in the wrapper's pid file."""

    def __init__(self, children: int, log_dir: Path) -> None:
        self.children, self.port = children, free_port()
        self.log = log_dir / f"spamd-m{children}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                ["spamd", "-L", "-i", "127.0.0.1", "-p", str(self.port), "-m", str(self.children),
                 "--min-children", str(self.children), "-s", "stderr"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        pidfile = os.environ.get("SPAM_BENCH_PIDFILE")
        if pidfile:
            with open(pidfile, "a") as f:
                f.write(f"{self.process.pid}\n")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            ping = subprocess.run(["spamc", "-p", str(self.port), "-K"], check=False, stdin=subprocess.DEVNULL, capture_output=True)
            if ping.returncode == 0:
                from django.conf import settings

                settings.SPAMD_PORT = self.port
                return self
            time.sleep(0.5)
        self.stop()
        raise SystemExit(f"spamd -m {self.children} did not start on 127.0.0.1:{self.port}; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=15)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(process.pid, signal.SIGKILL)  # children that outlived spamd
        except ProcessLookupError:
            pass


# --- Throughput -----------------------------------------------------------------------------------


def throughput(raws: list[bytes], threads: int, rounds: int) -> Throughput:
    """Versions scored per second over ``rounds`` passes, per-pass rates, and the median score."""
    from deliverability.spam import spam_score

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(spam_score, raws[: threads * 2]))  # warm-up: every child has scored something
        rates, scores = [], []
        total_start = time.perf_counter()
        for _ in range(rounds):
            start = time.perf_counter()
            reports = list(pool.map(spam_score, raws))
            rates.append(len(raws) / (time.perf_counter() - start))
            scores = [r.score for r in reports]
        total = time.perf_counter() - total_start
    return len(raws) * rounds / total, rates, sorted(scores)[len(scores) // 2]


# --- The cache (database) -------------------------------------------------------------------------


def admin_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(statement)


def cache_run(total: int, repeat_share: float, seed: int) -> dict[str, Any]:
    from django.core.management import call_command

    from deliverability import assessments
    from templates_registry import services
    from templates_registry.models import VersionAssessment

    call_command("migrate", verbosity=0, interactive=False)
    rng = random.Random(seed)
    repeats = round(total * repeat_share)
    distinct = contents(total - repeats)
    # Which positions repeat earlier content: never the first few, and each repeats one already created.
    repeat_at = set(rng.sample(range(3, total), repeats))
    template = services.template_create(slug="bench-spam", name="Spam bench")
    variants = [services.variant_create(template=template, slug=f"v{k}") for k in range(4)]
    versions: list[Any] = []
    made: list[Any] = []
    next_new = 0
    for i in range(total):
        if i in repeat_at:
            content = rng.choice(made)
        else:
            content, next_new = distinct[next_new], next_new + 1
            made.append(content)
        versions.append(
            services.version_create(
                variant=variants[i % len(variants)], mjml_body=content.mjml_body, subject=content.subject,
                sender_name=content.sender_name, preheader=content.preheader, variables=content.variables,
            )
        )
    unique_hashes = len({v.content_hash for v in versions})

    def assess_all() -> tuple[float, int, list[float]]:
        start, hits, durations = time.perf_counter(), 0, []
        for version in versions:
            t = time.perf_counter()
            assessment = assessments.version_assess(version_id=version.pk)
            durations.append((time.perf_counter() - t) * 1000)
            assert assessment is not None and assessment.state == "scored", assessment and assessment.not_scored_reason
            hits += assessment.from_cache
        return time.perf_counter() - start, hits, durations

    with_cache_s, hits, durations = assess_all()
    cached = {a.version_id for a in VersionAssessment.objects.filter(from_cache=True)}
    timed = list(zip(durations, versions, strict=True))
    hit_ms = [d for d, v in timed if v.pk in cached]
    miss_ms = [d for d, v in timed if v.pk not in cached]
    big = [d for d, v in timed if v.pk not in cached and len(v.mjml_body) > 20_000]  # the newsletter
    small = [d for d, v in timed if v.pk not in cached and len(v.mjml_body) <= 20_000]  # the examples

    VersionAssessment.objects.all().delete()
    real_cached_report = assessments._cached_report
    assessments._cached_report = lambda version: None  # this process only: every version goes to spamd
    try:
        without_cache_s, no_hits, _ = assess_all()
    finally:
        assessments._cached_report = real_cached_report
    assert no_hits == 0
    return {
        "versions": total, "unique": unique_hashes, "hits": hits, "repeats": repeats,
        "with_cache_s": with_cache_s, "without_cache_s": without_cache_s,
        "hit_ms": sorted(hit_ms)[len(hit_ms) // 2] if hit_ms else 0.0,
        "miss_ms": sorted(miss_ms)[len(miss_ms) // 2] if miss_ms else 0.0,
        "newsletter_ms": median(big), "welcome_ms": median(small),
    }


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else 0.0


# --- Main -----------------------------------------------------------------------------------------


# ``--smoke`` (CI): both spamd sizes, the cache and the bypass, on a handful of versions (the newsletter among them).
SMOKE = {"versions": 3, "threads": 2, "rounds": 1, "cache_versions": 4, "repeat_share": 0.25, "db": "bench_spam_smoke"}


def args_parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help=f"seconds: {SMOKE} unless given")
    parser.add_argument("--versions", type=int, default=40, help="distinct versions scored per pass (throughput)")
    parser.add_argument("--threads", type=int, default=4, help="client threads sending to spamd (throughput)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the versions per spamd (throughput)")
    parser.add_argument("--cache-versions", type=int, default=100, help="versions created and assessed (cache)")
    parser.add_argument("--repeat-share", type=float, default=0.4, help="share of those repeating earlier content")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--db", default="bench_spam", help="the database created, migrated and dropped here")
    if parser.parse_known_args()[0].smoke:
        parser.set_defaults(**SMOKE)  # explicit options still win
    return parser.parse_args()


def main() -> int:
    args = args_parse()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    django_setup(args.db)
    log_dir = Path(tempfile.mkdtemp(prefix="sendplane-bench-spam-"))
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    raws = [message(c) for c in contents(args.versions)]
    print(f"{len(raws)} distinct versions rendered into sandbox messages in {time.perf_counter() - start:.1f} s "
          f"({sum(map(len, raws)) / len(raws) / 1024:.1f} KB on average); spamd logs in {log_dir}")
    results, cache = measure(args, raws, log_dir)
    report(args, raws, results, cache, load_before)
    problems = broken(results, cache)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


def measure(args: argparse.Namespace, raws: list[bytes], log_dir: Path) -> tuple[dict[int, Throughput], dict[str, Any]]:
    """Throughput against -m 2 and the cache against it, then throughput against -m 1; the database lives for this only."""
    results: dict[int, Throughput] = {}
    admin_sql(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{args.db}"')
    try:
        with Spamd(2, log_dir) as spamd:
            results[2] = throughput(raws, args.threads, args.rounds)
            say_throughput(2, spamd.port, results[2], args.threads)
            cache = cache_run(args.cache_versions, args.repeat_share, args.seed)
        with Spamd(1, log_dir) as spamd:
            results[1] = throughput(raws, args.threads, args.rounds)
            say_throughput(1, spamd.port, results[1], args.threads)
    finally:
        from django.db import connections

        connections.close_all()
        admin_sql(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    return results, cache


def say_throughput(children: int, port: int, result: Throughput, threads: int) -> None:
    rate, passes, score = result
    print(f"spamd -m {children} (port {port}): {rate:.2f} versions/s "
          f"(passes {', '.join(f'{r:.2f}' for r in passes)}; {threads} client threads; median score {score:g})")


def report(args: argparse.Namespace, raws: list[bytes], results: dict[int, Throughput], cache: dict[str, Any], load_before: float) -> None:
    m2, m1 = results[2][0], results[1][0]
    sizes = sorted(len(r) for r in raws)
    busy = " (other work on this machine: figures are low)" if load_before > 0.5 else ""
    print(f"message sizes: {sizes[0] / 1024:.0f}-{sizes[-1] / 1024:.0f} KB; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after on {os.cpu_count()} CPUs{busy}")
    print(f"children 2 vs 1: {m2 / m1:.2f}x")
    rate = cache["hits"] / cache["versions"]
    with_cache = cache["versions"] / cache["with_cache_s"]
    without_cache = cache["versions"] / cache["without_cache_s"]
    print(f"cache: {cache['versions']} versions, {cache['unique']} distinct contents, {cache['hits']} from cache "
          f"(hit rate {rate:.2f}); version_assess one at a time against -m 2: median {cache['miss_ms']:.0f} ms scored by spamd, "
          f"{cache['hit_ms']:.1f} ms from cache (scored by spamd: newsletter median {cache['newsletter_ms']:.0f} ms, "
          f"welcome examples {cache['welcome_ms']:.0f} ms)")
    print(f"cache: {with_cache:.2f} versions/s with the cache ({cache['with_cache_s']:.1f} s), "
          f"{without_cache:.2f} versions/s without ({cache['without_cache_s']:.1f} s): {with_cache / without_cache:.2f}x")
    print(f"RESULT versions={args.versions} scored_per_s_m2={m2:.2f} scored_per_s_m1={m1:.2f} cache_hit_rate={rate:.2f} "
          f"assess_per_s_cached={with_cache:.2f} assess_per_s_uncached={without_cache:.2f}")


def broken(results: dict[int, Throughput], cache: dict[str, Any]) -> list[str]:
    """The path broke (exit 1): nothing scored, or the cache missed a version whose content was already scored."""
    problems = [f"spamd -m {m} scored nothing" for m, (rate, _, _) in results.items() if not rate > 0]
    if cache["hits"] != cache["repeats"]:
        problems.append(f"the cache answered {cache['hits']} of {cache['repeats']} repeated contents")
    return problems


if __name__ == "__main__":
    sys.exit(main())
