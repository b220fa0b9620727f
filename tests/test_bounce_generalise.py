"""Issue 16: bounce reading that generalises beyond the corpus it was tuned on.

Each test is a hand-written bounce in the style of an MTA the corpus holds few
or none of, and stands for a class of error seen on real bounces: a failure
read as a delivery, a list of failed recipients cut to one, the rewritten
address reported instead of the one we sent to, the returned original's To:
or a mailing list taken for the recipient, and common wordings not recognised.
"""

from __future__ import annotations

from deliverability.bounces import classify_message
from deliverability.bounces.vocabulary import Kind, Reason


def verdicts(raw: bytes) -> list[tuple[str, str, str]]:
    return [(r.recipient, r.kind, r.reason) for r in classify_message(raw)]


def text_bounce(subject: str, body: str, *, sender: str = "Mail Delivery Subsystem <MAILER-DAEMON@relay.example.org>") -> bytes:
    return f"From: {sender}\nTo: bounces+5f1c@mail.example.com\nSubject: {subject}\nAuto-Submitted: auto-replied\n\n{body}".encode()


# --- class 1: a failure is never read as a delivery -----------------------------------------------------


def test_a_relay_transcript_accepting_the_sender_before_host_unknown_is_not_a_delivery() -> None:
    # Sendmail relaying through a smarthost: the session's "250 2.1.0 Sender ok" comes first.
    body = (
        "The original message was received at Tue, 4 Mar 2025 10:02:11 +0100\nfrom out.mail.example.com [192.0.2.10]\n\n"
        "   ----- The following addresses had permanent fatal errors -----\n<zoe@nohost.example.invalid>\n\n"
        "   ----- Transcript of session follows -----\n... while talking to smarthost.example.org.:\n"
        ">>> MAIL From:<bounces+5f1c@mail.example.com> SIZE=2210\n<<< 250 2.1.0 <bounces+5f1c@mail.example.com>... Sender ok\n"
        ">>> RCPT To:<zoe@nohost.example.invalid>\n<<< 550 Host unknown (Name server: nohost.example.invalid: host not found)\n"
        "550 zoe@nohost.example.invalid... Host unknown\n\n   ----- Original message follows -----\n"
    )
    (verdict,) = classify_message(text_bounce("Returned mail: see transcript for details", body))
    assert (verdict.recipient, verdict.kind, verdict.reason) == ("zoe@nohost.example.invalid", Kind.HARD, Reason.HOST_UNKNOWN)
    assert verdict.smtp_reply == "550"


def test_a_groupwise_status_report_whose_dates_look_like_codes_is_not_a_delivery() -> None:
    body = (
        "Original Message Status:\n  Subject: Spring newsletter\n  Creation Date: 2.3.09 10:14\n\n"
        "  Recipient: ruth.doe@gw.example.edu\n    Status: Undeliverable - Mailbox not available\n    Date: 2.3.09 10:15\n"
    )
    raw = text_bounce("Undeliverable: Spring newsletter", body, sender='"GroupWise Agent" <postmaster@gw.example.edu>')
    assert verdicts(raw) == [("ruth.doe@gw.example.edu", Kind.HARD, Reason.USER_UNKNOWN)]


def test_a_failed_dsn_whose_diagnostic_quotes_an_earlier_250_is_not_a_delivery() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: bounces+3@mail.example.com\nSubject: Delivery Status Notification (Failure)\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nDelivery failed.\n\n--B\nContent-Type: message/delivery-status\n\n"
        b"Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; olga@example.net\nAction: failed\nStatus: 5.0.0\n"
        b"Diagnostic-Code: smtp; 250 2.1.5 Recipient ok; then 550 Requested action not taken: mailbox unavailable\n--B--\n"
    )
    (verdict,) = classify_message(raw)
    assert (verdict.recipient, verdict.kind, verdict.reason) == ("olga@example.net", Kind.HARD, Reason.USER_UNKNOWN)
    assert verdict.status == "5.0.0"


# --- class 2: every failed recipient of a plain-text bounce ---------------------------------------------


def test_sendmail_listing_the_addresses_above_the_transcript_gives_each_its_own_reason() -> None:
    body = (
        "   ----- The following addresses had permanent fatal errors -----\n<dora@example.org>\n<emil@gone.example.invalid>\n\n"
        "   ----- Transcript of session follows -----\n550 5.1.1 <dora@example.org>... User unknown\n"
        "550 emil@gone.example.invalid... Host unknown (Name server: gone.example.invalid: host not found)\n"
    )
    assert verdicts(text_bounce("Returned mail: see transcript for details", body)) == [
        ("dora@example.org", Kind.HARD, Reason.USER_UNKNOWN),
        ("emil@gone.example.invalid", Kind.HARD, Reason.HOST_UNKNOWN),
    ]


def test_an_exchange_ndr_listing_recipients_on_one_line_gives_all_of_them() -> None:
    body = (
        "Delivery has failed to these recipients or groups:\n\ngina@example.org; hugo@example.org\n\n"
        "The e-mail address you entered couldn't be found. Please check the recipient's e-mail address and try to resend the message.\n"
    )
    raw = text_bounce("Undeliverable: March offers", body, sender="postmaster@exch.example.org")
    assert verdicts(raw) == [("gina@example.org", Kind.HARD, Reason.USER_UNKNOWN), ("hugo@example.org", Kind.HARD, Reason.USER_UNKNOWN)]


# --- class 3: the address we sent to, not the one an alias rewrote it to ---------------------------------


def test_a_dsn_reports_the_original_recipient_when_a_forward_rewrote_it() -> None:
    raw = (
        b"From: MAILER-DAEMON@fw.example.org\nTo: bounces+13@mail.example.com\nSubject: Undelivered Mail Returned to Sender\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nYour message could not be delivered to its forwarding address.\n\n"
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; fw.example.org\n\n"
        b"Final-Recipient: rfc822; k.lee@newhome.example.net\nOriginal-Recipient: rfc822;kim@alumni.example.org\n"
        b"Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\n--B--\n"
    )
    assert verdicts(raw) == [("kim@alumni.example.org", Kind.HARD, Reason.USER_UNKNOWN)]


def test_a_text_bounce_reports_the_address_an_alias_expanded_from() -> None:
    body = (
        "I'm sorry to have to inform you that your message could not\nbe delivered to one or more recipients.\n\n"
        "<lee.k@new.example.net> (expanded from <kim@alumni.example.org>): host mx.new.example.net[192.0.2.7]\n"
        "    said: 550 5.1.1 <lee.k@new.example.net>: Recipient address rejected: User unknown (in reply to RCPT TO command)\n"
    )
    raw = text_bounce("Undelivered Mail Returned to Sender", body, sender="MAILER-DAEMON@fw.example.org (Mail Delivery System)")
    assert verdicts(raw) == [("kim@alumni.example.org", Kind.HARD, Reason.USER_UNKNOWN)]


# --- class 4: neither the quoted To: nor a mailing list is the failed recipient ---------------------------


def test_the_quoted_to_of_the_original_is_not_taken_over_the_recipient_the_ndr_names() -> None:
    body = (
        "Your message\n\n  To:      readers@lists.example.com\n  Subject: Weekly digest\n  Sent:    Tue, 4 Mar 2025 10:00:00 +0100\n\n"
        "did not reach the following recipient(s):\n\nSmith, John <j.smith@corp.example.org> on Tue, 4 Mar 2025 10:01:02 +0100\n"
        "    The recipient name is not recognized\n"
    )
    raw = text_bounce("Undeliverable: Weekly digest", body, sender="System Administrator <postmaster@corp.example.org>")
    assert verdicts(raw) == [("j.smith@corp.example.org", Kind.HARD, Reason.USER_UNKNOWN)]


def test_a_list_posts_address_is_never_the_failed_recipient() -> None:
    # GroupWise names its own user id, not an address; the returned original is a post to a list.
    raw = (
        b"From: postmaster@gw.example.edu\nTo: bounces+5c@mail.example.com\nSubject: Message status - undeliverable\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="=_GW"\n\n--=_GW\nContent-Type: text/plain\n\n'
        b"The message that you sent was undeliverable to the following:\n\tpnovak (user not found)\n\n"
        b"Possibly truncated original message follows:\n\n--=_GW\nContent-Type: message/rfc822\n\n"
        b"From: news@mail.example.com\nTo: staff-all@lists.gw.example.edu\nList-Id: <staff-all.lists.gw.example.edu>\n"
        b"List-Post: <mailto:staff-all@lists.gw.example.edu>\nSubject: Offer\n\nhello\n--=_GW--\n"
    )
    # No address: the report's VERP token ties the verdict to the address we sent to.
    assert verdicts(raw) == [("", Kind.HARD, Reason.USER_UNKNOWN)]


def test_list_software_addresses_are_not_recipients() -> None:
    body = (
        "The following address failed:\n    nadia@example.edu: 550 5.1.1 unknown user\n\n"
        "staff-request@lists.example.edu: the list that distributed the message (send HELP for its commands)\n"
    )
    assert verdicts(text_bounce("Delivery failure", body)) == [("nadia@example.edu", Kind.HARD, Reason.USER_UNKNOWN)]


# --- class 5: wordings of "no such user" and "no such host" --------------------------------------------


def test_no_mail_box_available_is_an_unknown_user() -> None:
    body = "Sorry, your message to lin.wei@mail.example.cn could not be delivered.\nNo mail box available for this user.\n"
    raw = text_bounce("Undelivered mail", body, sender="postmaster@mail.example.cn")
    assert verdicts(raw) == [("lin.wei@mail.example.cn", Kind.HARD, Reason.USER_UNKNOWN)]


def test_machine_tokens_for_a_bad_recipient_are_an_unknown_user() -> None:
    for token in ("BAD_RECIPIENT", "UNKNOWN_USER", "NO_SUCH_USER", "RecipNotFound"):
        raw = text_bounce("Delivery failure", f"Unable to deliver message to: <paolo@mail.example.it>\nReason: {token}\n")
        assert verdicts(raw) == [("paolo@mail.example.it", Kind.HARD, Reason.USER_UNKNOWN)], token


def test_exchange_nonexistent_domain_is_an_unknown_host() -> None:
    body = (
        "Delivery has failed to these recipients or groups:\n\nxena@nodomain.example.invalid\n"
        "The domain name in the e-mail address is incorrect.\n\nDiagnostic information for administrators:\n"
        "Remote Server returned '550 SMTPSEND.DNS.NonExistentDomain; nonexistent domain'\n"
    )
    raw = text_bounce("Undeliverable: March offers", body, sender="postmaster@exch.example.org")
    assert verdicts(raw) == [("xena@nodomain.example.invalid", Kind.HARD, Reason.HOST_UNKNOWN)]
