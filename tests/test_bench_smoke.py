"""Every benchmark's smoke form (``ops/bench/<name> --smoke``) runs its real path in seconds, so a benchmark cannot rot.

Each test runs the bench's own entry as a subprocess, exactly as a person would,
and asserts that it exited 0 (each bench exits non-zero when its path broke: a
crash, a lost or duplicated message, nothing measured) and printed its RESULT
line, which is shown in the test output even under pytest's capture. The
benches that need a database get names derived from this run's database, so two
test runs on one machine (or a bench run by hand) do not drop each other's.
Timings are not asserted: benchmarks print figures, tests assert behaviour.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each smoke takes seconds; the first run on a fresh machine also installs Postfix, the bench extras and
# flufl.bounce, and a loaded machine is slower: this is a bound against a hang, not a figure.
TIMEOUT = 600
RESULT = re.compile(r"^RESULT (?P<fields>.+)$", re.MULTILINE)
FIELD = re.compile(r"(\S+)=(\S+)")


def _suffix() -> str:
    """This run's database name as an identifier fragment (``sendplane_h3``), so parallel test runs do not clash."""
    name = urlsplit(os.environ.get("DATABASE_URL", "")).path.lstrip("/") or "sendplane"
    return re.sub(r"[^a-z0-9_]", "_", name.lower())[:30]


def _dispatch_databases(kind: str = "") -> list[str]:
    return ["--db-sendplane", f"bench_smoke_{_suffix()}_{kind}sp", "--db-postoffice", f"bench_smoke_{_suffix()}_{kind}po"]


def _env() -> dict[str, str]:
    # The benches choose their own databases, broker and settings; this process's test settings must not leak in.
    drop = ("DATABASE_", "CELERY_", "SENDPLANE_", "EMAIL_", "DJANGO_SETTINGS_MODULE")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _run(bench: str, *args: str) -> tuple[str, float]:
    """Run ``ops/bench/<bench> --smoke ARGS``; its output and wall time. Fails the test on a timeout."""
    cmd = [str(ROOT / "ops" / "bench" / bench), "--smoke", *args]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        output = _stop(proc)
        pytest.fail(f"{' '.join(cmd)} did not finish in {TIMEOUT} s:\n{output[-6000:]}")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-6000:]}"
    return output, elapsed


def _stop(proc: subprocess.Popen[str]) -> str:
    """TERM first: the bench entries' traps end the process groups they started; then KILL what is left of ours."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    return output


def _result(bench: str, output: str, elapsed: float, capsys: pytest.CaptureFixture[str], line: re.Pattern[str] = RESULT) -> dict[str, str]:
    """The last RESULT line's fields, after printing the line to the terminal (CI's log shows every bench's figures)."""
    found = list(line.finditer(output))
    assert found, f"ops/bench/{bench} --smoke printed no {line.pattern.split()[0].lstrip('^')} line:\n{output[-6000:]}"
    with capsys.disabled():
        print(f"\n[ops/bench/{bench} --smoke, {elapsed:.1f} s] {found[-1].group(0)}")
    return dict(FIELD.findall(found[-1].group("fields")))


def _has(fields: dict[str, str], *names: str) -> None:
    missing = [n for n in names if n not in fields]
    assert not missing, f"RESULT lacks {missing} (ops/bench/README.md documents them): {fields}"


@pytest.mark.slow
def test_render_smoke_renders_on_both_paths(capsys: pytest.CaptureFixture[str]) -> None:
    output, elapsed = _run("render")
    fields = _result("render", output, elapsed, capsys)
    _has(fields, "recipients", "compile_once_us", "per_recipient_us", "speedup")


@pytest.mark.slow
def test_dispatch_smoke_delivers_every_message_once_on_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    output, elapsed = _run("dispatch", *_dispatch_databases())
    fields = _result("dispatch", output, elapsed, capsys)
    _has(fields, "messages", "sendplane_per_s", "post_office_per_s", "ratio", "lost", "duplicates", "over_rate", "worker_cpu_ms", "cut_off")
    assert (fields["lost"], fields["duplicates"]) == ("0", "0"), output[-6000:]
    assert float(fields["sendplane_per_s"]) > 0 and float(fields["post_office_per_s"]) > 0, output[-6000:]
    assert float(fields["worker_cpu_ms"]) > 0, output[-6000:]


@pytest.mark.slow
def test_dispatch_latency_smoke_sends_to_the_distant_sink_with_the_anchor_and_a_sweep_point(capsys: pytest.CaptureFixture[str]) -> None:
    """``--latency-ms``: both sides and the anchor against a sink 10 ms away, and the worker sweep's path."""
    output, elapsed = _run("dispatch", "--latency-ms", "10", *_dispatch_databases("lat_"))
    fields = _result("dispatch --latency-ms 10", output, elapsed, capsys)
    _has(fields, "messages", "sendplane_per_s", "post_office_per_s", "lost", "duplicates", "over_rate", "worker_cpu_ms", "cut_off",
         "latency_ms", "anchor_per_s", "anchor_ratio", "sweep")
    assert (fields["lost"], fields["duplicates"], fields["cut_off"], fields["latency_ms"]) == ("0", "0", "no", "10"), output[-6000:]
    assert float(fields["sendplane_per_s"]) > 0 and float(fields["anchor_per_s"]) > 0, output[-6000:]
    assert [point.split(":")[0] for point in fields["sweep"].split(",")] == ["1"], output[-6000:]


@pytest.mark.slow
def test_dispatch_profile_smoke_runs_the_trigger_and_worker_loop_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """With ``--dkim``, so the signing path (which production always runs) is measured and cannot rot."""
    output, elapsed = _run("dispatch", "--profile", "--dkim", *_dispatch_databases())
    fields = _result("dispatch --profile --dkim", output, elapsed, capsys, re.compile(r"^PROFILE (?P<fields>.+)$", re.MULTILINE))
    _has(fields, "messages", "received", "lost", "duplicates", "trigger_ms", "send_ms", "send_cpu_ms", "dkim")
    assert fields["received"] == fields["messages"] and fields["duplicates"] == "0", output[-6000:]
    assert fields["dkim"] == "yes", output[-6000:]


@pytest.mark.slow
def test_spam_smoke_scores_with_both_spamd_sizes_and_hits_the_cache(capsys: pytest.CaptureFixture[str]) -> None:
    output, elapsed = _run("spam", "--db", f"bench_spam_smoke_{_suffix()}")
    fields = _result("spam", output, elapsed, capsys)
    _has(fields, "versions", "scored_per_s_m2", "scored_per_s_m1", "cache_hit_rate", "assess_per_s_cached", "assess_per_s_uncached")


@pytest.mark.slow
def test_bounces_smoke_classifies_against_flufl_bounce(capsys: pytest.CaptureFixture[str]) -> None:
    output, elapsed = _run("bounces")
    fields = _result("bounces", output, elapsed, capsys)
    _has(fields, "messages", "sendplane_msgs_per_s", "sendplane_recipients", "flufl.bounce_msgs_per_s")


@pytest.mark.slow
def test_detector_smoke_steps_and_agrees_with_the_python_loop(capsys: pytest.CaptureFixture[str]) -> None:
    output, elapsed = _run("detector")
    fields = _result("detector", output, elapsed, capsys)
    _has(fields, "domains", "pass_s", "update_ms_median", "update_ms_p95", "peer_update_ms_median", "naive_update_ms", "ok")


@pytest.mark.slow
def test_esp_smoke_sends_every_message_with_calls_overlapping_at_the_sink(capsys: pytest.CaptureFixture[str]) -> None:
    """BackendTransport against the Postmark-speaking sink: concurrency 1 (the peer) and 32, every message sent, calls overlapped."""
    output, elapsed = _run("esp")
    fields = _result("esp", output, elapsed, capsys)
    _has(fields, "messages", "delay_ms", "concurrency_1_per_s", "concurrency_32_per_s", "speedup", "top_concurrency", "max_in_flight",
         "sent", "failed", "received")
    assert fields["sent"] == fields["messages"] == fields["received"] and fields["failed"] == "0", output[-6000:]
    assert int(fields["max_in_flight"]) > 1, output[-6000:]
