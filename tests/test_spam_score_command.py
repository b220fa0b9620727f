"""``manage.py spam_score FILE`` as an operator runs it: a real process, the real spamd (ops/test starts it)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import CORPORA

ROOT = Path(__file__).resolve().parent.parent
SPAM_CORPORA = CORPORA / "spam"


def _spam_score(path: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "spam_score", str(path)],
        check=False, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the with block ends: nothing listens there


def _one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_gtube_is_spam_with_its_rule() -> None:
    result = _spam_score(SPAM_CORPORA / "sample-spam.txt")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["score"] >= 1000
    assert data["threshold"] == 5.0
    assert data["is_spam"] is True
    gtube = [rule for rule in data["rules"] if rule["name"] == "GTUBE"]
    assert gtube, data["rules"]
    assert gtube[0]["score"] >= 1000
    assert "Generic Test for Unsolicited Bulk Email" in gtube[0]["description"]
    assert all(set(rule) == {"name", "score", "description"} for rule in data["rules"])
    assert data["spamd_version"].startswith("4.")


def test_sample_nonspam_is_not_spam() -> None:
    result = _spam_score(SPAM_CORPORA / "sample-nonspam.txt")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["is_spam"] is False
    assert data["score"] < data["threshold"] == 5.0
    assert "GTUBE" not in {rule["name"] for rule in data["rules"]}


def test_spamd_down_is_one_line_and_exit_1() -> None:
    port = _closed_port()
    result = _spam_score(SPAM_CORPORA / "sample-spam.txt", SPAMD_PORT=str(port))
    assert result.returncode == 1
    assert result.stdout == ""
    line = _one_line(result.stderr)
    assert line.startswith("not scored:"), line
    assert f"127.0.0.1:{port}" in line and "unreachable" in line, line


def test_missing_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-message.eml"
    result = _spam_score(missing)
    assert result.returncode == 1
    assert result.stdout == ""
    line = _one_line(result.stderr)
    assert str(missing) in line and "cannot read" in line, line


def test_unreadable_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    # A directory cannot be read as a file, also for root (for whom mode 000 is readable).
    result = _spam_score(tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    line = _one_line(result.stderr)
    assert str(tmp_path) in line and "cannot read" in line, line
