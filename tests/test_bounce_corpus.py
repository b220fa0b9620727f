"""Issue 5 acceptance: the labelled bounce corpus (sisimai's set-of-emails, 589 messages).

Computes and prints kind agreement, enhanced status agreement and the ARF
check, with a per-reason confusion summary, then asserts the bars.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest

from deliverability.bounces import Classification, classify_message
from tests.conftest import CORPORA

BOUNCES = CORPORA / "bounces"
# Issue 5 bars are kind >= 0.95 and status >= 0.90, reached at 0.950 (595/626) and
# 0.909 (542/596), so the floors are the bars. What is left is mostly where the
# labels follow one sisimai MTA module's habit that no wording rule can tell apart
# (an unknown-user reply with no SMTP stage named: "filtered" for some MTAs,
# "userunknown" for others), plus two messages that are really mbox fragments.
KIND_BAR, STATUS_BAR = 0.95, 0.90
KIND_FLOOR = KIND_BAR
STATUS_FLOOR = STATUS_BAR


def expected_kind(row: dict[str, str]) -> str:
    if row["reason"] == "feedback":
        return "complaint"
    if row["reason"] == "vacation":
        return "auto_reply"
    if row["reason"] == "delivered":
        return "delivered"
    return "hard" if row["hardbounce"] == "1" else "soft"


@dataclass
class Figures:
    recipients: int = 0
    kind_ok: int = 0
    labelled_status: int = 0
    status_ok: int = 0
    arf: int = 0
    arf_ok: int = 0
    count_mismatches: list[str] = field(default_factory=list)
    confusion: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (label reason, expected kind, got kind)
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)  # (label reason, our reason)


def _labels() -> dict[str, list[dict[str, str]]]:
    by_file: dict[str, list[dict[str, str]]] = defaultdict(list)
    with (BOUNCES / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            by_file[row["file"]].append(row)
    for rows in by_file.values():
        rows.sort(key=lambda r: int(r["rcpt_index"]))
    return by_file


def compute() -> Figures:
    figures = Figures()
    for name, rows in sorted(_labels().items()):
        got: list[Classification] = classify_message((BOUNCES / name).read_bytes())
        if len(got) != len(rows):
            figures.count_mismatches.append(f"{name}: {len(rows)} labelled, {len(got)} found")
        for row in rows:
            index = int(row["rcpt_index"])
            verdict = got[index] if index < len(got) else None
            want = expected_kind(row)
            have = verdict.kind if verdict else "missing"
            figures.recipients += 1
            figures.kind_ok += have == want
            figures.confusion[(row["reason"], want, have)] += 1
            figures.reasons[(row["reason"], verdict.reason if verdict else "missing")] += 1
            if row["dsn_status"]:
                figures.labelled_status += 1
                figures.status_ok += bool(verdict and verdict.status == row["dsn_status"])
            if row["feedback_type"] or name.startswith("arf-"):
                figures.arf += 1
                figures.arf_ok += have == "complaint"
    return figures


@pytest.fixture(scope="module")
def figures() -> Figures:
    if not (BOUNCES / "labels.csv").exists():
        pytest.skip(f"bounce corpus not found at {BOUNCES}")
    result = compute()
    kind = result.kind_ok / result.recipients
    status = result.status_ok / result.labelled_status
    print(f"\nbounce corpus: {result.recipients} recipients in {len(_labels())} messages")
    print(
        f"  kind agreement:   {result.kind_ok}/{result.recipients} = {kind:.1%}"
        f" (issue bar {KIND_BAR:.0%}, asserted floor {KIND_FLOOR:.0%})"
    )
    print(
        f"  status agreement: {result.status_ok}/{result.labelled_status} = {status:.1%}"
        f" (issue bar {STATUS_BAR:.0%}, asserted floor {STATUS_FLOOR:.0%})"
    )
    print(f"  ARF complaints:   {result.arf_ok}/{result.arf}")
    print(f"  recipient-count mismatches: {len(result.count_mismatches)}")
    for line in result.count_mismatches:
        print(f"    {line}")
    print("  kind confusion (label reason: expected -> got, count), errors only:")
    for (reason, want, have), count in sorted(result.confusion.items()):
        if want != have:
            print(f"    {reason:16} {want:10} -> {have:10} {count}")
    print("  reason mapping (label reason -> ours, count):")
    for (label, ours), count in sorted(result.reasons.items()):
        print(f"    {label:16} -> {ours:18} {count}")
    return result


def test_corpus_is_complete(figures: Figures) -> None:
    assert len(_labels()) == 589
    assert figures.recipients == 626


def test_kind_agrees_for_enough_recipients(figures: Figures) -> None:
    assert figures.kind_ok / figures.recipients >= KIND_FLOOR


def test_status_agrees_for_enough_labelled_recipients(figures: Figures) -> None:
    assert figures.status_ok / figures.labelled_status >= STATUS_FLOOR


def test_every_arf_report_is_a_complaint(figures: Figures) -> None:
    assert figures.arf > 0
    assert figures.arf_ok == figures.arf
