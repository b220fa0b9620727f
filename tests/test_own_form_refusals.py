"""Issue 15, class 7: a refusal of our own message's form is never the recipient's bounce.

A sender name of ~990 characters made a From line longer than 998; the server's
"500 5.5.2 Line too long" was recorded three times as the recipient's soft bounce and
the innocent address was suppressed.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from deliverability.bounces import vocabulary as v
from deliverability.bounces.smtp_reply import classify_reply
from deliverability.models import FeedbackEvent, Suppression
from deliverability.selectors import address_suppressed
from dispatch.models import Message, MessageStatus
from dispatch.services.feedback import reply_learn
from tests.feedback_helpers import counters, sent_message

ADDRESS = "innocent@example.org"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (500, "5.5.2 Line too long"),
        (500, "Line too long"),
        (501, "5.5.4 Syntax error in parameters"),
        (554, "5.6.7 Non-ASCII addresses not permitted for that recipient"),
        (552, "5.3.4 Message size exceeds fixed maximum message size"),
        (554, "5.6.3 Conversion required but not supported"),
    ],
)
def test_replies_that_blame_our_message_are_no_verdict_on_the_recipient(code: int, text: str) -> None:
    verdict = classify_reply(code, text)
    assert verdict.own_form
    assert verdict.kind == v.Kind.SOFT  # never hard; reply_learn records it as no bounce at all
    assert verdict.reason not in v.HARD_REASONS


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (550, "5.1.1 <x@example.org>: Recipient address rejected: User unknown", v.Kind.HARD),
        (552, "5.2.2 Mailbox full", v.Kind.SOFT),
        (554, "5.6.0 Message content rejected as spam", v.Kind.SOFT),  # X.6.0: content filters, reputation evidence
        (550, "5.5.0 Requested action not taken: mailbox unavailable, user unknown", v.Kind.HARD),
        (550, "User unknown", v.Kind.HARD),
    ],
)
def test_replies_about_the_recipient_keep_their_verdict(code: int, text: str, kind: str) -> None:
    verdict = classify_reply(code, text)
    assert not verdict.own_form
    assert verdict.kind == kind


@pytest.mark.django_db(transaction=True)
def test_line_too_long_after_data_three_times_suppresses_nobody_and_counts_no_bounce(campaign: Any) -> None:
    message = sent_message(campaign, ADDRESS)
    for attempt in range(1, 4):
        Message.objects.filter(pk=message.pk).update(status=MessageStatus.FAILED, attempts=attempt)
        message.refresh_from_db()
        with transaction.atomic():
            reply_learn(message=message, code=500, reply="5.5.2 Line too long")
    events = list(FeedbackEvent.objects.filter(recipient=ADDRESS))
    assert len(events) == 3
    assert {(e.event_type, e.kind, e.reason, e.status) for e in events} == {("unknown", "soft", "not_compliant_rfc", "5.5.2")}
    assert not Suppression.objects.exists()
    assert not address_suppressed(address=ADDRESS, sending_domain=campaign.sending_domain)
    figures = counters(campaign.sending_domain_id)
    assert figures["bounced_hard"] == figures["bounced_soft"] == figures["bounced_reputation"] == 0


@pytest.mark.django_db(transaction=True)
def test_the_recipients_own_soft_bounces_still_suppress_at_the_limit(campaign: Any) -> None:
    message = sent_message(campaign, ADDRESS)
    for attempt in range(1, 6):
        Message.objects.filter(pk=message.pk).update(status=MessageStatus.FAILED, attempts=attempt)
        message.refresh_from_db()
        with transaction.atomic():
            reply_learn(message=message, code=552, reply="5.2.2 Mailbox full")
    assert Suppression.objects.filter().exists()
