"""``detect_anomalies --counts FILE.csv``: the beat task's detector replayed over a CSV; bad input is one line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from deliverability import detector
from tests.scenarios import Scenario, generate

ROOT = Path(__file__).resolve().parent.parent


def write_counts(path: Path, scenario: Scenario, names: list[str]) -> None:
    """One row per (domain, minute) with any traffic, shuffled: the command must not rely on order."""
    rows = [
        (m, names[d], int(scenario.sent[d, m]), int(scenario.bounced[d, m]), int(scenario.complained[d, m]))
        for d, m in zip(*np.nonzero(scenario.sent + scenario.bounced + scenario.complained), strict=True)
    ]
    np.random.default_rng(7).shuffle(rows)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["minute", "domain", "sent", "bounced", "complained"])
        writer.writerows(rows)


def run(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    try:
        call_command("detect_anomalies", "--counts", str(path))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, [line for line in out.splitlines() if line], err


def test_replay_prints_the_detectors_own_decisions_for_incident_domains_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = generate(seed=5, domains=60, minutes=360)
    names = [f"d{i}.example.com" for i in range(60)]
    write_counts(tmp_path / "counts.csv", scenario, names)
    code, lines, err = run(tmp_path / "counts.csv", capsys)
    assert code == 0 and err == ""
    printed = [json.loads(line) for line in lines]
    assert printed and all(set(p) == {"domain", "minute", "signal", "evidence"} for p in printed)
    for line in printed:
        index = names.index(line["domain"])
        assert scenario.onset[index] >= 0, f"healthy {line['domain']} paused"
        assert line["minute"] >= scenario.onset[index]
    # The same code as the beat task: replaying the arrays directly gives the same decisions
    # (without the reputation column, which the CSV does not carry).
    direct = detector.replay(scenario.sent, scenario.bounced, scenario.complained)
    assert sorted((names[d], m, s) for d, m, s, _ in direct) == sorted((p["domain"], p["minute"], p["signal"]) for p in printed)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("minute,domain,sent,bounced\n0,a.example,10,1\n", "missing column(s) complained"),
        ("minute,domain,sent,bounced,complained\n0,a.example,-3,0,0\n", "line 2: sent must not be negative"),
        ("minute,domain,sent,bounced,complained\n0,a.example,10,one,0\n", "line 2: bounced must be a whole number"),
        ("minute,domain,sent,bounced,complained\nx,a.example,10,1,0\n", "line 2: minute must be a whole number"),
        ("minute,domain,sent,bounced,complained\n0,,10,1,0\n", "line 2: empty domain"),
        ("minute,domain,sent,bounced,complained\n", "no rows"),
    ],
)
def test_bad_counts_are_one_line_on_stderr_and_nothing_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "counts.csv"
    path.write_text(content)
    code, lines, err = run(path, capsys)
    assert code == 1 and lines == []
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_missing_file_from_the_shell_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "detect_anomalies", "--counts", str(tmp_path / "nope.csv")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"{tmp_path / 'nope.csv'}: No such file or directory"]
