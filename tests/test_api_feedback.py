"""What comes back, over the API: raw bounce upload, the suppression list, feedback events, GDPR erasure.

Real corpus bounces (../shared/corpora/bounces) are the uploads; roles are the
shared actors, the outsider refused everywhere. Publishing hints needs a commit,
which pytest-django's test transaction never makes: no broker involved.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from controlplane.addresses import address_hash
from deliverability.models import DomainMinute, FeedbackEvent, SendingDomain, Suppression
from deliverability.services import domain_create, suppression_add
from dispatch.models import Campaign, Message, MessageStatus, Trigger
from dispatch.services.feedback import bounce_ingest
from dispatch.services.triggers import trigger_accept
from dispatch.services.worker import batch_send
from tests.conftest import SIMPLE_VARIABLES, assert_error, recipients
from tests.feedback_helpers import ARF_ABUSE, GMAIL_USER_UNKNOWN, SES_MAILBOX_FULL, bounce_of, complaint_of, corpus, counters, sent_message

pytestmark = pytest.mark.django_db
Api = Callable[[User | None], APIClient]
BOUNCES_URL = "/api/v1/bounces/"
SUPPRESSIONS_URL = "/api/v1/suppressions/"
EVENTS_URL = "/api/v1/events/"
ERASURES_URL = "/api/v1/erasures/"


def upload(client: APIClient, raw: bytes, content_type: str = "message/rfc822") -> Any:
    return client.post(BOUNCES_URL, raw, content_type=content_type)


def recorded() -> tuple[int, int, int]:
    """What an upload can add to: events, suppressions, per-minute counter rows."""
    return FeedbackEvent.objects.count(), Suppression.objects.count(), DomainMinute.objects.count()


def person(address: str) -> dict[str, Any]:
    return {"address": address, "context": SIMPLE_VARIABLES}


# --- bounce upload ---------------------------------------------------------------------------------


def test_uploading_a_bounce_answers_201_with_what_each_recipient_became(api_as: Api, oncall: User, campaign: Campaign) -> None:
    message = sent_message(campaign, "userunknown@example.jp")
    response = upload(api_as(oncall), bounce_of(message))
    assert response.status_code == 201, response.content
    assert response.json() == [{
        "recipient": "userunknown@example.jp", "event_type": "bounced", "kind": "hard", "reason": "user_unknown",
        "status": "5.1.1", "feedback_type": "", "message": message.uuid.hex, "matched_by": "message_id",
        "verified": True, "duplicate": False, "suppressed": True,
    }]
    event = FeedbackEvent.objects.get()
    assert (event.source, event.message_uuid) == ("upload", message.uuid)
    assert Suppression.objects.get().event == event
    assert counters(campaign.sending_domain_id)["bounced_hard"] == 1


def test_uploading_the_same_bounce_again_is_200_duplicate_and_records_nothing(api_as: Api, admin_role: User, campaign: Campaign) -> None:
    raw = bounce_of(sent_message(campaign, "userunknown@example.jp"))
    client = api_as(admin_role)
    assert upload(client, raw).status_code == 201
    before = (recorded(), counters(campaign.sending_domain_id))
    again = upload(client, raw, content_type="application/octet-stream")
    assert again.status_code == 200, again.content
    assert [item["duplicate"] for item in again.json()] == [True]
    assert again.json()[0]["suppressed"] is True  # still suppressed, by the first upload
    assert (recorded(), counters(campaign.sending_domain_id)) == before


def test_uploading_a_corpus_arf_report_records_a_complaint_and_suppresses(api_as: Api, admin_role: User, campaign: Campaign) -> None:
    message = sent_message(campaign, "redacted@example.net")
    response = upload(api_as(admin_role), complaint_of(message), content_type="application/octet-stream")
    assert response.status_code == 201, response.content
    [item] = response.json()
    assert (item["event_type"], item["kind"], item["feedback_type"], item["suppressed"]) == ("complained", "complaint", "abuse", True)
    assert (item["recipient"], item["message"], item["matched_by"], item["verified"]) == (
        "redacted@example.net", message.uuid.hex, "message_id", True
    )
    assert Suppression.objects.get(address="redacted@example.net").reason == "complaint"
    assert counters(campaign.sending_domain_id)["complained"] == 1


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "multipart/form-data; boundary=X"])
def test_an_upload_that_is_not_a_raw_message_is_415(api_as: Api, oncall: User, content_type: str) -> None:
    response = upload(api_as(oncall), corpus(GMAIL_USER_UNKNOWN), content_type=content_type)
    assert_error(response, 415)
    assert recorded() == (0, 0, 0)


def test_an_empty_upload_is_400(api_as: Api, oncall: User) -> None:
    assert_error(upload(api_as(oncall), b""), 400)
    assert recorded() == (0, 0, 0)


def test_an_upload_over_the_size_limit_is_413_and_records_nothing(api_as: Api, oncall: User, settings: Any) -> None:
    raw = corpus(GMAIL_USER_UNKNOWN)
    settings.SENDPLANE_BOUNCE_MAX_BYTES = len(raw) - 1
    body = assert_error(upload(api_as(oncall), raw), 413)
    assert "SENDPLANE_BOUNCE_MAX_BYTES" in body["error"]
    assert recorded() == (0, 0, 0)


def test_an_upload_exactly_at_the_size_limit_is_accepted(api_as: Api, oncall: User, settings: Any) -> None:
    raw = corpus(GMAIL_USER_UNKNOWN)
    settings.SENDPLANE_BOUNCE_MAX_BYTES = len(raw)
    assert upload(api_as(oncall), raw).status_code == 201
    assert FeedbackEvent.objects.count() == 1


@pytest.mark.parametrize(("actor", "status"), [("marketer", 403), ("outsider", 403), (None, 401)])
def test_only_oncall_and_admins_upload_bounces(api_as: Api, request: Any, actor: str | None, status: int) -> None:
    user = request.getfixturevalue(actor) if actor else None
    assert_error(upload(api_as(user), corpus(GMAIL_USER_UNKNOWN)), status)
    assert recorded() == (0, 0, 0)


# --- suppressions ------------------------------------------------------------------------------------


@pytest.fixture
def listed(campaign: Campaign, sending_domain: SendingDomain) -> dict[str, Suppression]:
    """A hard bounce (global, with its event), a manual global one and a manual one for mail.example.com."""
    bounce_ingest(raw=bounce_of(sent_message(campaign, "userunknown@example.jp")), source="upload")
    other = domain_create(domain="other.example.com", default_sender="hi@other.example.com")
    return {
        "bounced": Suppression.objects.get(address="userunknown@example.jp"),
        "manual": suppression_add(address="ana@example.org", reason="manual", source="asked")[0],
        "domain": suppression_add(address="bo@example.org", reason="manual", sending_domain=sending_domain)[0],
        "other": suppression_add(address="bo@example.org", reason="manual", sending_domain=other)[0],
    }


def ids(response: Any) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_every_role_lists_suppressions_with_the_event_that_caused_them(api_as: Api, marketer: User, listed: dict[str, Suppression]) -> None:
    response = api_as(marketer).get(SUPPRESSIONS_URL)
    assert ids(response) == {row.pk for row in listed.values()}
    rows = {row["id"]: row for row in response.json()["results"]}
    bounced = rows[listed["bounced"].pk]
    assert (bounced["address"], bounced["reason"], bounced["domain"]) == ("userunknown@example.jp", "hard_bounce", None)
    event = FeedbackEvent.objects.get()
    assert bounced["event"] == {
        "id": event.pk, "event_type": "bounced", "kind": "hard", "reason": "user_unknown", "status": "5.1.1",
        "source": "upload", "occurred_at": bounced["event"]["occurred_at"], "message": event.message_uuid.hex,
    }
    assert rows[listed["manual"].pk]["event"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("address=UserUnknown@Example.jp", {"bounced"}),
        ("address=bo@example.org", {"domain", "other"}),
        ("domain=MAIL.example.com", {"domain"}),
        ("reason=manual", {"manual", "domain", "other"}),
        ("reason=hard_bounce", {"bounced"}),
        ("reason=manual&domain=other.example.com", {"other"}),
        ("address=nobody@example.org", set()),
    ],
)
def test_suppression_list_filters(api_as: Api, oncall: User, listed: dict[str, Suppression], query: str, expected: set[str]) -> None:
    assert ids(api_as(oncall).get(f"{SUPPRESSIONS_URL}?{query}")) == {listed[name].pk for name in expected}


def test_outsider_and_anonymous_cannot_read_suppressions_or_events(api_as: Api, outsider: User, listed: dict[str, Suppression]) -> None:
    for url in (SUPPRESSIONS_URL, f"{SUPPRESSIONS_URL}{listed['manual'].pk}/", EVENTS_URL):
        assert_error(api_as(outsider).get(url), 403)
        assert_error(api_as(None).get(url), 401)


def test_a_manual_suppression_is_created_then_answered_200_when_repeated(
    api_as: Api, marketer: User, sending_domain: SendingDomain
) -> None:
    body = {"address": "Ana@Example.org", "domain": "mail.example.com", "note": "asked by phone"}
    client = api_as(marketer)
    first = client.post(SUPPRESSIONS_URL, body, format="json")
    assert first.status_code == 201, first.content
    data = first.json()
    assert (data["address"], data["domain"], data["reason"], data["created_by"], data["event"]) == (
        "ana@example.org", "mail.example.com", "manual", "mara-marketer", None,
    )
    assert "asked by phone" in data["source"]
    row = Suppression.objects.get()
    assert (row.address_hash, row.sending_domain) == (address_hash("ana@example.org"), sending_domain)
    again = client.post(SUPPRESSIONS_URL, {"address": "ana@example.org", "domain": "mail.example.com"}, format="json")
    assert again.status_code == 200, again.content
    assert again.json()["id"] == row.pk
    assert Suppression.objects.count() == 1


def test_a_manual_suppression_without_a_domain_applies_everywhere(api_as: Api, oncall: User, sending_domain: SendingDomain) -> None:
    response = api_as(oncall).post(SUPPRESSIONS_URL, {"address": "ana@example.org"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["domain"] is None
    assert Suppression.objects.get().sending_domain is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"address": "ana@example.org", "reason": "hard_bounce"}, "reason"),
        ({"address": "not-an-address"}, "address"),
        ({"address": "ana@"}, "address"),
        ({}, "address"),
        ({"address": "ana@example.org", "domain": "unknown.example.com"}, "domain"),
    ],
)
def test_a_bad_manual_suppression_is_400_and_saves_nothing(
    api_as: Api, marketer: User, sending_domain: SendingDomain, body: dict[str, str], field: str
) -> None:
    assert_error(api_as(marketer).post(SUPPRESSIONS_URL, body, format="json"), 400, field)
    assert not Suppression.objects.exists()


def test_outsider_cannot_add_a_suppression(api_as: Api, outsider: User) -> None:
    assert_error(api_as(outsider).post(SUPPRESSIONS_URL, {"address": "ana@example.org"}, format="json"), 403)
    assert not Suppression.objects.exists()


@pytest.mark.parametrize("actor", ["marketer", "oncall", "outsider"])
def test_only_admins_lift_a_suppression(api_as: Api, request: Any, listed: dict[str, Suppression], actor: str) -> None:
    url = f"{SUPPRESSIONS_URL}{listed['bounced'].pk}/"
    assert_error(api_as(request.getfixturevalue(actor)).delete(url), 403)
    assert Suppression.objects.filter(pk=listed["bounced"].pk).exists()


def test_an_admin_lifts_a_suppression_and_its_event_stays(api_as: Api, admin_role: User, listed: dict[str, Suppression]) -> None:
    client = api_as(admin_role)
    url = f"{SUPPRESSIONS_URL}{listed['bounced'].pk}/"
    assert client.delete(url).status_code == 204
    assert not Suppression.objects.filter(pk=listed["bounced"].pk).exists()
    assert FeedbackEvent.objects.filter(recipient="userunknown@example.jp").exists()
    assert_error(client.get(url), 404)
    assert_error(client.delete(url), 404)


def test_a_suppression_is_retrieved_by_id_and_an_unknown_id_is_404(api_as: Api, oncall: User, listed: dict[str, Suppression]) -> None:
    client = api_as(oncall)
    found = client.get(f"{SUPPRESSIONS_URL}{listed['domain'].pk}/")
    assert found.status_code == 200
    assert (found.json()["address"], found.json()["domain"]) == ("bo@example.org", "mail.example.com")
    missing = max(row.pk for row in listed.values()) + 1
    assert "not found" in assert_error(client.get(f"{SUPPRESSIONS_URL}{missing}/"), 404)["error"]


# --- events ----------------------------------------------------------------------------------------------


@pytest.fixture
def events(campaign: Campaign) -> dict[str, FeedbackEvent]:
    """A hard bounce of our message, a complaint tied by recipient, and a soft bounce about nobody we mailed."""
    message = sent_message(campaign, "userunknown@example.jp")
    sent_message(campaign, "redacted@example.net", key="k2")
    return {
        "hard": bounce_ingest(raw=bounce_of(message), source="upload")[0].event,
        "complaint": bounce_ingest(raw=corpus(ARF_ABUSE), source="mailbox")[0].event,
        "stranger": bounce_ingest(raw=corpus(SES_MAILBOX_FULL), source="upload")[0].event,
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"hard", "complaint", "stranger"}),
        ("recipient=UserUnknown@example.jp", {"hard"}),
        ("event_type=complained", {"complaint"}),
        ("event_type=bounced", {"hard", "stranger"}),
        ("domain=mail.example.com", {"hard", "complaint"}),
        ("domain=mail.example.com&event_type=bounced", {"hard"}),
        ("recipient=nobody@example.org", set()),
    ],
)
def test_event_list_filters(api_as: Api, marketer: User, events: dict[str, FeedbackEvent], query: str, expected: set[str]) -> None:
    assert ids(api_as(marketer).get(f"{EVENTS_URL}?{query}")) == {events[name].pk for name in expected}


def test_events_of_one_message_by_its_uuid_in_either_spelling(api_as: Api, oncall: User, events: dict[str, FeedbackEvent]) -> None:
    client, message_uuid = api_as(oncall), events["hard"].message_uuid
    assert message_uuid is not None
    for spelling in (str(message_uuid), message_uuid.hex):
        response = client.get(f"{EVENTS_URL}?message={spelling}")
        assert ids(response) == {events["hard"].pk}
        [row] = response.json()["results"]
        assert (row["message"], row["recipient"], row["domain"], row["matched_by"]) == (
            message_uuid.hex, "userunknown@example.jp", "mail.example.com", "message_id",
        )


def test_a_malformed_message_uuid_is_400_in_one_line(api_as: Api, oncall: User, events: dict[str, FeedbackEvent]) -> None:
    body = assert_error(api_as(oncall).get(f"{EVENTS_URL}?message=not-a-uuid"), 400, "message")
    assert body["error"] == "message: must be a message uuid"


# --- erasure -----------------------------------------------------------------------------------------------

GONE = "gone@example.org"


@pytest.mark.parametrize(("actor", "status"), [("marketer", 403), ("oncall", 403), ("outsider", 403), (None, 401)])
def test_only_admins_erase_an_address(api_as: Api, request: Any, sending_domain: SendingDomain, actor: str | None, status: int) -> None:
    suppression_add(address=GONE, reason="manual")
    user = request.getfixturevalue(actor) if actor else None
    assert_error(api_as(user).post(ERASURES_URL, {"address": GONE}, format="json"), status)
    assert Suppression.objects.get().address == GONE


@pytest.mark.parametrize(("body", "field"), [({"address": "not-an-address"}, "address"), ({"address": GONE, "why": "x"}, "why")])
def test_a_bad_erasure_request_is_400_and_erases_nothing(api_as: Api, admin_role: User, body: dict[str, str], field: str) -> None:
    suppression_add(address=GONE, reason="manual")
    assert_error(api_as(admin_role).post(ERASURES_URL, body, format="json"), 400, field)
    assert Suppression.objects.get().address == GONE


@pytest.fixture
def gone_everywhere(campaign: Campaign) -> Message:
    """GONE in every place an address is kept; returns the message still queued to them.

    A sent message and its bounce (an event, a global suppression), a manual
    suppression on a second domain, a failed message whose reply quotes the
    address, a queued one with the address in its context, and trigger answers
    naming it as rejected (a duplicate, and in brackets) and as suppressed.
    """
    sent = sent_message(campaign, "Gone@example.org", key="sent")  # the outbox keeps the local part's case
    trigger_accept(campaign=campaign, idempotency_key="failed", recipients=[person(GONE)])
    Message.objects.filter(trigger__idempotency_key="failed").update(
        status=MessageStatus.FAILED, last_reply=f"550 5.1.1 <{GONE}>: Recipient address rejected"
    )
    queued = {"address": GONE, "context": {**SIMPLE_VARIABLES, "email": GONE}}
    bystander = person("bygone@example.org")
    trigger_accept(
        campaign=campaign, idempotency_key="queued", recipients=[queued, person(GONE), person(f"<{GONE}>"), bystander, bystander]
    )
    bounce_ingest(raw=bounce_of(sent).replace(b"userunknown@example.jp", GONE.encode()), source="upload")
    trigger_accept(campaign=campaign, idempotency_key="suppressed", recipients=[person(GONE), *recipients(1)])
    other = domain_create(domain="other.example.com", default_sender="hi@other.example.com")
    suppression_add(address=GONE, reason="manual", sending_domain=other)
    return Message.objects.get(trigger__idempotency_key="queued", recipient=GONE)


def everywhere(address: str) -> dict[str, int]:
    """How many stored values name ``address`` (any case; "bygone@" does not name "gone@"), per place."""
    named = re.compile(rf"(?<![\w.+-]){re.escape(address)}", re.IGNORECASE)
    texts = {
        "message.recipient": Message.objects.values_list("recipient", flat=True),
        "message.context": [json.dumps(c) for c in Message.objects.values_list("context", flat=True)],
        "message.last_reply": Message.objects.values_list("last_reply", flat=True),
        "event.recipient": FeedbackEvent.objects.values_list("recipient", flat=True),
        "event.smtp_reply": FeedbackEvent.objects.values_list("smtp_reply", flat=True),
        "suppression.address": Suppression.objects.values_list("address", flat=True),
        "trigger.response": [json.dumps(r) for r in Trigger.objects.values_list("response", flat=True)],
    }
    return {place: sum(bool(named.search(text)) for text in values) for place, values in texts.items()}


def test_erasure_removes_the_address_everywhere(api_as: Api, admin_role: User, gone_everywhere: Message) -> None:
    before = everywhere(GONE)
    assert all(before[place] for place in ("message.recipient", "message.context", "message.last_reply", "event.recipient",
                                            "suppression.address", "trigger.response")), before
    response = api_as(admin_role).post(ERASURES_URL, {"address": "Gone@Example.org"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"messages": 3, "triggers": 2, "suppressions": 2, "events": 1, "mentions": 0}
    assert everywhere(GONE) == dict.fromkeys(before, 0)
    assert Message.objects.filter(recipient="").count() == 3
    # The bystanders are untouched.
    assert everywhere("bygone@example.org") == {**dict.fromkeys(before, 0), "message.recipient": 1, "trigger.response": 1}
    assert Message.objects.filter(recipient="user0@example.org").exists()


def test_after_erasure_queued_mail_to_the_address_is_suppressed_and_never_sent(
    api_as: Api, admin_role: User, gone_everywhere: Message, smtp_sink: Any
) -> None:
    assert api_as(admin_role).post(ERASURES_URL, {"address": GONE}, format="json").status_code == 200
    gone_everywhere.refresh_from_db()
    assert (gone_everywhere.status, gone_everywhere.context) == (MessageStatus.SUPPRESSED, {})
    while batch_send(domain_id=gone_everywhere.sending_domain_id).more:
        pass
    sent_to = [r for _, r in smtp_sink.pairs()]
    assert sent_to and GONE not in [r.lower() for r in sent_to]
    assert Message.objects.get(pk=gone_everywhere.pk).status == MessageStatus.SUPPRESSED


def test_after_erasure_a_new_trigger_naming_the_address_drops_it_as_suppressed(
    api_as: Api, admin_role: User, marketer: User, campaign: Campaign, sending_domain: SendingDomain
) -> None:
    assert api_as(admin_role).post(ERASURES_URL, {"address": GONE}, format="json").status_code == 200
    assert Suppression.objects.get().address == ""
    response = api_as(marketer).post(
        f"/api/v1/campaigns/{campaign.pk}/triggers", {"recipients": [person("Gone@Example.org"), *recipients(1)]},
        format="json", HTTP_IDEMPOTENCY_KEY="after-erasure",
    )
    assert response.status_code == 202, response.content
    assert (response.json()["accepted"], response.json()["suppressed"]) == (1, 1)
    assert not Message.objects.filter(recipient__iexact=GONE).exists()


def test_erasing_an_address_never_seen_still_keeps_it_suppressed(api_as: Api, admin_role: User, campaign: Campaign) -> None:
    response = api_as(admin_role).post(ERASURES_URL, {"address": "never@example.org"}, format="json")
    assert response.json() == {"messages": 0, "triggers": 0, "suppressions": 1, "events": 0, "mentions": 0}
    row = Suppression.objects.get()
    assert (row.address, row.address_hash, row.sending_domain) == ("", address_hash("never@example.org"), None)


# --- schema -------------------------------------------------------------------------------------------------


def test_the_schema_describes_the_feedback_operations(api_as: Api, oncall: User) -> None:
    schema = api_as(oncall).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths[SUPPRESSIONS_URL])
    assert {"get", "delete"} <= set(paths[SUPPRESSIONS_URL + "{suppression_id}/"])
    assert "get" in paths[EVENTS_URL] and "post" in paths[ERASURES_URL]
    upload_op = paths[BOUNCES_URL]["post"]
    assert set(upload_op["requestBody"]["content"]) == {"message/rfc822", "application/octet-stream"}
    assert {"200", "201", "400", "401", "403", "413", "415"} <= set(upload_op["responses"])
