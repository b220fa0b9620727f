"""One-click unsubscribe (RFC 8058): POST suppresses at once and idempotently; GET never does."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from deliverability.models import Suppression
from dispatch.models import Message
from dispatch.services.triggers import trigger_accept
from dispatch.services.unsubscribe import unsubscribe_token
from tests.conftest import recipients

pytestmark = pytest.mark.django_db


@pytest.fixture
def message(campaign: Any) -> Message:
    trigger_accept(campaign=campaign, idempotency_key="k", recipients=recipients(1))
    return Message.objects.get()


def test_one_click_post_suppresses_for_the_domain(message: Message) -> None:
    response = Client().post(f"/u/{unsubscribe_token(message)}", {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    row = Suppression.objects.get()
    assert (row.address, row.sending_domain_id, row.reason) == ("user0@example.org", message.sending_domain_id, "unsubscribed")


def test_repeated_post_changes_nothing(message: Message) -> None:
    for _ in range(3):
        assert Client().post(f"/u/{unsubscribe_token(message)}").status_code == 200
    assert Suppression.objects.count() == 1


def test_get_shows_a_button_and_suppresses_nothing(message: Message) -> None:
    response = Client().get(f"/u/{unsubscribe_token(message)}")
    assert response.status_code == 200 and b"<form method=\"post\">" in response.content
    assert not Suppression.objects.exists()


@pytest.mark.parametrize("token", ["nonsense", "0" * 32 + ".deadbeefdeadbeef", "%s.%s"])
def test_forged_or_malformed_token_is_404(message: Message, token: str) -> None:
    if token == "%s.%s":
        token = f"{message.uuid.hex}.{'0' * 16}"
    assert Client().post(f"/u/{token}").status_code == 404
    assert not Suppression.objects.exists()


def test_token_fits_a_mailto_local_part(message: Message) -> None:
    assert len("unsubscribe+" + unsubscribe_token(message)) <= 64
