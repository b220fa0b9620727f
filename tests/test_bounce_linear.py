"""Issue 15, class 4: the classifier's time is linear in its input, whatever the input.

Anyone can mail the bounce address. Before the fix 40 KB of ``aaaa...@`` took
seconds (every start position rescanned the run) and a 1.1 MB message ran past
two minutes. The readers now use bounded or possessive patterns and examine capped
amounts (``parse.MAX_TEXT`` of prose, ``MAX_DIAGNOSTIC`` per Diagnostic-Code,
``MAX_RECIPIENTS`` per report). Sizes are chosen so that quadratic work takes minutes
and linear work well under a second; ceilings are generous for a loaded 2-core machine.
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deliverability.bounces import classify_message

HEAD = b"From: MAILER-DAEMON@example.com\r\nTo: x@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
MB = 1024 * 1024
CEILING_1MB = 8.0  # seconds; linear takes ~0.1-1.5 s here, the quadratic code took minutes


def text_bounce(body: bytes) -> bytes:
    return HEAD + b"\r\n" + body


def html_bounce(body: bytes) -> bytes:
    return HEAD + b"Content-Type: text/html\r\n\r\n" + body


def dsn(status_part: bytes) -> bytes:
    return (
        HEAD + b'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        + status_part + b"\r\n--b--\r\n"
    )


def elapsed(raw: bytes) -> float:
    start = time.perf_counter()
    result = classify_message(raw)
    took = time.perf_counter() - start
    assert result  # never "not looked at"
    return took


def fill(unit: bytes, size: int) -> bytes:
    return unit * (size // len(unit) + 1)


def test_the_issue_attack_40_kb_of_address_like_text_is_fast() -> None:
    # Before: 5.4 s on this machine (13.5 s in the report). Now about 0.04 s.
    assert elapsed(text_bounce(b"a" * 40_000 + b"@")) < 1.0


def test_the_issue_attack_at_1_1_mb_is_fast() -> None:
    assert elapsed(text_bounce(b"a" * 1_100_000 + b"@")) < CEILING_1MB


# Units that each hit one former backtracking pattern: unbounded local parts before "@",
# two adjacent "\s*", a domain followed by a failing look-ahead, a prefix glued to the
# address, "spamhaus.*dbl", "<[^>]+>" without ">", SES arrays without "]".
UNITS = [
    b"a", b"a@", b"a.", b"a@a.", b"@a.", b" ", b"\t", b"for", b"<", b"recipient: ", b"550 ", b"5.1.", b"spamhaus",
    b"_", b"-", b"\n", b'"', b"x@example.com", b"to:", b"Final-Recipient: ", b"=", b"#",
]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(UNITS), min_size=1, max_size=4), st.sampled_from([text_bounce, html_bounce]))
def test_a_1_mb_adversarial_body_classifies_within_the_ceiling(units: list[bytes], wrap: object) -> None:
    body = fill(b"".join(units), MB)[:MB]
    assert elapsed(wrap(body)) < CEILING_1MB  # type: ignore[operator]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(UNITS), min_size=1, max_size=3))
def test_time_grows_linearly_from_n_to_16n(units: list[bytes]) -> None:
    # Quadratic work grows 256-fold from 2 KB to 32 KB, linear 16-fold: best of three, with slack.
    unit = b"".join(units)
    small, large = (min(elapsed(text_bounce(fill(unit, n)[:n])) for _ in range(3)) for n in (2 * 1024, 32 * 1024))
    assert large < 64 * small + 0.05


def test_a_dsn_listing_thousands_of_recipients_is_fast() -> None:
    blocks = b"".join(b"Final-Recipient: rfc822; u%d@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n" % i for i in range(15_000))
    raw = dsn(blocks)
    assert len(raw) > MB
    assert elapsed(raw) < CEILING_1MB
    assert len(classify_message(raw)) == 20  # parse.MAX_RECIPIENTS


def test_a_1_mb_diagnostic_code_is_fast() -> None:
    fields = b"Final-Recipient: rfc822; u@example.com\r\nAction: failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; "
    raw = dsn(fields + fill(b"a@", MB) + b"\r\n")
    assert elapsed(raw) < CEILING_1MB


def test_a_header_naming_100_000_failed_recipients_is_fast() -> None:
    failed = b",".join(b"u%d@example.com" % i for i in range(100_000))
    raw = HEAD + b"X-Failed-Recipients: " + failed + b"\r\n\r\n" + fill(b"word ", 200_000)
    assert elapsed(raw) < CEILING_1MB


def test_an_ses_notification_without_closing_brackets_is_fast() -> None:
    body = b'{"notificationType":"Delivery",' + fill(b'"delivery":{"recipients":["a@b', MB)
    raw = b"From: no-reply@sns.amazonaws.com\r\nSubject: AWS Notification\r\n\r\n" + body
    assert elapsed(raw) < CEILING_1MB
