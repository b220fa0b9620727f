"""Issue 19: axe-core finds no serious or critical violation on the admin's pages a person works in.

The home page, a domain page and a version preview have their own tests (test_home_and_domain_pages.py,
test_preview_page.py); here: a campaign's page with its results, the charts page, the lists and a version's page,
each checked as a marketer and as on-call would see them. Each test leaves var/test-artifacts/<test name>.png.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from dispatch.models import Campaign
from templates_registry.models import VariantVersion
from tests.browser.conftest import axe_serious, login
from tests.browser.test_issue17_pages import ab_campaign, counts  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_campaign_page_with_its_results_has_no_serious_violation(
    page: Page, marketer: User, ab_campaign: Campaign  # noqa: F811 - the imported fixture
) -> None:
    counts(ab_campaign, {"a": {"accepted": 500, "sent": 480, "complained": 2}, "b": {"accepted": 500, "sent": 490}})
    login(page, marketer)
    page.goto(f"/admin/dispatch/campaign/{ab_campaign.pk}/change/")
    expect(page.get_by_text("Welcome wave").first).to_be_visible()
    assert axe_serious(page) == []


@pytest.mark.parametrize(
    "path",
    [
        "/admin/cockpit/",
        "/admin/dispatch/campaign/",
        "/admin/deliverability/sendingdomain/",
        "/admin/deliverability/suppression/",
        "/admin/audit/auditentry/",
        "/admin/templates_registry/variantversion/",
    ],
)
def test_the_lists_and_the_charts_page_have_no_serious_violation(
    page: Page, oncall: User, ab_campaign: Campaign, path: str  # noqa: F811 - the imported fixture
) -> None:
    login(page, oncall)
    page.goto(path)
    expect(page.locator("#site-name")).to_have_text("Sendplane")
    assert axe_serious(page) == []


def test_a_versions_page_has_no_serious_violation(page: Page, marketer: User, ab_campaign: Any) -> None:  # noqa: F811
    version = VariantVersion.objects.filter(variant__template=ab_campaign.template).first()
    assert version is not None
    login(page, marketer)
    page.goto(f"/admin/templates_registry/variantversion/{version.pk}/change/")
    assert axe_serious(page) == []
