"""``ingest_bounces FILE... | --maildir DIR``: a line per message and a summary; refusals are one stderr line and exit 1.

Real corpus bounces (../shared/corpora/bounces) are the input. Most tests run
the command in-process (``call_command``), inside the test transaction; the
exit-status test runs it as a process against the committed test database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from deliverability.models import FeedbackEvent, Suppression
from tests.celery_workers import database_url
from tests.feedback_helpers import ARF_ABUSE, BOUNCES, GMAIL_USER_UNKNOWN, SES_MAILBOX_FULL, corpus

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent
ARF_SEVEN = "arf-16.eml"  # one complaint report about seven recipients


def path_of(name: str) -> str:
    corpus(name)  # skips when the corpus is missing
    return str(BOUNCES / name)


def ingest(*args: str, status: int = 0) -> tuple[list[str], list[str]]:
    """Run the command in-process; its stdout and stderr lines. ``status`` is the exit status expected."""
    out, err = StringIO(), StringIO()
    if status:
        with pytest.raises(SystemExit) as exited:
            call_command("ingest_bounces", *args, stdout=out, stderr=err)
        assert exited.value.code == status
    else:
        call_command("ingest_bounces", *args, stdout=out, stderr=err)
    return out.getvalue().splitlines(), err.getvalue().splitlines()


# --- FILE mode ----------------------------------------------------------------------------------


def test_files_are_ingested_with_a_line_per_message_and_a_summary(db: Any) -> None:
    files = [path_of(GMAIL_USER_UNKNOWN), path_of(SES_MAILBOX_FULL), path_of(ARF_SEVEN)]
    out, err = ingest(*files)
    assert err == []
    assert out[:2] == [f"{files[0]}: userunknown@example.jp hard/user_unknown", f"{files[1]}: kijitora@example.jp soft/mailbox_full"]
    assert out[2].startswith(f"{files[2]}: kijitora@example.com complaint/feedback, ") and out[2].count("complaint/feedback") == 7
    # None of them is about a message of ours: recorded as unverified evidence, suppressing nobody.
    assert out[3:] == ["3 message(s): 9 new event(s), 0 already recorded, 0 recipient(s) suppressed, 0 refused."]
    assert set(FeedbackEvent.objects.values_list("source", flat=True)) == {"mailbox"}
    assert (FeedbackEvent.objects.filter(verified=False).count(), Suppression.objects.count()) == (9, 0)


def test_ingesting_the_same_files_again_records_nothing_new(db: Any) -> None:
    files = [path_of(GMAIL_USER_UNKNOWN), path_of(ARF_ABUSE)]
    ingest(*files)
    before = list(FeedbackEvent.objects.values_list("pk", flat=True)), Suppression.objects.count()
    out, _ = ingest(*files)
    assert out[-1] == "2 message(s): 0 new event(s), 2 already recorded, 0 recipient(s) suppressed, 0 refused."
    assert (list(FeedbackEvent.objects.values_list("pk", flat=True)), Suppression.objects.count()) == before


def test_a_refused_file_is_one_stderr_line_and_exit_1_in_process(tmp_path: Path) -> None:
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    out, err = ingest(str(empty), path_of(GMAIL_USER_UNKNOWN), status=1)
    assert err == [f"{empty}: the message is empty"]
    assert out[-1] == "1 message(s): 1 new event(s), 0 already recorded, 0 recipient(s) suppressed, 1 refused."


@pytest.mark.django_db(transaction=True)  # the command runs as its own process, on the committed test database
def test_unreadable_paths_are_one_stderr_line_each_the_others_still_go_in_and_the_exit_status_is_1(tmp_path: Path) -> None:
    missing, directory, empty = tmp_path / "missing.eml", tmp_path / "a-directory", tmp_path / "empty.eml"
    directory.mkdir()
    empty.write_bytes(b"")
    good = [path_of(GMAIL_USER_UNKNOWN), path_of(SES_MAILBOX_FULL)]
    env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict)}
    result = subprocess.run(
        [sys.executable, "manage.py", "ingest_bounces", good[0], str(missing), str(directory), str(empty), good[1]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    err = result.stderr.splitlines()
    assert len(err) == 3, err
    assert [line.split(": ", 1)[0] for line in err] == [str(missing), str(directory), str(empty)]
    assert "No such file or directory" in err[0] and "the message is empty" in err[2]
    out = result.stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in out[:-1]] == good
    assert out[-1] == "2 message(s): 2 new event(s), 0 already recorded, 0 recipient(s) suppressed, 3 refused."
    assert sorted(FeedbackEvent.objects.values_list("recipient", flat=True)) == ["kijitora@example.jp", "userunknown@example.jp"]


# --- Maildir mode ---------------------------------------------------------------------------------


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    """new/ (one message, one dot file), cur/ with no flags, flagged but unseen, and seen; an empty tmp/."""
    root = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True)
    for place, name in [
        ("new/1.host", GMAIL_USER_UNKNOWN),
        ("new/.notes", SES_MAILBOX_FULL),  # not a message: dot files are skipped
        ("cur/2.host:2,", SES_MAILBOX_FULL),
        ("cur/3.host:2,F", ARF_ABUSE),
        ("cur/4.host:2,RS", ARF_SEVEN),  # seen already
    ]:
        shutil.copyfile(path_of(name), root / place)
    return root


def listing(root: Path) -> dict[str, list[str]]:
    return {sub: sorted(os.listdir(root / sub)) for sub in ("new", "cur", "tmp")}


def test_maildir_unseen_messages_are_ingested_and_marked_seen(maildir: Path) -> None:
    out, err = ingest("--maildir", str(maildir))
    assert err == []
    assert out == [
        "new/1.host: userunknown@example.jp hard/user_unknown",
        "cur/2.host:2,: kijitora@example.jp soft/mailbox_full",
        "cur/3.host:2,F: redacted@example.net complaint/feedback",
        "3 message(s): 3 new event(s), 0 already recorded, 0 recipient(s) suppressed, 0 refused.",
    ]
    assert listing(maildir) == {
        "new": [".notes"],
        "cur": ["1.host:2,S", "2.host:2,S", "3.host:2,FS", "4.host:2,RS"],
        "tmp": [],
    }
    assert sorted(FeedbackEvent.objects.values_list("recipient", flat=True)) == [
        "kijitora@example.jp", "redacted@example.net", "userunknown@example.jp",
    ]


def test_a_second_maildir_run_ingests_nothing(maildir: Path) -> None:
    ingest("--maildir", str(maildir))
    after_first = listing(maildir), FeedbackEvent.objects.count()
    out, err = ingest("--maildir", str(maildir))
    assert (out, err) == (["0 message(s): 0 new event(s), 0 already recorded, 0 recipient(s) suppressed, 0 refused."], [])
    assert (listing(maildir), FeedbackEvent.objects.count()) == after_first


def test_a_refused_maildir_message_stays_unseen_and_the_rest_are_marked(maildir: Path) -> None:
    (maildir / "new" / "0.host").write_bytes(b"")
    out, err = ingest("--maildir", str(maildir), status=1)
    assert err == ["new/0.host: the message is empty"]
    assert out[-1].endswith(", 1 refused.")
    assert listing(maildir)["new"] == [".notes", "0.host"]
    assert "1.host:2,S" in listing(maildir)["cur"]


@pytest.mark.parametrize("layout", ["empty", "missing", "only-new"])
def test_a_directory_that_is_not_a_maildir_is_one_clear_error(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "box"
    if layout != "missing":
        root.mkdir()
    if layout == "only-new":
        (root / "new").mkdir()
        shutil.copyfile(path_of(GMAIL_USER_UNKNOWN), root / "new" / "1.host")
    with pytest.raises(CommandError) as refused:
        ingest("--maildir", str(root))
    assert str(refused.value) == f"{root}: not a Maildir (no new/ and cur/)"
    assert not FeedbackEvent.objects.exists()


@pytest.mark.parametrize("args", [(), ("--maildir", "/tmp", "some.eml")])
def test_neither_or_both_of_files_and_maildir_is_a_clear_error(db: Any, args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError, match=r"^give either FILE\.\.\. or --maildir DIR$"):
        ingest(*args)
