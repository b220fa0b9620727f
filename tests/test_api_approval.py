"""POST /api/v1/versions/{id}/approve and GET /api/v1/versions/{id}/assessment: the gate over the API.

Scores come from the real spamd (ops/test starts it) through deliverability's sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from deliverability.assessments import version_assess
from templates_registry import services
from templates_registry.models import (
    AssessmentState,
    Template,
    Variant,
    VariantVersion,
    VersionAssessment,
    VersionStatus,
)
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES

Api = Callable[[User | None], APIClient]

SPAMD_DOWN = "spamd at 127.0.0.1:783 is unreachable"
NO_UNSUBSCRIBE_MJML = SIMPLE_MJML.replace(
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a>', '<a href="https://example.com/help">Help</a>'
)


def approve_url(version: VariantVersion | int) -> str:
    return f"/api/v1/versions/{getattr(version, 'pk', version)}/approve"


def assessment_url(version: VariantVersion | int) -> str:
    return f"/api/v1/versions/{getattr(version, 'pk', version)}/assessment"


@pytest.fixture
def scored(version: VariantVersion) -> VariantVersion:
    assessment = version_assess(version_id=version.pk)
    assert assessment is not None and assessment.state == AssessmentState.SCORED, assessment
    return version


@pytest.fixture
def no_unsubscribe(variant: Variant) -> VariantVersion:
    version = services.version_create(
        variant=variant, mjml_body=NO_UNSUBSCRIBE_MJML, subject="Hi {{ first_name }}", variables=SIMPLE_VARIABLES
    )
    version_assess(version_id=version.pk)
    return version


def assert_refused(response: Any, version: VariantVersion, reason: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == f"status: cannot approve {version}: {reason}"
    assert "\n" not in body["error"]
    version.refresh_from_db()
    assert version.status != VersionStatus.APPROVED
    assert (version.approved_by, version.approved_at) == (None, None)


# --- Approve: roles ------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["marketer", "admin_role"])
def test_writer_approves_and_who_and_when_are_recorded(
    request: pytest.FixtureRequest, api_as: Api, scored: VariantVersion, writer: str
) -> None:
    user = request.getfixturevalue(writer)

    response = api_as(user).post(approve_url(scored))

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["status"], body["approved_by"]) == (scored.pk, "approved", user.username)
    assert body["approved_at"] is not None
    scored.refresh_from_db()
    assert (scored.status, scored.approved_by) == (VersionStatus.APPROVED, user)
    assert body["approved_at"].replace("Z", "+00:00") == scored.approved_at.isoformat()


def test_approving_an_approved_version_changes_nothing(
    api_as: Api, marketer: User, admin_role: User, approved_version: VariantVersion
) -> None:
    first = approved_version.approved_at

    response = api_as(admin_role).post(approve_url(approved_version))

    assert response.status_code == 200
    approved_version.refresh_from_db()
    assert (approved_version.approved_by, approved_version.approved_at) == (marketer, first)


@pytest.mark.parametrize(("who", "status"), [("oncall", 403), ("outsider", 403), (None, 401)])
def test_others_may_not_approve(
    request: pytest.FixtureRequest, api_as: Api, scored: VariantVersion, who: str | None, status: int
) -> None:
    user = request.getfixturevalue(who) if who else None

    response = api_as(user).post(approve_url(scored))

    assert response.status_code == status, response.content
    assert response.json()["error"]
    scored.refresh_from_db()
    assert (scored.status, scored.approved_by) == (VersionStatus.SCORED, None)


def test_approving_an_unknown_version_is_404(api_as: Api, marketer: User, version: VariantVersion) -> None:
    assert api_as(marketer).post(approve_url(version.pk + 1000)).status_code == 404


# --- Approve: the gate's refusals ---------------------------------------------------------------------


def test_refused_when_never_scored(api_as: Api, marketer: User, version: VariantVersion) -> None:
    assert_refused(api_as(marketer).post(approve_url(version)), version, "it has not been scored yet")


def test_refused_when_spamd_could_not_score(api_as: Api, marketer: User, version: VariantVersion) -> None:
    services.assessment_record(version=version, checks=[], report=None, reason=SPAMD_DOWN)

    response = api_as(marketer).post(approve_url(version))

    assert_refused(response, version, f"it is not scored: {SPAMD_DOWN}")
    assert response.json()["fields"] == {"status": [f"cannot approve {version}: it is not scored: {SPAMD_DOWN}"]}


def test_refused_when_a_blocking_check_fails(api_as: Api, marketer: User, no_unsubscribe: VariantVersion) -> None:
    response = api_as(marketer).post(approve_url(no_unsubscribe))

    failed = next(c for c in no_unsubscribe.assessment.checks if c["name"] == "unsubscribe_link")
    assert_refused(response, no_unsubscribe, f"pre-send check unsubscribe_link failed: {failed['message']}")


def test_refused_when_the_score_is_over_the_threshold(api_as: Api, marketer: User, scored: VariantVersion) -> None:
    Template.objects.filter(pk=scored.variant.template_id).update(spam_threshold=-5)
    score = scored.assessment.score

    response = api_as(marketer).post(approve_url(scored))

    assert_refused(response, scored, f"its spam score {score} is not under the template's threshold -5")


# --- Assessment -------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", ["marketer", "oncall", "admin_role"])
def test_every_role_reads_the_assessment(
    request: pytest.FixtureRequest, api_as: Api, scored: VariantVersion, reader: str
) -> None:
    assessment = VersionAssessment.objects.get(version=scored)

    response = api_as(request.getfixturevalue(reader)).get(assessment_url(scored))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == scored.pk
    assert (body["state"], body["score"], body["threshold"]) == ("scored", assessment.score, "5.00")
    assert body["spamd_threshold"] == assessment.spamd_threshold
    assert body["rules"] == assessment.rules and body["rules"]
    assert set(body["rules"][0]) == {"name", "points", "description"}
    assert body["checks"] == assessment.checks
    assert {"name": "unsubscribe_link", "passed": True, "blocking": True}.items() <= next(
        c for c in body["checks"] if c["name"] == "unsubscribe_link"
    ).items()
    assert body["spamd_version"] == assessment.spamd_version and body["spamd_version"]
    assert body["duration_ms"] == assessment.duration_ms and body["duration_ms"] > 0
    assert (body["from_cache"], body["not_scored_reason"]) == (False, "")
    assert (body["approvable"], body["approvable_reason"]) == (True, None)


@pytest.mark.parametrize(("who", "status"), [("outsider", 403), (None, 401)])
def test_others_may_not_read_the_assessment(
    request: pytest.FixtureRequest, api_as: Api, scored: VariantVersion, who: str | None, status: int
) -> None:
    user = request.getfixturevalue(who) if who else None

    assert api_as(user).get(assessment_url(scored)).status_code == status


def test_assessment_names_why_it_is_not_approvable(api_as: Api, oncall: User, no_unsubscribe: VariantVersion) -> None:
    body = api_as(oncall).get(assessment_url(no_unsubscribe)).json()

    assert body["state"] == "scored"
    assert body["approvable"] is False
    assert body["approvable_reason"].startswith("pre-send check unsubscribe_link failed: no unsubscribe link")


def test_assessment_copied_from_a_twin_says_cached(api_as: Api, oncall: User, scored: VariantVersion) -> None:
    other = services.variant_create(template=scored.variant.template, slug="b")
    twin = services.version_create(
        variant=other,
        mjml_body=scored.mjml_body,
        subject=scored.subject,
        sender_name=scored.sender_name,
        preheader=scored.preheader,
        variables=scored.variables,
    )
    version_assess(version_id=twin.pk)

    body = api_as(oncall).get(assessment_url(twin)).json()

    assert (body["state"], body["from_cache"]) == ("scored", True)
    assert body["score"] == scored.assessment.score


def test_assessment_of_a_version_spamd_could_not_score(api_as: Api, oncall: User, version: VariantVersion) -> None:
    services.assessment_record(version=version, checks=[], report=None, reason=SPAMD_DOWN)

    body = api_as(oncall).get(assessment_url(version)).json()

    assert (body["state"], body["score"], body["not_scored_reason"], body["attempts"]) == (
        "not_scored",
        None,
        SPAMD_DOWN,
        1,
    )
    assert body["next_attempt_at"] is not None
    assert (body["approvable"], body["approvable_reason"]) == (False, f"it is not scored: {SPAMD_DOWN}")


def test_assessment_of_a_version_not_assessed_yet_is_pending(
    api_as: Api, oncall: User, version: VariantVersion
) -> None:
    response = api_as(oncall).get(assessment_url(version))

    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["score"], body["rules"], body["checks"], body["scored_at"]) == (
        "pending",
        None,
        [],
        [],
        None,
    )
    assert (body["approvable"], body["approvable_reason"]) == (False, "it has not been scored yet")
    assert not VersionAssessment.objects.filter(version=version).exists()  # reading wrote nothing


def test_assessment_of_an_unknown_version_is_404(api_as: Api, oncall: User, version: VariantVersion) -> None:
    assert api_as(oncall).get(assessment_url(version.pk + 1000)).status_code == 404


# --- Schema --------------------------------------------------------------------------------------------


def test_schema_describes_approve_and_assessment(api_as: Api, oncall: User) -> None:
    schema = api_as(oncall).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    approve = schema["paths"]["/api/v1/versions/{version_id}/approve"]["post"]
    assert {"200", "400", "401", "403", "404"} <= set(approve["responses"])
    assert "requestBody" not in approve
    assessment = schema["paths"]["/api/v1/versions/{version_id}/assessment"]["get"]
    ref = assessment["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    properties = schema["components"]["schemas"][ref]["properties"]
    expected = {"state", "score", "threshold", "spamd_threshold", "rules", "checks", "approvable", "approvable_reason"}
    assert expected <= set(properties)
