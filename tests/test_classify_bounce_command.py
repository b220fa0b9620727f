"""``classify_bounce FILE...``: one JSON line per recipient; bad input is unknown or one stderr line, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deliverability.bounces import classify_message
from tests.conftest import CORPORA

ROOT = Path(__file__).resolve().parent.parent
BOUNCES = CORPORA / "bounces"
FIELDS = {"file", "recipient", "kind", "reason", "status", "feedback_type"}
KINDS = {"hard", "soft", "complaint", "auto_reply", "delivered", "unknown"}

DSN = b"""From: MAILER-DAEMON@mx.example.net
To: sender@example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; gone@example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown

Final-Recipient: rfc822; full@example.org
Action: failed
Status: 4.2.2
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full

--B
Content-Type: text/rfc822-headers

From: sender@example.com
To: gone@example.org, full@example.org
Message-ID: <orig-1@example.com>
Return-Path: <bounces+ab12cd@example.com>
Subject: hello

--B--
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "classify_bounce", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_one_json_line_per_recipient(tmp_path: Path) -> None:
    path = tmp_path / "dsn.eml"
    path.write_bytes(DSN)
    result = run(str(path))
    assert result.returncode == 0, result.stderr
    out = lines(result)
    assert [o["recipient"] for o in out] == ["gone@example.org", "full@example.org"]
    assert all(FIELDS <= o.keys() and o["file"] == str(path) for o in out)
    assert (out[0]["kind"], out[0]["reason"], out[0]["status"]) == ("hard", "user_unknown", "5.1.1")
    assert (out[1]["kind"], out[1]["reason"], out[1]["status"]) == ("soft", "mailbox_full", "4.2.2")
    assert out[0]["message_id"] == "<orig-1@example.com>"
    assert out[0]["verp"] == "ab12cd"


def test_several_files_and_arf(tmp_path: Path) -> None:
    arf, dsn = BOUNCES / "arf-16.eml", tmp_path / "dsn.eml"
    dsn.write_bytes(DSN)
    out = lines(run(str(arf), str(dsn)))
    from_arf = [o for o in out if o["file"] == str(arf)]
    assert len(from_arf) == 7
    assert {(o["kind"], o["feedback_type"]) for o in from_arf} == {("complaint", "abuse")}
    assert len(out) == 9


def test_non_bounce_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "hello.eml"
    path.write_bytes(b"From: a@example.com\nTo: b@example.com\nSubject: lunch?\n\nSee you at noon.\n")
    out = lines(run(str(path)))
    assert len(out) == 1 and out[0]["kind"] == "unknown"


def test_malformed_truncated_huge_and_wrong_charset_never_crash(tmp_path: Path) -> None:
    cases = {
        "empty.eml": b"",
        "garbage.eml": bytes(range(256)) * 50,
        "truncated.eml": DSN[: len(DSN) // 2],
        "charset.eml": DSN.replace(b"Content-Type: text/plain", b"Content-Type: text/plain; charset=x-no-such-charset")
        + "Diagnostic: caf\u00e9 \xff\xfe".encode("latin-1"),
        "huge.eml": DSN.replace(b"--B--", b"--B\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
                                + b"QUFB" * 3_000_000 + b"\n--B--"),
        "broken-mime.eml": b"Content-Type: multipart/report; boundary=\"X\"\n\n"
        b"--X\nContent-Type: message/delivery-status\n\nFinal-Recipient\n--X",
    }
    paths = []
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    result = run(*paths)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = lines(result)
    assert {o["file"] for o in out} == set(paths)
    assert all(o["kind"] in KINDS for o in out)
    huge = [o for o in out if o["file"].endswith("huge.eml")]
    assert [o["recipient"] for o in huge] == ["gone@example.org", "full@example.org"]


def test_missing_file_is_one_line_and_exit_one(tmp_path: Path) -> None:
    result = run(str(tmp_path / "nope.eml"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "nope.eml" in result.stderr and "Traceback" not in result.stderr


def test_directory_is_one_line_and_exit_one(tmp_path: Path) -> None:
    result = run(str(tmp_path))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_classify_message_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    for verdict in classify_message(raw):
        assert verdict.kind in KINDS


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(DSN)), st.binary(max_size=200))
def test_classify_message_never_raises_on_mangled_dsn(cut: int, noise: bytes) -> None:
    for verdict in classify_message(DSN[:cut] + noise + DSN[cut:]):
        assert verdict.kind in KINDS
