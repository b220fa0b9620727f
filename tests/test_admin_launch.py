"""The admin's "Launch a campaign" page: marketers and admins launch, others are refused; bad input changes nothing."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.messages import get_messages

from audit.models import AuditEntry
from deliverability.services import suppression_add
from dispatch.models import Campaign, Message, Trigger
from tests.conftest import SIMPLE_VARIABLES

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/dispatch/campaign/"
LAUNCH = "/admin/dispatch/campaign/launch/"


def form(template: Any, domain: Any, recipients: str, name: str = "Spring sale") -> dict[str, Any]:
    return {"name": name, "template": template.pk, "sending_domain": domain.pk, "recipients": recipients}


def written() -> tuple[int, int, int, int]:
    """What a launch writes; the tokens and versions made by fixtures are audited too, so only its own actions count."""
    audited = AuditEntry.objects.filter(action__in=["campaign.create", "trigger.accept"]).count()
    return Campaign.objects.count(), Trigger.objects.count(), Message.objects.count(), audited


def notices(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- roles ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["marketer", "admin_role"])
def test_marketers_and_admins_see_the_button_and_the_form(actor: str, staff_client: Any, request: Any, sending_domain: Any) -> None:
    client = staff_client(request.getfixturevalue(actor))
    assert f'href="{LAUNCH}"' in client.get(CHANGELIST).content.decode()
    page = client.get(LAUNCH)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="recipients"' in html and "mail.example.com" in html


@pytest.mark.parametrize("actor", ["oncall", "outsider"])
def test_oncall_and_outsiders_are_refused_and_launch_nothing(
    actor: str, staff_client: Any, request: Any, approved_version: Any, sending_domain: Any
) -> None:
    client = staff_client(request.getfixturevalue(actor))
    before = written()
    assert client.get(LAUNCH).status_code == 403
    assert client.post(LAUNCH, form(approved_version.variant.template, sending_domain, "a@example.org")).status_code == 403
    assert written() == before
    if actor == "oncall":  # reads the campaign list, without the button
        assert LAUNCH not in client.get(CHANGELIST).content.decode()


def test_anonymous_is_sent_to_the_login(client: Any) -> None:
    response = client.get(LAUNCH)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


# --- success -----------------------------------------------------------------------------------------


def test_a_pasted_list_launches_with_sample_values_filling_what_is_missing(
    staff_client: Any, marketer: Any, approved_version: Any, sending_domain: Any
) -> None:
    template = approved_version.variant.template
    response = staff_client(marketer).post(LAUNCH, form(template, sending_domain, "zoe@example.org, Zoé\n\nbob@example.org\n"))
    campaign = Campaign.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/admin/dispatch/campaign/{campaign.pk}/change/"
    assert (campaign.name, campaign.template, campaign.sending_domain, campaign.created_by) == (
        "Spring sale", template, sending_domain, marketer
    )
    contexts = dict(Message.objects.values_list("recipient", "context"))
    assert contexts == {"zoe@example.org": SIMPLE_VARIABLES | {"first_name": "Zoé"}, "bob@example.org": SIMPLE_VARIABLES}
    assert notices(response) == ["Launched “Spring sale”: 2 accepted, 0 suppressed, 0 rejected. Its progress is below."]
    key = Trigger.objects.get().idempotency_key
    assert re.fullmatch(r"admin-launch-[0-9a-f]{32}", key)


def test_the_result_counts_suppressed_and_rejected_and_the_campaign_page_shows_progress(
    staff_client: Any, admin_role: Any, approved_version: Any, sending_domain: Any
) -> None:
    suppression_add(address="gone@example.org", reason="hard_bounce")
    client = staff_client(admin_role)
    lines = "ok@example.org\ngone@example.org\nnot-an-address\n"
    response = client.post(LAUNCH, form(approved_version.variant.template, sending_domain, lines), follow=True)
    html = response.content.decode()
    assert "1 accepted, 1 suppressed, 1 rejected" in html
    assert "Rejected not-an-address: invalid address" in html
    assert '<progress max="1" value="0"></progress> 0 sent, 0 failed, 1 waiting' in html  # the campaign's own page
    assert '<meta http-equiv="refresh" content="3">' in html  # watching it needs no reload by hand


def test_a_json_list_gives_each_recipient_its_context(staff_client: Any, marketer: Any, approved_version: Any, sending_domain: Any) -> None:
    recipients = [{"address": "ana@example.org", "context": {"items": ["Boots"]}}, {"address": "eve@example.org"}]
    staff_client(marketer).post(LAUNCH, form(approved_version.variant.template, sending_domain, json.dumps(recipients)))
    contexts = dict(Message.objects.values_list("recipient", "context"))
    assert contexts == {"ana@example.org": SIMPLE_VARIABLES | {"items": ["Boots"]}, "eve@example.org": SIMPLE_VARIABLES}


def test_a_campaign_whose_messages_are_done_does_not_reload(
    staff_client: Any, marketer: Any, approved_version: Any, sending_domain: Any
) -> None:
    client = staff_client(marketer)
    client.post(LAUNCH, form(approved_version.variant.template, sending_domain, "done@example.org"))
    Message.objects.update(status="sent")
    html = client.get(f"/admin/dispatch/campaign/{Campaign.objects.get().pk}/change/").content.decode()
    assert "1 sent, 0 failed, 0 waiting" in html and 'http-equiv="refresh"' not in html


# --- bad input: the service's one line on the form, nothing written -------------------------------------


@pytest.mark.parametrize(
    ("recipients", "error"),
    [
        ("", "This field is required."),
        ("a@example.org,Ana,extra", "line 1: expected address or address,first_name, got 3 columns"),
        ('[{"address": "a@example.org"', "not valid JSON: Expecting"),
        ('[{"email": "a@example.org"}]', "item 0: expected an object with address and optional context"),
        ('[{"address": "a@example.org", "context": [1]}]', "item 0: context must be an object"),
        ("nobody\nnothing", "every recipient was rejected; first: #0 invalid address"),
    ],
)
def test_bad_recipients_are_one_line_on_the_form_and_change_nothing(
    staff_client: Any, marketer: Any, approved_version: Any, sending_domain: Any, recipients: str, error: str
) -> None:
    before = written()
    page = staff_client(marketer).post(LAUNCH, form(approved_version.variant.template, sending_domain, recipients))
    assert page.status_code == 200
    assert error in page.content.decode()
    assert written() == before


def test_a_template_without_an_approved_version_is_refused_and_leaves_no_campaign(
    staff_client: Any, marketer: Any, version: Any, sending_domain: Any
) -> None:
    before = written()
    page = staff_client(marketer).post(LAUNCH, form(version.variant.template, sending_domain, "a@example.org"))
    assert page.status_code == 200
    assert "template &#x27;welcome&#x27; has no approved version to send" in page.content.decode()
    assert written() == before


def test_a_transactional_launch_ignores_marketing_withdrawals(staff_client: Any, marketer: Any, campaign: Any) -> None:
    from deliverability.services.consent import consent_withdraw

    consent_withdraw(address="ana@example.org", purpose="marketing", source="preference centre")
    client = staff_client(marketer)
    marketing = client.post(LAUNCH, form(campaign.template, campaign.sending_domain, "ana@example.org\nben@example.org", name="M"))
    transactional = client.post(
        LAUNCH, form(campaign.template, campaign.sending_domain, "ana@example.org", name="T") | {"purpose": "transactional"}
    )
    assert marketing.status_code == transactional.status_code == 302
    made = {c.name: c for c in Campaign.objects.filter(name__in=["M", "T"])}
    assert (made["M"].purpose, made["T"].purpose) == ("marketing", "transactional")
    assert list(Message.objects.filter(campaign=made["M"]).values_list("recipient", flat=True)) == ["ben@example.org"]
    assert list(Message.objects.filter(campaign=made["T"]).values_list("recipient", flat=True)) == ["ana@example.org"]
