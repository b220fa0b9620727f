"""Campaign and message pages in the admin: visible to every role, changed by none."""

from __future__ import annotations

from typing import Any

import pytest

from dispatch.services.triggers import trigger_accept
from tests.conftest import recipients

pytestmark = pytest.mark.django_db


def test_marketer_watches_campaign_progress(campaign: Any, marketer: Any, staff_client: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(4))
    page = staff_client(marketer).get("/admin/dispatch/campaign/")
    assert page.status_code == 200
    assert b'<progress max="4" value="0"></progress> 0 sent, 0 failed, 4 waiting' in page.content


@pytest.mark.parametrize("url", ["/admin/dispatch/message/", "/admin/deliverability/sendingdomain/", "/admin/deliverability/suppression/"])
def test_oncall_can_read_the_lists(url: str, oncall: Any, campaign: Any, staff_client: Any) -> None:
    assert staff_client(oncall).get(url).status_code == 200


def test_nobody_edits_messages_in_the_admin(campaign: Any, admin_role: Any, staff_client: Any) -> None:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(1))
    from dispatch.models import Message

    message = Message.objects.get()
    client = staff_client(admin_role)
    assert client.post(f"/admin/dispatch/message/{message.pk}/change/", {"status": "sent"}).status_code == 403
    message.refresh_from_db()
    assert message.status == "queued"


def test_outsider_sees_no_dispatch_pages(outsider: Any, staff_client: Any) -> None:
    assert staff_client(outsider).get("/admin/dispatch/campaign/").status_code == 403
