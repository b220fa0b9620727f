"""Suppressions, feedback events and per-minute counters in the admin.

Every role reads them; marketers, on-call and admins add a manual suppression
(through ``suppression_add``); only admins lift one, with the "lift" action.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User

from controlplane.addresses import address_hash
from deliverability.models import DomainMinute, FeedbackEvent, SendingDomain, Suppression
from deliverability.services import Feedback, event_record, suppression_add
from dispatch.services.erasure import address_erase_everywhere

pytestmark = pytest.mark.django_db
SUPPRESSIONS = "/admin/deliverability/suppression/"
EVENTS = "/admin/deliverability/feedbackevent/"
MINUTES = "/admin/deliverability/domainminute/"
ROLES = ["marketer", "oncall", "admin_role"]


@pytest.fixture
def bounced(sending_domain: SendingDomain) -> Suppression:
    """A hard bounce on mail.example.com: its event, the suppression it caused, its minute counter."""
    event, _ = event_record(Feedback(
        event_type="bounced", kind="hard", reason="user_unknown", status="5.1.1", recipient="gone@example.org",
        source="upload", dedupe="admin-test-1", sending_domain=sending_domain, smtp_reply="550 5.1.1 User unknown", verified=True,
    ))
    return Suppression.objects.get(event=event)


def as_role(request: Any, staff_client: Any, role: str) -> Any:
    return staff_client(request.getfixturevalue(role))


def lift(client: Any, *rows: Suppression) -> Any:
    return client.post(SUPPRESSIONS, {"action": "lift", "_selected_action": [row.pk for row in rows]}, follow=True)


# --- reading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_suppressions_with_their_cause(request: Any, staff_client: Any, bounced: Suppression, role: str) -> None:
    page = as_role(request, staff_client, role).get(SUPPRESSIONS)
    assert page.status_code == 200
    html = page.content.decode()
    assert "gone@example.org" in html and "Hard bounce" in html
    assert f"/admin/deliverability/feedbackevent/{bounced.event_id}/change/" in html  # the event it came from


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_feedback_events(request: Any, staff_client: Any, bounced: Suppression, role: str) -> None:
    client = as_role(request, staff_client, role)
    page = client.get(EVENTS)
    assert page.status_code == 200
    assert "gone@example.org" in page.content.decode() and "user_unknown" in page.content.decode()
    assert client.get(f"{EVENTS}{bounced.event_id}/change/").status_code == 200


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_the_minute_counters(request: Any, staff_client: Any, bounced: Suppression, role: str) -> None:
    page = as_role(request, staff_client, role).get(MINUTES)
    assert page.status_code == 200
    row = DomainMinute.objects.get()
    assert row.bounced_hard == 1
    assert f"{MINUTES}{row.pk}/change/" in page.content.decode()


@pytest.mark.parametrize("url", [SUPPRESSIONS, EVENTS, MINUTES, f"{SUPPRESSIONS}add/"])
def test_outsider_is_refused_every_page(outsider: User, staff_client: Any, bounced: Suppression, url: str) -> None:
    assert staff_client(outsider).get(url).status_code == 403


@pytest.mark.parametrize("query", ["gone@example.org", "GONE", "5.1.1"])
def test_events_are_found_by_address_or_status(oncall: User, staff_client: Any, bounced: Suppression, query: str) -> None:
    page = staff_client(oncall).get(EVENTS, {"q": query})
    assert page.status_code == 200
    assert "gone@example.org" in page.content.decode()


def test_a_search_matching_no_event_shows_none(oncall: User, staff_client: Any, bounced: Suppression) -> None:
    page = staff_client(oncall).get(EVENTS, {"q": "other@example.org"})
    assert page.status_code == 200
    assert "gone@example.org" not in page.content.decode()


def test_events_are_found_by_their_message_uuid(oncall: User, staff_client: Any, sending_domain: SendingDomain) -> None:
    message_uuid = uuid.uuid4()
    event_record(Feedback(
        event_type="complained", kind="complaint", recipient="someone@example.org", source="mailbox",
        dedupe="admin-test-2", sending_domain=sending_domain, message_uuid=message_uuid,
    ))
    page = staff_client(oncall).get(EVENTS, {"q": str(message_uuid)})
    assert page.status_code == 200
    assert "someone@example.org" in page.content.decode()


# --- adding by hand ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_adding_by_hand_creates_a_manual_suppression_through_the_service(
    request: Any, staff_client: Any, sending_domain: SendingDomain, role: str
) -> None:
    user = request.getfixturevalue(role)
    response = staff_client(user).post(
        f"{SUPPRESSIONS}add/", {"address": " Ana@Example.org ", "sending_domain": sending_domain.pk, "source": "asked by phone"}
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    row = Suppression.objects.get()
    assert (row.address, row.address_hash, row.reason) == ("ana@example.org", address_hash("ana@example.org"), "manual")
    assert (row.sending_domain, row.created_by, row.source) == (sending_domain, user, f"admin: {user.username}: asked by phone")


def test_adding_an_address_already_suppressed_is_no_error_and_keeps_the_first(
    marketer: User, staff_client: Any, bounced: Suppression
) -> None:
    response = staff_client(marketer).post(f"{SUPPRESSIONS}add/", {"address": "GONE@example.org", "sending_domain": ""})
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert [(row.pk, row.reason) for row in Suppression.objects.all()] == [(bounced.pk, "hard_bounce")]


@pytest.mark.parametrize("address", ["not-an-address", "ana@", "@example.org", "ana @example.org", ""])
def test_adding_something_that_is_not_an_address_is_a_form_error(marketer: User, staff_client: Any, address: str) -> None:
    response = staff_client(marketer).post(f"{SUPPRESSIONS}add/", {"address": address, "sending_domain": ""})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["address"]
    assert not Suppression.objects.exists()


# --- lifting ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["marketer", "oncall"])
def test_only_admins_can_lift(request: Any, staff_client: Any, bounced: Suppression, role: str) -> None:
    client = as_role(request, staff_client, role)
    assert b'value="lift"' not in client.get(SUPPRESSIONS).content
    lift(client, bounced)
    assert client.post(f"{SUPPRESSIONS}{bounced.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Suppression.objects.filter(pk=bounced.pk).exists()


def test_an_admin_lifts_with_the_action_and_the_events_stay(admin_role: User, staff_client: Any, bounced: Suppression) -> None:
    manual, _ = suppression_add(address="ana@example.org", reason="manual")
    kept, _ = suppression_add(address="bo@example.org", reason="manual")
    client = staff_client(admin_role)
    assert b'value="lift"' in client.get(SUPPRESSIONS).content
    page = lift(client, bounced, manual)
    assert "2 suppression(s) lifted." in page.content.decode()
    assert list(Suppression.objects.all()) == [kept]
    assert FeedbackEvent.objects.filter(pk=bounced.event_id).exists()


def test_there_is_no_bulk_delete_that_bypasses_the_service(admin_role: User, staff_client: Any, bounced: Suppression) -> None:
    client = staff_client(admin_role)
    assert b'value="delete_selected"' not in client.get(SUPPRESSIONS).content
    client.post(SUPPRESSIONS, {"action": "delete_selected", "_selected_action": [bounced.pk], "post": "yes"})
    assert Suppression.objects.filter(pk=bounced.pk).exists()


# --- erased addresses -------------------------------------------------------------------------------


def test_an_erased_address_shows_as_erased(oncall: User, staff_client: Any, bounced: Suppression) -> None:
    address_erase_everywhere(address="gone@example.org")
    client = staff_client(oncall)
    suppressions, events = client.get(SUPPRESSIONS).content.decode(), client.get(EVENTS).content.decode()
    assert "(erased)" in suppressions and "(erased or none)" in events
    assert "gone@example.org" not in suppressions + events


def test_erasure_removes_the_address_from_the_admin_history(marketer: User, admin_role: User, staff_client: Any) -> None:
    client = staff_client(marketer)
    for address in ("gone@example.org", "bygone@example.org"):
        assert client.post(f"{SUPPRESSIONS}add/", {"address": address, "sending_domain": ""}).status_code == 302
    assert LogEntry.objects.filter(object_repr__contains="gone@example.org").count() == 2
    address_erase_everywhere(address="Gone@example.org", requested_by=admin_role)
    assert list(LogEntry.objects.order_by("pk").values_list("object_repr", flat=True)) == ["erased", "bygone@example.org (manual)"]
