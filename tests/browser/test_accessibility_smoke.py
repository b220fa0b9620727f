"""The axe-core helper itself finds what it should: a page with an unlabelled input and low contrast fails."""

from __future__ import annotations

from playwright.sync_api import Page

from tests.browser.conftest import axe_serious


def test_axe_reports_a_serious_violation_and_passes_a_clean_page(page: Page) -> None:
    head = '<html lang="en"><head><title>x</title></head><body><main>'
    page.set_content(f'{head}<input type="text"></main></body></html>')
    assert any(line.startswith("label (critical)") for line in axe_serious(page))
    page.set_content(f'{head}<label>Name <input type="text"></label></main></body></html>')
    assert axe_serious(page) == []
