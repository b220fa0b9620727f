"""The approval gate in the admin: spam score badges, rules and checks, approve, re-score, compare.

Scores come from the real spamd (ops/test starts it) through deliverability's sandbox.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from celery import current_app
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from deliverability.assessments import version_assess
from templates_registry import services
from templates_registry.admin import score_badge
from templates_registry.models import (
    AssessmentState,
    Template,
    Variant,
    VariantVersion,
    VersionAssessment,
    VersionStatus,
)
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES

SPAMD_DOWN = "spamd at 127.0.0.1:783 is unreachable"
NO_UNSUBSCRIBE_MJML = SIMPLE_MJML.replace(
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a>', '<a href="https://example.com/help">Help</a>'
)


def _url(name: str, *args: Any) -> str:
    return reverse(f"admin:templates_registry_{name}", args=args)


@pytest.fixture
def as_marketer(staff_client: Callable[[User], Client], marketer: User) -> Client:
    return staff_client(marketer)


@pytest.fixture
def scored(version: VariantVersion) -> VariantVersion:
    assessment = version_assess(version_id=version.pk)
    assert assessment is not None and assessment.state == AssessmentState.SCORED, assessment
    return version


@pytest.fixture
def no_unsubscribe(variant: Variant) -> VariantVersion:
    """Scored by spamd, but its body has no unsubscribe link: a blocking pre-send check fails."""
    version = services.version_create(
        variant=variant, mjml_body=NO_UNSUBSCRIBE_MJML, subject="Hi {{ first_name }}", variables=SIMPLE_VARIABLES
    )
    version_assess(version_id=version.pk)
    return version


def _set_threshold(version: VariantVersion, threshold: float) -> None:
    Template.objects.filter(pk=version.variant.template_id).update(spam_threshold=threshold)


def _messages(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


def _approve(client: Client, version: VariantVersion) -> Any:
    return client.post(_url("variantversion_approve", version.pk), follow=True)


def _unchanged(version: VariantVersion) -> None:
    version.refresh_from_db()
    assert version.status != VersionStatus.APPROVED
    assert (version.approved_by, version.approved_at) == (None, None)
    assert not LogEntry.objects.filter(object_id=str(version.pk), change_message="Approved.").exists()


# --- Approving from the version page ---------------------------------------------------------


def test_approve_refused_when_never_scored(as_marketer: Client, version: VariantVersion) -> None:
    response = _approve(as_marketer, version)

    assert response.status_code == 200
    assert _messages(response) == [f"cannot approve {version}: it has not been scored yet"]
    _unchanged(version)


def test_approve_refused_when_spamd_could_not_score(as_marketer: Client, version: VariantVersion) -> None:
    services.assessment_record(version=version, checks=[], report=None, reason=SPAMD_DOWN)

    response = _approve(as_marketer, version)

    assert _messages(response) == [f"cannot approve {version}: it is not scored: {SPAMD_DOWN}"]
    _unchanged(version)


def test_approve_refused_when_a_blocking_check_fails(as_marketer: Client, no_unsubscribe: VariantVersion) -> None:
    assert no_unsubscribe.assessment.state == AssessmentState.SCORED  # scored, and still refused

    response = _approve(as_marketer, no_unsubscribe)

    [message] = _messages(response)
    assert message.startswith(f"cannot approve {no_unsubscribe}: pre-send check unsubscribe_link failed: ")
    _unchanged(no_unsubscribe)


def test_approve_refused_when_the_score_is_over_the_threshold(as_marketer: Client, scored: VariantVersion) -> None:
    _set_threshold(scored, -5)

    response = _approve(as_marketer, scored)

    [message] = _messages(response)
    score = VersionAssessment.objects.get(version=scored).score
    assert message == f"cannot approve {scored}: its spam score {score} is not under the template's threshold -5"
    _unchanged(scored)


@pytest.mark.parametrize("writer", ["marketer", "admin_role"])
def test_approve_records_who_and_when(
    request: pytest.FixtureRequest, staff_client: Callable[[User], Client], scored: VariantVersion, writer: str
) -> None:
    user = request.getfixturevalue(writer)

    response = _approve(staff_client(user), scored)

    assert response.redirect_chain == [(_url("variantversion_change", scored.pk), 302)]
    assert _messages(response) == [f"Approved {scored}."]
    scored.refresh_from_db()
    assert (scored.status, scored.approved_by) == (VersionStatus.APPROVED, user)
    assert scored.approved_at is not None
    assert LogEntry.objects.filter(object_id=str(scored.pk), change_message="Approved.").exists()


def test_superuser_without_a_role_group_may_approve(
    staff_client: Callable[[User], Client], scored: VariantVersion
) -> None:
    root = User.objects.create_superuser("root", password="correct-horse-battery-staple")

    _approve(staff_client(root), scored)

    scored.refresh_from_db()
    assert (scored.status, scored.approved_by) == (VersionStatus.APPROVED, root)


def test_oncall_gets_403_and_no_buttons(
    staff_client: Callable[[User], Client], oncall: User, scored: VariantVersion
) -> None:
    client = staff_client(oncall)

    assert client.post(_url("variantversion_approve", scored.pk)).status_code == 403
    assert client.post(_url("variantversion_rescore", scored.pk)).status_code == 403
    page = client.get(_url("variantversion_change", scored.pk)).content.decode()
    assert _url("variantversion_approve", scored.pk) not in page
    assert _url("variantversion_rescore", scored.pk) not in page
    _unchanged(scored)


def test_approve_view_answers_get_with_405(as_marketer: Client, scored: VariantVersion) -> None:
    assert as_marketer.get(_url("variantversion_approve", scored.pk)).status_code == 405
    _unchanged(scored)


# --- Approving from the changelist -------------------------------------------------------------


def test_changelist_action_approves_the_good_and_names_the_refused(
    as_marketer: Client, scored: VariantVersion, no_unsubscribe: VariantVersion
) -> None:
    response = as_marketer.post(
        _url("variantversion_changelist"),
        {"action": "approve_selected", "_selected_action": [scored.pk, no_unsubscribe.pk]},
        follow=True,
    )

    messages = _messages(response)
    assert "Approved 1 version(s)." in messages
    assert any(m.startswith(f"cannot approve {no_unsubscribe}: pre-send check unsubscribe_link") for m in messages)
    scored.refresh_from_db()
    assert (scored.status, scored.approved_by.username) == (VersionStatus.APPROVED, "mara-marketer")
    _unchanged(no_unsubscribe)


def test_changelist_action_is_not_offered_to_oncall(
    staff_client: Callable[[User], Client], oncall: User, scored: VariantVersion
) -> None:
    client = staff_client(oncall)

    page = client.get(_url("variantversion_changelist")).content.decode()
    assert "approve_selected" not in page
    client.post(_url("variantversion_changelist"), {"action": "approve_selected", "_selected_action": [scored.pk]})
    _unchanged(scored)


# --- Re-score ------------------------------------------------------------------------------------


def test_rescore_publishes_the_assessment_task_once_committed(
    as_marketer: Client,
    version: VariantVersion,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sent: list[tuple[str, Any]] = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args=None, **kw: sent.append((name, args)))

    with django_capture_on_commit_callbacks(execute=True):
        response = as_marketer.post(_url("variantversion_rescore", version.pk), follow=True)

    assert sent == [(services.ASSESS_TASK, [version.pk])]
    assert _messages(response) == [f"{version} is queued for scoring; reload this page in a moment."]


# --- Badges, rules and checks --------------------------------------------------------------------


def _badge_class(page: str) -> str:
    match = re.search(r'class="sp-badge sp-badge-(\w+)"', page)
    assert match, "no badge on the page"
    return match.group(1)


@pytest.mark.parametrize(("threshold", "colour"), [(5, "green"), (1.5, "amber"), (-5, "red")])
def test_version_page_badge_colour_follows_the_template_threshold(
    as_marketer: Client, scored: VariantVersion, threshold: float, colour: str
) -> None:
    _set_threshold(scored, threshold)  # spamd scores the fixture about 0.7

    page = as_marketer.get(_url("variantversion_change", scored.pk)).content.decode()

    assert _badge_class(page) == colour
    assert f'<span class="sp-badge sp-badge-{colour}" title="' in page


def test_version_page_shows_rules_checks_spamd_and_cache(as_marketer: Client, scored: VariantVersion) -> None:
    assessment = VersionAssessment.objects.get(version=scored)

    page = as_marketer.get(_url("variantversion_change", scored.pk)).content.decode()

    rules = page.split('<table class="sp-rules">', 1)[1].split("</table>", 1)[0]
    for rule in assessment.rules:
        assert f'<td class="sp-code">{rule["name"]}</td>' in rules
    checks = page.split('<table class="sp-checks">', 1)[1].split("</table>", 1)[0]
    assert '<td class="sp-code">unsubscribe_link</td>' in checks
    assert "blocking" in checks and "warning" in checks  # image_alt is a warning-level check
    assert f"SpamAssassin {assessment.spamd_version}" in page
    assert "not cached" in page
    assert re.search(r'<div class="readonly sp-approvable">\s*Yes\s*</div>', page)


def test_version_page_shows_the_failed_blocking_check(as_marketer: Client, no_unsubscribe: VariantVersion) -> None:
    page = as_marketer.get(_url("variantversion_change", no_unsubscribe.pk)).content.decode()

    assert _badge_class(page) == "red"
    checks = page.split('<table class="sp-checks">', 1)[1].split("</table>", 1)[0]
    row = checks.split('<tr class="sp-failed">', 1)[1].split("</tr>", 1)[0]
    assert "unsubscribe_link" in row and "failed" in row and "blocking" in row
    assert "no unsubscribe link in the body" in row


def test_version_page_shows_who_approved_and_when(as_marketer: Client, approved_version: VariantVersion) -> None:
    page = as_marketer.get(_url("variantversion_change", approved_version.pk)).content.decode()

    approved = page.split('<div class="readonly sp-approved">', 1)[1].split("</div>", 1)[0]
    assert approved.startswith("by mara-marketer at ")
    assert _url("variantversion_approve", approved_version.pk) not in page  # nothing left to approve


def test_not_scored_and_pending_are_grey_with_the_reason(as_marketer: Client, version: VariantVersion) -> None:
    pending = services.version_derive(source=version, subject="Hello {{ first_name }}")
    services.assessment_record(version=version, checks=[], report=None, reason=SPAMD_DOWN)

    page = as_marketer.get(_url("variantversion_change", version.pk)).content.decode()
    assert _badge_class(page) == "grey"
    assert ">not scored</span>" in page and SPAMD_DOWN in page
    page = as_marketer.get(_url("variantversion_change", pending.pk)).content.decode()
    assert _badge_class(page) == "grey" and ">pending</span>" in page


def test_changelist_shows_each_versions_badge(
    as_marketer: Client, scored: VariantVersion, no_unsubscribe: VariantVersion
) -> None:
    page = as_marketer.get(_url("variantversion_changelist")).content.decode()

    badges = re.findall(r'class="sp-badge sp-badge-(\w+)"', page)
    assert sorted(badges) == ["green", "red"]
    assert ".sp-badge-green" in page  # the stylesheet comes along


def _checked(*checks: tuple[str, bool, bool]) -> list[dict[str, Any]]:
    return [{"name": n, "passed": p, "blocking": b, "message": n} for n, p, b in checks]


@pytest.mark.parametrize(
    ("state", "score", "checks", "colour"),
    [
        (AssessmentState.SCORED, 1.0, _checked(("html_size", True, True)), "green"),
        (AssessmentState.SCORED, 3.9, [], "green"),
        (AssessmentState.SCORED, 4.0, [], "amber"),  # within 1.0 of 5
        (AssessmentState.SCORED, 1.0, _checked(("image_alt", False, False)), "amber"),
        (AssessmentState.SCORED, 5.0, [], "red"),  # at the threshold
        (AssessmentState.SCORED, 1.0, _checked(("unsubscribe_link", False, True)), "red"),
        (AssessmentState.NOT_SCORED, None, [], "grey"),
        (AssessmentState.PENDING, None, [], "grey"),
    ],
)
def test_badge_colours(state: str, score: float | None, checks: list[dict[str, Any]], colour: str) -> None:
    assessment = VersionAssessment(state=state, score=score, checks=checks, not_scored_reason=SPAMD_DOWN)

    assert score_badge(assessment, 5.0).colour == colour


def test_no_assessment_at_all_is_pending() -> None:
    badge = score_badge(None, 5.0)

    assert (badge.colour, badge.label) == ("grey", "pending")


# --- Comparing a template's variants -------------------------------------------------------------


def test_template_page_links_the_comparison(as_marketer: Client, template: Template) -> None:
    page = as_marketer.get(_url("template_change", template.pk)).content.decode()

    assert _url("template_scores", template.pk) in page


def test_comparison_lists_every_variant_by_score(
    as_marketer: Client, scored: VariantVersion, no_unsubscribe: VariantVersion, template: Template
) -> None:
    b = services.variant_create(template=template, slug="b")
    shouty = services.version_create(
        variant=b,
        mjml_body=SIMPLE_MJML.replace("see the offer", "FREE MONEY!!! CLICK NOW, 100% GUARANTEED, ACT NOW"),
        subject="Hi {{ first_name }}",
        variables=SIMPLE_VARIABLES,
    )
    unscored = services.version_create(
        variant=b, mjml_body=SIMPLE_MJML, subject="Hey {{ first_name }}", variables=SIMPLE_VARIABLES
    )
    version_assess(version_id=shouty.pk)
    scores = {v.pk: VersionAssessment.objects.get(version=v).score for v in (scored, no_unsubscribe, shouty)}

    response = as_marketer.get(_url("template_scores", template.pk))
    page = response.content.decode()

    assert response.status_code == 200
    order = [int(pk) for pk in re.findall(r'<tr class="sp-row" data-version="(\d+)">', page)]
    assert set(order[:3]) == set(scores)
    assert [scores[pk] for pk in order[:3]] == sorted(scores.values())
    assert order[3] == unscored.pk  # no score: last
    rows = {int(pk): row for pk, row in re.findall(r'data-version="(\d+)">(.*?)</tr>', page, re.DOTALL)}
    assert '<td class="sp-approvable">yes</td>' in rows[scored.pk]
    assert "no: pre-send check unsubscribe_link failed" in rows[no_unsubscribe.pk]
    assert "<td>1</td>" in rows[no_unsubscribe.pk]  # one blocking failure
    assert "no: it has not been scored yet" in rows[unscored.pk]
    assert "sp-badge-grey" in rows[unscored.pk]


def test_comparison_is_readable_by_oncall_and_refused_to_outsiders(
    staff_client: Callable[[User], Client], oncall: User, outsider: User, template: Template
) -> None:
    assert staff_client(oncall).get(_url("template_scores", template.pk)).status_code == 200
    assert staff_client(outsider).get(_url("template_scores", template.pk)).status_code == 403
