"""The commands' progress bar: drawn on a terminal only, a thousand redraws at most, wiped before other lines."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import OutputWrapper
from hypothesis import given
from hypothesis import strategies as st

from controlplane.progress import WIDTH, ProgressBar, bar_line
from tests.feedback_helpers import GMAIL_USER_UNKNOWN, SES_MAILBOX_FULL


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_line_fills_in_proportion_and_shows_the_detail() -> None:
    assert bar_line(0, 4) == f"[{'.' * WIDTH}] 0/4"
    assert bar_line(1, 4, width=8, detail="3 new") == "[##......] 1/4 3 new"
    assert bar_line(4, 4, width=8) == "[########] 4/4"
    assert bar_line(0, 0, width=4) == "[....] 0/0"


@given(done=st.integers(min_value=0, max_value=10**6), total=st.integers(min_value=0, max_value=10**6))
def test_bar_line_is_always_the_same_width(done: int, total: int) -> None:
    bar = bar_line(min(done, total), total, width=20)
    assert len(bar.split("]")[0]) == 21


def test_nothing_is_drawn_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, 10)
    for done in range(1, 11):
        bar.update(done)
    bar.clear()
    assert stream.getvalue() == "" and not bar.enabled


def test_a_terminal_gets_the_bar_redrawn_in_place() -> None:
    stream = Terminal()
    bar = ProgressBar(stream, 4, label="ingest")
    bar.update(1, "1 new")
    bar.update(4, "3 new")
    out = stream.getvalue()
    assert out.count("\r\x1b[K") == 2 and "\n" not in out
    assert out.endswith(f"ingest [{'#' * WIDTH}] 4/4 3 new")


def test_redraws_are_bounded_to_a_thousand_however_many_updates() -> None:
    stream = Terminal()
    bar = ProgressBar(stream, 44_640)  # a month of minutes
    for done in range(1, 44_641):
        bar.update(done)
    assert 900 <= stream.getvalue().count("\r") <= 1001
    assert stream.getvalue().endswith("44640/44640")


def test_clear_wipes_the_bar_and_the_next_update_redraws_it() -> None:
    stream = Terminal()
    bar = ProgressBar(stream, 1000)
    bar.update(1)
    bar.clear()
    assert stream.getvalue().endswith("\r\x1b[K")
    bar.update(1)  # the same step, but the bar is gone: draw it again
    assert stream.getvalue().endswith("1/1000")
    bar.clear()
    bar.clear()  # nothing drawn: nothing written
    assert stream.getvalue().count("\r\x1b[K") == 4


def test_through_djangos_output_wrapper_no_newline_is_added_and_stderr_is_not_styled() -> None:
    terminal = Terminal()
    wrapper = OutputWrapper(terminal)
    wrapper.style_func = lambda text: f"<red>{text}</red>"  # what BaseCommand sets on stderr when it is a TTY
    bar = ProgressBar(wrapper, 2)
    assert bar.enabled
    bar.update(2)
    assert terminal.getvalue() == f"\r\x1b[K[{'#' * WIDTH}] 2/2"


def test_enabled_can_be_forced_either_way() -> None:
    assert ProgressBar(io.StringIO(), 1, enabled=True).enabled
    assert not ProgressBar(Terminal(), 1, enabled=False).enabled


# --- the commands that use it ------------------------------------------------------------------


def test_ingest_bounces_draws_on_a_terminal_stderr_and_always_prints_the_summary(db: Any, tmp_path: Path) -> None:
    from tests.test_ingest_bounces_command import path_of

    files = [path_of(GMAIL_USER_UNKNOWN), path_of(SES_MAILBOX_FULL), str(tmp_path / "missing.eml")]
    out, err = Terminal(), Terminal()
    with pytest.raises(SystemExit):
        call_command("ingest_bounces", *files, stdout=out, stderr=err)
    assert "ingest [" in err.getvalue() and "3/3 2 new, 1 refused" in err.getvalue()
    assert "missing.eml: No such file or directory" in err.getvalue()
    assert err.getvalue().endswith("\r\x1b[K")  # wiped at the end: the summary stands alone
    assert out.getvalue().splitlines()[-1] == "2 message(s): 2 new event(s), 0 already recorded, 0 recipient(s) suppressed, 1 refused."
    piped_out, piped_err = io.StringIO(), io.StringIO()
    call_command("ingest_bounces", *files[:2], stdout=piped_out, stderr=piped_err)
    assert piped_err.getvalue() == "" and "2 already recorded" in piped_out.getvalue()


def test_detect_anomalies_keeps_stdout_pure_json_lines_while_stderr_shows_minutes(tmp_path: Path) -> None:
    from tests.scenarios import generate
    from tests.test_detect_anomalies_command import write_counts

    scenario = generate(seed=5, domains=20, minutes=360)
    write_counts(tmp_path / "counts.csv", scenario, [f"d{i}.example.com" for i in range(20)])
    out, err = Terminal(), Terminal()
    call_command("detect_anomalies", "--counts", str(tmp_path / "counts.csv"), stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    assert lines and all(json.loads(line)["domain"].endswith(".example.com") for line in lines)
    assert "\r" not in out.getvalue() and "minutes [" in err.getvalue() and "360/360" in err.getvalue()
