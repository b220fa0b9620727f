"""The version preview in a real browser (issue 19): what a marketer checks before trusting it.

Desktop and mobile frames side by side at their widths, Gmail's clipping line
inside them for a long template (and not for a short one), the plain-text tab
by keyboard, an edited context rendered, the dark emulations changing what the
frames compute, and axe-core finding nothing serious in the admin's own
controls (the frames hold the template author's HTML and are left out).

Each test leaves var/test-artifacts/<test name>.png (the ``page`` fixture).
"""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import FrameLocator, Page, expect

from templates_registry.models import Variant, VariantVersion
from templates_registry.preview import CLIP_ATTRIBUTE, CLIP_LABEL
from tests.browser.conftest import axe_serious, login
from tests.conftest import SIMPLE_VARIABLES
from tests.test_preview import dark_mjml, long_mjml, make_version, preview_url

pytestmark = pytest.mark.django_db(transaction=True)

CLIP_LINE = f"[{CLIP_ATTRIBUTE}]"


@pytest.fixture(autouse=True)
def _offline(page: Page) -> None:
    """The corpus's pictures and MJML's web font live on the internet, which tests do not reach: refused at once, rather
    than left hanging, since a frame paints only once its head's stylesheets are in (the screenshots would be blank)."""
    page.context.route(re.compile(r"^https?://(?!localhost[:/]|127\.0\.0\.1[:/])"), lambda route: route.abort())


def frame(page: Page, which: str) -> FrameLocator:
    return page.frame_locator(f"iframe.sp-{which}")


def test_a_long_template_shows_gmails_clip_line_in_both_frames_side_by_side(page: Page, marketer: User, variant: Variant) -> None:
    version = make_version(variant, long_mjml())
    login(page, marketer)
    page.goto(preview_url(version))

    expect(page.locator(".sp-clip")).to_contain_text("Gmail clips this message: its HTML is 1")
    expect(page.locator(".sp-clip")).to_contain_text("the unsubscribe link included")
    for which in ("desktop", "mobile"):
        line = frame(page, which).locator(CLIP_LINE)
        expect(line).to_have_count(1)
        expect(line).to_have_text(CLIP_LABEL)
        expect(line).to_be_visible()
        assert line.evaluate("e => getComputedStyle(e).borderTopStyle") == "dashed"
        expect(frame(page, which).get_by_text("Hello Ana")).to_be_visible()
    desktop, mobile = page.locator("iframe.sp-desktop"), page.locator("iframe.sp-mobile")
    assert (desktop.evaluate("e => e.clientWidth"), mobile.evaluate("e => e.clientWidth")) == (640, 375)
    left, right = desktop.bounding_box(), mobile.bounding_box()
    assert left and right and left["y"] == right["y"] and right["x"] >= left["x"] + left["width"]
    frame(page, "desktop").locator(CLIP_LINE).scroll_into_view_if_needed()  # the screenshot shows the cut
    frame(page, "mobile").locator(CLIP_LINE).scroll_into_view_if_needed()


def test_a_short_template_is_not_clipped(page: Page, marketer: User, version: VariantVersion) -> None:
    login(page, marketer)
    page.goto(preview_url(version))

    expect(page.locator(".sp-clip")).to_contain_text("Gmail: not clipped (")
    expect(frame(page, "desktop").get_by_text("Hello Ana")).to_be_visible()
    expect(frame(page, "desktop").locator(CLIP_LINE)).to_have_count(0)
    expect(frame(page, "mobile").locator(CLIP_LINE)).to_have_count(0)


def test_the_plain_text_tab_is_reached_by_keyboard(page: Page, marketer: User, version: VariantVersion) -> None:
    login(page, marketer)
    page.goto(preview_url(version))
    html_tab, text_tab = page.get_by_role("tab", name="HTML: desktop and mobile"), page.get_by_role("tab", name="Plain text")
    expect(page.locator("#sp-panel-text")).to_be_hidden()

    html_tab.focus()
    page.keyboard.press("ArrowRight")

    expect(text_tab).to_be_focused()
    expect(text_tab).to_have_attribute("aria-selected", "true")
    expect(page.locator("#sp-panel-html")).to_be_hidden()
    text = page.get_by_role("tabpanel", name="Plain text")
    expect(text).to_contain_text("Hello Ana")
    expect(text).to_contain_text("1. Hat")
    page.keyboard.press("ArrowLeft")
    expect(html_tab).to_have_attribute("aria-selected", "true")
    expect(page.locator("iframe.sp-desktop")).to_be_visible()


def test_editing_the_sample_context_renders_the_new_value(page: Page, marketer: User, version: VariantVersion) -> None:
    login(page, marketer)
    page.goto(preview_url(version))

    page.get_by_label("Context (JSON)").fill(json.dumps({**SIMPLE_VARIABLES, "first_name": "Zoë"}, indent=2))
    page.get_by_role("button", name="Render with this context").click()

    expect(frame(page, "desktop").get_by_text("Hello Zoë")).to_be_visible()
    expect(frame(page, "mobile").get_by_text("Hello Zoë")).to_be_visible()
    expect(page.locator(".sp-inbox")).to_contain_text("Hi Zoë")
    expect(page.locator("#sp-source")).to_contain_text("the context entered below, not saved")

    page.get_by_label("Context (JSON)").fill('{"first_name": ')
    page.get_by_role("button", name="Render with this context").click()
    expect(page.get_by_role("alert")).to_have_text('Enter the context as a JSON object, e.g. {"first_name": "Ana"}.')
    expect(frame(page, "desktop").get_by_text("Hello Ana")).to_be_visible()


def test_dark_mode_changes_what_the_frames_compute(page: Page, marketer: User, variant: Variant) -> None:
    version = make_version(variant, dark_mjml())
    login(page, marketer)
    page.goto(preview_url(version))
    body = frame(page, "desktop").locator("body")
    html = frame(page, "mobile").locator("html")
    expect(body).to_have_css("background-color", "rgba(0, 0, 0, 0)")
    expect(html).to_have_css("filter", "none")

    page.get_by_label("Dark: the template's own dark rules").check()
    expect(body).to_have_css("background-color", "rgb(17, 17, 17)")
    expect(frame(page, "mobile").locator("body")).to_have_css("background-color", "rgb(17, 17, 17)")

    page.get_by_label("Dark: colours inverted").check()
    expect(html).to_have_css("filter", "invert(1) hue-rotate(180deg)")
    expect(frame(page, "desktop").locator("body")).to_have_css("background-color", "rgba(0, 0, 0, 0)")  # Gmail ignores the rules

    page.get_by_label("Light").check()
    expect(html).to_have_css("filter", "none")
    page.get_by_label("Dark: colours inverted").check()  # the screenshot shows the inverted copy, once it is in
    expect(html).to_have_css("filter", "invert(1) hue-rotate(180deg)")
    expect(frame(page, "desktop").get_by_text("Hello Ana")).to_be_visible()


def test_the_preview_has_no_serious_accessibility_violations(page: Page, marketer: User, variant: Variant) -> None:
    version = make_version(variant, long_mjml())
    login(page, marketer)
    page.goto(preview_url(version))
    expect(frame(page, "desktop").locator(CLIP_LINE)).to_have_count(1)

    assert axe_serious(page, exclude=["iframe"]) == []
    page.get_by_label("Context (JSON)").fill("[1, 2]")
    page.get_by_role("button", name="Render with this context").click()
    expect(page.get_by_role("alert")).to_contain_text("must be a JSON object")
    page.get_by_role("tab", name="Plain text").click()
    assert axe_serious(page, exclude=["iframe"]) == []
