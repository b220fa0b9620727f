"""Issue 15, class 8: a GDPR erase leaves no trace of the address, wherever it was written.

Replays the traces the issue found after an erase: a client-chosen
Idempotency-Key containing the address (trigger row and audit entry), free-text
notes (a suppression's source, an audit reason), another recipient's context,
a feedback event's ``reported_recipient``. The last test reads every table of
the real PostgreSQL database as text after an erase and finds the address in
none of them; what the erase covers is listed in ``dispatch/services/erasure.py``
and ``ops/privacy.md``.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from audit.models import AuditEntry
from controlplane.addresses import address_hash, addresses_redacted, hash_label
from deliverability.models import EventType, FeedbackEvent, MatchedBy, SendingDomain, Suppression
from deliverability.selectors import address_suppressed
from deliverability.services import Feedback, event_record, suppression_add, suppression_remove
from deliverability.services.pause import domain_pause
from dispatch.models import Message, MessageStatus, Trigger
from dispatch.services.erasure import address_erase_everywhere
from dispatch.services.triggers import trigger_accept
from tests.conftest import SIMPLE_VARIABLES

pytestmark = pytest.mark.django_db

ANA = "ana@example.org"
LABEL = hash_label(address_hash(ANA))


def trigger(campaign: Any, key: str, *people: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    recipients = [{"address": a, "context": SIMPLE_VARIABLES | extra} for a, extra in people]
    return trigger_accept(campaign=campaign, idempotency_key=key, recipients=recipients)[0]


def audit_text() -> str:
    return str(list(AuditEntry.objects.values_list("actor_label", "target_label", "reason", "data"))).lower()


# --- the audit trail never holds an address in clear ---------------------------------------------


def test_an_idempotency_key_built_from_the_address_reaches_the_audit_trail_as_a_hash(campaign: Any) -> None:
    trigger(campaign, f"signup-{ANA}", (ANA, {}))
    entry = AuditEntry.objects.get(action="trigger.accept")
    assert entry.data["idempotency_key"] == f"sha256:{address_hash('signup-' + ANA)[:12]}"
    assert "ana@" not in audit_text()


def test_free_text_reasons_reach_the_audit_trail_with_addresses_as_hashes(sending_domain: SendingDomain, oncall: Any) -> None:
    row, _ = suppression_add(address=ANA, reason="manual", source=f"asked by phone ({ANA})", created_by=oncall)
    suppression_remove(suppression=row, removed_by=oncall, reason=f"{ANA.upper()} asked again, see <{ANA}>.")
    removal = AuditEntry.objects.get(action="suppression.remove")
    assert removal.reason == f"{LABEL} asked again, see <{LABEL}>."
    assert "example.org" not in audit_text()


def test_a_domain_s_own_sender_stays_readable_in_its_audit_entries(sending_domain: SendingDomain) -> None:
    entry = AuditEntry.objects.filter(target_type="deliverability.sendingdomain").latest("pk")
    assert entry.data["default_sender"] == sending_domain.default_sender  # the sender is the organisation's, no one's


def test_redaction_reads_text_once_and_leaves_what_is_no_address() -> None:
    assert addresses_redacted("a@b, c@localhost, @x.org, x@@y.org") == "a@b, c@localhost, @x.org, x@@y.org"
    assert addresses_redacted({"k": [f"mail {ANA}."]}) == {"k": [f"mail {LABEL}."]}
    assert addresses_redacted("x" * 200_000 + "@") == "x" * 200_000 + "@"


# --- what the erase reaches ----------------------------------------------------------------------


def test_a_retry_with_an_erased_idempotency_key_still_replays(campaign: Any) -> None:
    first = trigger(campaign, f"signup-{ANA}", (ANA, {}))
    result = address_erase_everywhere(address=ANA)
    assert result.mentions >= 1
    assert ANA not in Trigger.objects.get().idempotency_key.lower()
    assert trigger(campaign, f"signup-{ANA}", (ANA, {})) == first  # the same key and body: the stored answer, no resend
    assert Message.objects.count() == 1


def test_another_recipient_s_context_and_replies_lose_the_address_and_keep_the_rest(campaign: Any) -> None:
    trigger(campaign, "k", ("bo@example.org", {"referrer": ANA, "note": f"invited by <{ANA.title()}>", "hana": "hana@example.org"}))
    Message.objects.update(last_reply=f"451 4.2.0 <{ANA}> greylisted")
    address_erase_everywhere(address=ANA)
    bo = Message.objects.get()
    assert (bo.recipient, bo.status) == ("bo@example.org", MessageStatus.QUEUED)  # still goes out
    assert (bo.context["referrer"], bo.context["note"], bo.context["hana"]) == ("", "invited by <>", "hana@example.org")
    assert bo.last_reply == "451 4.2.0 <> greylisted"


def test_notes_pause_reasons_and_reported_recipients_lose_the_address(sending_domain: SendingDomain, oncall: Any) -> None:
    suppression_add(address="bo@example.org", reason="manual", source=f"same household as {ANA}")
    domain_pause(domain=sending_domain, reason=f"complaints from {ANA}", actor=oncall)
    event_record(Feedback(
        event_type=EventType.COMPLAINED, recipient="bo@example.org", source="webhook:sendgrid", dedupe="d1",
        matched_by=MatchedBy.MESSAGE_ID, verified=False, smtp_reply=f"550 <{ANA}>",
        detail={"reported_recipient": ANA, "unverified": "names another recipient"},
    ))
    result = address_erase_everywhere(address=ANA)
    assert result.mentions == 3
    assert Suppression.objects.get(address="bo@example.org").source == "same household as "
    assert SendingDomain.objects.get().paused_reason == "complaints from "
    event = FeedbackEvent.objects.get()
    assert (event.recipient, event.smtp_reply) == ("bo@example.org", "550 <>")
    assert event.detail == {"reported_recipient": "", "unverified": "names another recipient"}


def test_after_an_erase_no_table_holds_the_address(campaign: Any, oncall: Any, staff_client: Any) -> None:
    """Every trace at once, then every table of the database read as text."""
    trigger(campaign, f"signup-{ANA}", (ANA, {}), ("bo@example.org", {"referrer": ANA}))
    suppression_add(address="bo@example.org", reason="manual", source=f"see {ANA}", created_by=oncall)
    staff_client(oncall).post("/admin/deliverability/suppression/add/", {"address": ANA, "sending_domain": "", "source": ANA})
    event_record(Feedback(
        event_type=EventType.BOUNCED, recipient=ANA, source="mailbox", dedupe="d2", matched_by=MatchedBy.VERP, verified=True,
        smtp_reply=f"550 5.1.1 <{ANA}> unknown",
    ))
    from deliverability.models import PauseEvidence, ProviderStream

    quoted = f"550 5.7.26 <{ANA}>: unauthenticated"
    ProviderStream.objects.create(sending_domain=campaign.sending_domain, provider="gmail", paused=True, paused_reason=quoted,
                                  replies=[quoted])
    PauseEvidence.objects.create(
        sending_domain=campaign.sending_domain, minute=campaign.created_at, signal="bounce", rule="batch", baseline=0.05,
        observed=0.3, statistic=15, threshold=14, volume=50, events=15, replies=[quoted],
    )
    assert _tables_naming(ANA)  # the test sees what it looks for
    address_erase_everywhere(address=ANA.upper())
    assert _tables_naming(ANA) == []
    assert address_suppressed(address=ANA)


def _tables_naming(text: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        tables = [name for (name,) in cursor.fetchall()]
        naming = []
        for table in tables:
            cursor.execute(f'SELECT count(*) FROM "{table}" AS t WHERE row_to_json(t)::text ILIKE %s', [f"%{text}%"])
            if cursor.fetchone()[0]:
                naming.append(table)
    return naming
