"""classify_message on what a bounce mailbox really receives: cut, mis-encoded, huge or not a bounce at all.

The contract: always a list (``[]`` only for empty input), every entry's kind in
the vocabulary, never an exception, and bounded memory whatever the size.
"""

from __future__ import annotations

import base64
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deliverability.bounces import Classification, classify_message
from deliverability.bounces.parse import MAX_BYTES
from deliverability.bounces.vocabulary import Kind, Reason
from tests.conftest import CORPORA

BOUNCES = CORPORA / "bounces"
CORPUS = sorted(BOUNCES.glob("*.eml")) if BOUNCES.exists() else []
needs_corpus = pytest.mark.skipif(not CORPUS, reason=f"bounce corpus not found at {BOUNCES}")
REASONS = set(Reason.values)


def dsn(
    *, text_part: bytes = b"Your message could not be delivered.\n", charset: str = "us-ascii", cte: str = "7bit", tail: bytes = b""
) -> bytes:
    return (
        b"From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Undelivered Mail Returned to Sender\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain; charset=" + charset.encode() + b"\nContent-Transfer-Encoding: " + cte.encode() + b"\n\n"
        + text_part
        + b"\n--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        b"Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown\n"
        + tail
    )


def assert_well_formed(results: list[Classification]) -> None:
    assert isinstance(results, list)
    for result in results:
        assert result.kind in Kind.values
        assert result.reason in REASONS
        assert isinstance(result.recipient, str) and isinstance(result.status, str)


def test_empty_input_gives_no_entries() -> None:
    assert classify_message(b"") == []


@needs_corpus
@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5, 0.75, 0.98])
def test_corpus_messages_cut_anywhere_still_classify(fraction: float) -> None:
    for path in CORPUS[::7]:
        raw = path.read_bytes()
        results = classify_message(raw[: max(1, int(len(raw) * fraction))])
        assert results, path.name
        assert_well_formed(results)


@needs_corpus
def test_corpus_messages_cut_inside_a_line_and_inside_crlf() -> None:
    for path in CORPUS[::11]:
        raw = path.read_bytes()
        for cut in (1, 17, len(raw) // 3 + 1, raw.rfind(b"\n") if b"\n" in raw else 1):
            assert_well_formed(classify_message(raw[:cut]))


def test_unknown_charset_is_read_as_ascii_compatible_text() -> None:
    results = classify_message(dsn(charset="x-unknown", text_part=b"Zustellung fehlgeschlagen \xe4\xf6\xfc\n"))
    assert [(r.recipient, r.kind, r.status) for r in results] == [("gone@example.org", Kind.HARD, "5.1.1")]


def test_latin1_bytes_in_a_utf8_part_do_not_break_the_report() -> None:
    results = classify_message(dsn(charset="utf-8", text_part=b"R\xe9ception impossible: bo\xeete pleine \xff\xfe\n"))
    assert [(r.recipient, r.kind) for r in results] == [("gone@example.org", Kind.HARD)]


def test_undecodable_base64_and_quoted_printable_parts_are_tolerated() -> None:
    for cte, body in (("base64", b"!!!not*base64###\n===\n"), ("quoted-printable", b"broken =ZZ soft break =\n=E9=\n")):
        results = classify_message(dsn(cte=cte, text_part=body))
        assert [(r.recipient, r.kind) for r in results] == [("gone@example.org", Kind.HARD)], cte


def test_a_dsn_with_a_huge_attached_original_classifies_within_bounded_memory() -> None:
    attachment = base64.encodebytes(b"\x00\xffattachment" * (20 * 1024 * 1024 // 12))
    tail = (
        b"\n--B\nContent-Type: message/rfc822\n\nFrom: sender@example.com\nTo: gone@example.org\nSubject: big\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="C"\n\n--C\nContent-Type: application/octet-stream\n'
        b"Content-Transfer-Encoding: base64\n\n" + attachment + b"\n--C--\n--B--\n"
    )
    raw = dsn(tail=tail)
    assert len(raw) > 20 * 1024 * 1024
    tracemalloc.start()
    try:
        results = classify_message(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(r.recipient, r.kind, r.reason) for r in results] == [("gone@example.org", Kind.HARD, Reason.USER_UNKNOWN)]
    # The parser reads MAX_BYTES of the message, never the whole 27 MB original.
    assert peak < 20 * MAX_BYTES


def test_a_newsletter_is_not_a_bounce() -> None:
    newsletter = (
        b"From: News <news@shop.example.com>\nTo: reader@example.org\nSubject: Our spring sale starts today\n"
        b"MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n"
        b"<html><body><h1>Spring sale</h1><p>Write to help@shop.example.com. <a href='https://x.example'>Unsubscribe</a></p></body></html>\n"
    )
    assert [(r.kind, r.reason) for r in classify_message(newsletter)] == [(Kind.UNKNOWN, Reason.UNDEFINED)]


@pytest.mark.parametrize(
    "junk",
    [b"\x00" * 64, bytes(range(256)) * 40, b"\xff\xfe\xfd" * 1000, b"Content-Type: multipart/report; boundary=\n\n--\n--\n", b":\n" * 5000],
)
def test_binary_junk_gives_unknown_entries_only(junk: bytes) -> None:
    results = classify_message(junk)
    assert results
    assert_well_formed(results)
    assert all(r.kind == Kind.UNKNOWN for r in results)


def test_a_multipart_whose_declared_boundary_never_occurs_is_still_read() -> None:
    raw = dsn().replace(b'boundary="B"', b'boundary="declared-but-absent"')
    assert [(r.recipient, r.kind) for r in classify_message(raw)] == [("gone@example.org", Kind.HARD)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert_well_formed(classify_message(raw))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(dsn())), st.binary(min_size=1, max_size=64))
def test_a_dsn_with_bytes_spliced_in_anywhere_never_raises(position: int, noise: bytes) -> None:
    raw = dsn()
    assert_well_formed(classify_message(raw[:position] + noise + raw[position:]))
