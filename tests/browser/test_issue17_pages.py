"""Issue 17's pages in a real browser: a campaign's results per variant and their chart, the domain settings form
refusing a DKIM key that is not the published one, rolling a variant back, a quarantine seen and restored by a marketer.

Each test leaves var/test-artifacts/<test name>.png (the ``page`` fixture).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from audit.models import AuditEntry
from deliverability.assessments import version_assess
from deliverability.models import SendingDomain
from dispatch.models import Campaign, Quarantine
from dispatch.services.campaigns import campaign_create
from dispatch.services.guardrails import guardrails_check
from dispatch.services.results import results_add
from templates_registry import services
from templates_registry.models import Template, Variant, VariantVersion, VersionStatus
from tests.browser.conftest import login, off_the_loop
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES
from tests.dns_server import DnsServer, dns_server  # noqa: F401 - the fixture
from tests.test_domain_settings import dkim_txt, p_of, rsa_key

pytestmark = pytest.mark.django_db(transaction=True)

ZONE = "shop-one.net"  # not a reserved name: the DKIM record is looked up, on the loopback DNS server
DOMAIN = f"mail.{ZONE}"
RECORD = f"s1._domainkey.{DOMAIN}"
PRICE_MICROS = 800  # 0.80 a thousand messages


def approved(variant: Variant, subject: str, approver: User) -> VariantVersion:
    """A version through the real gate: scored by the real spamd (off the browser's loop), approved by ``approver``.

    Created with no creator, so four-eyes does not hold it for a second person (tests/test_version_lifecycle.py).
    """
    version = services.version_create(
        variant=variant, mjml_body=SIMPLE_MJML, subject=subject, sender_name="Atelier",
        preheader="Picked for {{ first_name }}", variables=SIMPLE_VARIABLES,
    )
    assessment = off_the_loop(version_assess, version_id=version.pk)
    assert assessment is not None and assessment.state == "scored", assessment and assessment.not_scored_reason
    return services.version_approve(version=version, approved_by=approver)


@pytest.fixture
def ab_campaign(marketer: User, sending_domain: SendingDomain) -> Campaign:
    """A campaign whose template has two live variants, a and b, each with one approved version."""
    template = services.template_create(slug="welcome", name="Welcome")
    for slug, subject in (("a", "Hi {{ first_name }}"), ("b", "Hello {{ first_name }}")):
        approved(services.variant_create(template=template, slug=slug, weight=1), subject, marketer)
    return campaign_create(name="Welcome wave", template=template, sending_domain=sending_domain, created_by=marketer)


def counts(campaign: Campaign, rows: dict[str, dict[str, int]]) -> None:
    """Results written straight into the counters (dispatch/services/results.py), per variant slug; cost at 0.80 / 1000."""
    live = {v.variant.slug: v for v in VariantVersion.objects.filter(variant__template=campaign.template).select_related("variant")}
    results_add({
        (campaign.pk, live[slug].pk): {**row, "cost_micros": row.get("sent", 0) * PRICE_MICROS} for slug, row in rows.items()
    })


# --- 1. the campaign page: results per variant, and their chart -----------------------------------------------------


def test_campaign_page_shows_results_per_variant_with_a_chart(page: Page, marketer: User, ab_campaign: Campaign) -> None:
    counts(ab_campaign, {
        "a": {"accepted": 4000, "sent": 3990, "failed": 10, "bounced_hard": 20, "complained": 4, "unsubscribed": 12,
              "opened": 1600, "clicked": 240},
        "b": {"accepted": 4000, "sent": 3980, "failed": 20, "bounced_hard": 35, "complained": 2, "unsubscribed": 8,
              "opened": 1400, "clicked": 300},
    })
    login(page, marketer)
    page.goto("/admin/dispatch/campaign/")
    page.get_by_role("link", name="Welcome wave").click()
    expect(page.locator("#content h1")).to_have_text("View campaign")

    field = page.locator(".form-row.field-results")
    table = field.locator("table.results")
    expect(table).to_be_visible()
    expect(table.locator("thead th")).to_have_text(["count", "a v1", "b v1", "all"])  # a column per version, and the total
    expect(table.locator("tbody th")).to_contain_text(["accepted", "sent", "failed", "bounced hard", "complained", "unsubscribed",
                                                       "opened", "clicked", "cost (USD)"])
    sent = table.locator("tbody tr", has=page.locator("th", has_text=re.compile("^sent$")))
    expect(sent.locator("td")).to_have_text(["3990", "3980", "7970"])
    cost = table.locator("tbody tr.cost")
    expect(cost.locator("th")).to_have_text("cost (USD)")
    expect(cost.locator("td")).to_have_text(["3.19", "3.18", "6.38"])  # 3,990 and 3,980 sent at 0.80 a thousand
    within(cost.locator("td").last, field)  # not cut off at the field's edge: a person reads the total cost

    chart = page.locator(".field-results svg.results-chart")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] >= 600 and box["height"] > 100, box
    expect(chart).to_have_attribute("aria-label", re.compile(r"complaint rate a v1 0\.10%, b v1 0\.05%"))
    for rate in ("bounce", "complaint", "unsubscribe", "click", "open"):
        expect(chart.locator("text", has_text=re.compile(rf"^{rate} rate$"))).to_have_count(1)
    bars = chart.locator("g")
    expect(bars).to_have_count(10)  # five rates, a bar for each of the two versions
    widths = [float(w) for w in chart.locator("rect").evaluate_all("rects => rects.map(r => r.getAttribute('width'))")]
    assert len(widths) == 10 and min(widths) >= 40, widths  # every bar readable, 0.05% complaints beside 40% opens
    within(chart, field)
    # A bar's hover text: the count, its denominator, the rate and its 95% interval.
    complaint_a = chart.locator("g", has=page.locator("title", has_text="a v1: 4 of 3990"))
    expect(complaint_a).to_have_count(1)
    expect(complaint_a.locator("title")).to_have_text(re.compile(r"^a v1: 4 of 3990, 0\.10% \(95%: 0\.04% to 0\.26%\)$"))
    click_b = chart.locator("title", has_text="b v1: 300 of 3980")
    expect(click_b).to_have_text(re.compile(r"7\.54% \(95%: \d\.\d\d% to \d\.\d\d%\)"))
    bounce_b = chart.locator("title", has_text="b v1: 35 of 4000")  # bounces over messages answered (sent + failed)
    expect(bounce_b).to_have_count(1)
    expect(field.locator(".help")).to_contain_text("whiskers: 95% intervals")
    within(field.locator(".help"), field)
    expect(page.locator(".field-quarantined")).to_contain_text("None: every variant is within the guardrails.")


def within(inner: Any, outer: Any) -> None:
    """``inner`` is laid out inside ``outer`` (whose overflow the admin hides): nothing of it is cut off."""
    a, b = inner.bounding_box(), outer.bounding_box()
    assert a is not None and b is not None
    assert b["x"] <= a["x"] and a["x"] + a["width"] <= b["x"] + b["width"], (a, b)


# --- 2. the domain settings form refuses a key that is not the published one --------------------------------------


def test_domain_settings_form_refuses_a_bad_dkim_key(
    page: Page, admin_role: User, tmp_path: Path, artifacts: Path, dns_server: DnsServer  # noqa: F811 - the imported fixture
) -> None:
    wrong_path, _ = rsa_key(tmp_path, "old.pem")
    right_path, published = rsa_key(tmp_path, "new.pem")
    dns_server.add_zone(ZONE, {"s1._domainkey.mail": [dkim_txt(p_of(published))], "mail": ["A 192.0.2.25"]})

    login(page, admin_role)
    page.goto("/admin/deliverability/sendingdomain/")
    page.get_by_role("link", name=re.compile("Add sending domain", re.I)).click()
    page.fill("#id_domain", DOMAIN)
    page.fill("#id_default_sender", f"news@{DOMAIN}")
    page.fill("#id_rate_per_second", "20")
    page.fill("#id_burst", "40")
    page.fill("#id_dkim_selector", "s1")
    page.fill("#id_dkim_key_path", str(wrong_path))
    page.click("input[name=_save]")

    expect(page.locator(".errornote")).to_be_visible()
    row = page.locator(".form-row.field-dkim_key_path")
    errors = row.locator(".errorlist li")
    expect(errors).to_have_count(1)
    expect(errors).to_have_text(f"the key's public half is not the one published at {RECORD} (p= differs)")
    expect(page.locator(".errorlist li")).to_have_count(1)  # on that field only
    expect(page.locator("#id_dkim_key_path")).to_have_value(str(wrong_path))  # as typed, to be fixed
    assert dns_server.queries_for(RECORD, "TXT"), dns_server.queries
    assert not SendingDomain.objects.filter(domain=DOMAIN).exists()
    assert not AuditEntry.objects.filter(action="domain.create").exists()
    page.screenshot(path=str(artifacts / "test_domain_settings_form_refuses_a_bad_dkim_key-refused.png"), full_page=True)

    page.fill("#id_dkim_key_path", str(right_path))
    page.click("input[name=_save]")

    expect(page).to_have_url(re.compile(r"/admin/deliverability/sendingdomain/$"))
    expect(page.locator(".messagelist .success")).to_contain_text(f"{DOMAIN}” was added successfully")
    expect(page.locator(".messagelist .warning")).to_have_count(0)  # DNS answered: not "saved without checking"
    expect(page.locator("#result_list tbody tr", has_text=DOMAIN)).to_have_count(1)
    row_saved = SendingDomain.objects.get(domain=DOMAIN)
    assert (row_saved.dkim_selector, row_saved.dkim_key_path, row_saved.rate_per_second) == ("s1", str(right_path), 20.0)
    entry = AuditEntry.objects.get(action="domain.create")
    assert entry.actor == admin_role and entry.data["dkim_dns"] == f"matches {RECORD}"


# --- 3. rolling a variant back to its earlier version ----------------------------------------------------------------


def test_rollback_action_makes_an_earlier_version_live(page: Page, marketer: User, admin_role: User, artifacts: Path) -> None:
    template = services.template_create(slug="welcome", name="Welcome")
    variant = services.variant_create(template=template, slug="a", weight=1)
    v1 = approved(variant, "First {{ first_name }}", admin_role)
    v2 = approved(variant, "Second {{ first_name }}", admin_role)
    assert Template.objects.get(pk=template.pk).four_eyes  # on, and not in the way: nobody created these versions

    login(page, marketer)
    page.goto("/admin/templates_registry/variantversion/")
    page.get_by_role("link", name="welcome/a v1").click()
    expect(page.locator(".field-status .readonly")).to_have_text("Approved")
    expect(page.locator(".sp-retire button")).to_be_visible()  # approved, but not the live one: v2 is newer
    page.locator(".sp-rollback button").click()

    expect(page.locator("#content")).to_contain_text("Roll back to the selected versions:")
    expect(page.locator("#content li", has_text="welcome/a v1")).to_be_visible()
    page.get_by_role("button", name="Roll back to the selected versions").click()
    # No reason, no rollback: the browser holds the form back on the required box.
    assert page.locator("#id_reason").evaluate("box => box.validationMessage"), "the reason box is not required"
    expect(page.locator("#id_reason")).to_be_focused()
    assert VariantVersion.objects.get(pk=v2.pk).status == VersionStatus.APPROVED

    page.fill("#id_reason", "v2's subject line converts worse")
    page.get_by_role("button", name="Roll back to the selected versions").click()
    expect(page.locator(".messagelist .success")).to_have_text("Rolled welcome/a back to v1 (retired v2).")
    statuses = page.locator("#result_list tbody tr")
    expect(statuses.filter(has_text="welcome/a v2").locator("td.field-status")).to_have_text("Retired")
    expect(statuses.filter(has_text="welcome/a v1").locator("td.field-status")).to_have_text("Approved")
    page.screenshot(path=str(artifacts / "test_rollback_action_makes_an_earlier_version_live-list.png"), full_page=True)

    assert dict(VariantVersion.objects.filter(variant=variant).values_list("number", "status")) == {
        1: VersionStatus.APPROVED, 2: VersionStatus.RETIRED,
    }
    assert VariantVersion.objects.count() == 2  # no new version
    entry = AuditEntry.objects.get(action="version.rollback")
    assert (entry.actor, entry.reason, entry.target_id) == (marketer, "v2's subject line converts worse", str(v1.pk))

    page.get_by_role("link", name="welcome/a v1").click()  # the live one now: nothing to roll back to
    expect(page.locator(".field-status .readonly")).to_have_text("Approved")
    expect(page.locator(".sp-approved")).to_contain_text(f"by {admin_role.username}")  # who approved the content stays
    expect(page.locator(".sp-rollback")).to_have_count(0)
    expect(page.locator(".sp-retire button")).to_be_visible()


# --- 4. a quarantine, seen on the campaign page and restored by a marketer ------------------------------------------


def test_a_marketer_sees_the_quarantine_and_restores_it(page: Page, marketer: User, ab_campaign: Campaign, artifacts: Path) -> None:
    counts(ab_campaign, {
        "a": {"accepted": 8000, "sent": 8000, "unsubscribed": 60},
        "b": {"accepted": 8000, "sent": 8000, "unsubscribed": 16},
    })
    [quarantine] = guardrails_check(campaign=ab_campaign)
    variant_a = Variant.objects.get(template=ab_campaign.template, slug="a")
    assert variant_a.weight == 0

    login(page, marketer)
    page.goto("/admin/dispatch/campaign/")
    page.get_by_role("link", name="Welcome wave").click()
    shown = page.locator(".field-quarantined .readonly p")
    expect(shown).to_have_count(1)
    expect(shown).to_have_text(re.compile(
        r"^welcome/a: unsubscribe rate 0\.75% \(60 of 8000\) against its siblings' 0\.20% \(16 of 8000\); "
        r"evidence \d+\.\d > \d+\.\d \(weight 0 until restored\)$"
    ))

    page.screenshot(path=str(artifacts / "test_a_marketer_sees_the_quarantine_and_restores_it-quarantined.png"), full_page=True)
    shown.get_by_role("link", name="welcome/a").click()
    expect(page).to_have_url(re.compile(rf"/admin/dispatch/quarantine/{quarantine.pk}/change/$"))
    expect(page.locator(".field-summary .readonly")).to_contain_text("unsubscribe rate 0.75% (60 of 8000)")

    page.locator(".breadcrumbs").get_by_role("link", name="Quarantines").click()
    page.check(f"input[name=_selected_action][value='{quarantine.pk}']")
    page.select_option("select[name=action]", "restore")
    page.click("button[name=index]")
    expect(page.locator("#content li", has_text="welcome/a quarantined (unsubscribe)")).to_be_visible()
    page.fill("#id_reason", "the unsubscribe footer was too prominent; fixed in v2")
    page.get_by_role("button", name="Restore the selected variants").click()

    expect(page.locator(".messagelist .success")).to_have_text("Welcome/a restored to weight 1.")  # the admin capitalises
    variant_a.refresh_from_db()
    quarantine.refresh_from_db()
    assert variant_a.weight == 1
    assert quarantine.restored_by == marketer and quarantine.restore_reason.startswith("the unsubscribe footer")
    row = page.locator("#result_list tbody tr", has_text="welcome/a")
    expect(row.locator("td.field-restored_by")).to_have_text(marketer.username)

    page.goto(f"/admin/dispatch/campaign/{ab_campaign.pk}/change/")
    expect(shown).to_have_text(re.compile(r"\(restored \d{4}-\d\d-\d\d \d\d:\d\d\)$"))
    expect(page.locator(".field-quarantined")).not_to_contain_text("weight 0 until restored")
    assert Quarantine.objects.filter(restored_at__isnull=True).count() == 0
