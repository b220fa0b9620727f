"""Issue 17: variant guardrails. A variant worse than its siblings is quarantined within a bounded number of messages;
healthy variants stay within the stated false-alarm budget (figures printed with -s); restore gives the weight back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from audit.models import AuditEntry
from dispatch.models import CampaignResult, Message, Quarantine
from dispatch.services.guardrails import FALSE_ALARM_BUDGET, METRICS, GuardrailError, guardrails_check, judge, quarantine_restore
from dispatch.services.results import results_add
from dispatch.services.triggers import trigger_accept
from templates_registry.models import Variant
from tests.conftest import recipients

RATES = {"complaint": 0.001, "unsubscribe": 0.002, "bounce": 0.02}  # a healthy list
LOOK_EVERY = 250  # messages per variant between two looks (the beat's minute)
LOOKS = 120  # 30,000 messages per variant


def simulate(runs: int, variants: int, worse: dict[str, float], seed: int) -> list[int | None]:
    """Per run: the messages variant 0 had sent when it was quarantined (None: never). Variant 0's rates are
    ``RATES`` times ``worse``; the others' are ``RATES``. Every look tests every metric of variant 0 against the rest."""
    rng = np.random.default_rng(seed)
    outcome: list[int | None] = []
    for _ in range(runs):
        events = {m: np.zeros(variants, dtype=np.int64) for m in METRICS}
        sent = 0
        decided = None
        for _look in range(LOOKS):
            sent += LOOK_EVERY
            for metric in METRICS:
                rates = np.full(variants, RATES[metric])
                rates[0] *= worse.get(metric, 1.0)
                events[metric] += rng.binomial(LOOK_EVERY, rates)
            trials_others = sent * (variants - 1)
            if any(judge(m, int(events[m][0]), sent, int(events[m][1:].sum()), trials_others) for m in METRICS):
                decided = sent
                break
        outcome.append(decided)
    return outcome


def test_healthy_variants_stay_within_the_false_alarm_budget() -> None:
    runs = 1500
    outcome = simulate(runs, variants=3, worse={}, seed=7)
    alarms = sum(o is not None for o in outcome)
    print(f"\nhealthy: {alarms} of {runs} variants quarantined over {LOOKS * LOOK_EVERY:,} messages each, "
          f"looked at every {LOOK_EVERY} ({alarms / runs:.2%}; budget {FALSE_ALARM_BUDGET:.0%})")
    # Ville's bound holds for any number of looks; the sampling noise of 1,500 runs is ~0.26% at 1%.
    assert alarms / runs <= FALSE_ALARM_BUDGET + 3 * (FALSE_ALARM_BUDGET * (1 - FALSE_ALARM_BUDGET) / runs) ** 0.5


@pytest.mark.parametrize(("metric", "factor"), [("complaint", 3.0), ("unsubscribe", 3.0), ("bounce", 2.0)])
def test_a_variant_several_times_worse_is_quarantined_within_a_bounded_number_of_messages(metric: str, factor: float) -> None:
    runs = 300
    outcome = simulate(runs, variants=3, worse={metric: factor}, seed=11)
    caught = sorted(o for o in outcome if o is not None)
    median, p95 = np.percentile(caught, 50), np.percentile(caught, 95)
    print(f"\n{metric} x{factor:g}: {len(caught)} of {runs} quarantined; messages of the variant: median {median:,.0f}, "
          f"p95 {p95:,.0f}, most {caught[-1]:,}")
    assert len(caught) == runs  # every one within 30,000 messages
    bound = {"complaint": 25_000, "unsubscribe": 15_000, "bounce": 5_000}[metric]  # measured p95: 18,500, 9,250, 3,000
    assert p95 <= bound


def test_a_better_variant_is_never_judged_worse() -> None:
    assert judge("complaint", 3, 10_000, 90, 20_000) is None  # its rate is a sixth of theirs
    assert judge("complaint", 2, 1_000, 0, 1_000) is None  # fewer than three events are never a verdict


# --- the database -----------------------------------------------------------------------------------


def versions(campaign: Any) -> dict[str, Any]:
    return {v.slug: v.versions.get() for v in Variant.objects.filter(template=campaign.template)}


def counts(campaign: Any, rows: dict[str, dict[str, int]]) -> None:
    by_slug = versions(campaign)
    results_add({(campaign.pk, by_slug[slug].pk): c for slug, c in rows.items()})


@pytest.mark.django_db
def test_a_variant_with_three_times_the_complaints_is_quarantined_and_restored(two_variants: Any, marketer: Any) -> None:
    campaign = two_variants
    counts(campaign, {"a": {"accepted": 15000, "sent": 15000, "complained": 45}, "b": {"accepted": 15000, "sent": 15000, "complained": 15}})
    [quarantine] = guardrails_check(campaign=campaign)
    variant_a = Variant.objects.get(template=campaign.template, slug="a")
    assert quarantine.variant == variant_a and quarantine.metric == "complaint" and variant_a.weight == 0
    assert quarantine.evidence["events"] == 45 and quarantine.evidence["sibling_events"] == 15
    entry = AuditEntry.objects.get(action="variant.quarantine")
    assert entry.actor_label == "detector" and "complaint rate 0.30%" in entry.reason
    assert guardrails_check(campaign=campaign) == []  # once
    # New triggers go to the other variant.
    trigger_accept(campaign=campaign, idempotency_key="after", recipients=recipients(40))
    assert {m.version.variant.slug for m in Message.objects.filter(trigger__idempotency_key="after")} == {"b"}
    # The marketer reads the evidence and restores it.
    restored = quarantine_restore(quarantine=quarantine, actor=marketer, reason="the subject line is fixed")
    variant_a.refresh_from_db()
    assert variant_a.weight == 1 and restored.restored_by == marketer
    assert AuditEntry.objects.filter(action="variant.restore", actor=marketer).count() == 1
    with pytest.raises(GuardrailError, match="lifted already"):
        quarantine_restore(quarantine=quarantine, actor=marketer)


@pytest.mark.django_db
def test_healthy_variants_and_the_last_live_one_are_left_alone(two_variants: Any) -> None:
    campaign = two_variants
    counts(campaign, {"a": {"sent": 8000, "complained": 9}, "b": {"sent": 8000, "complained": 8}})
    assert guardrails_check(campaign=campaign) == []
    Variant.objects.filter(template=campaign.template, slug="b").update(weight=0)  # a person set b aside
    CampaignResult.objects.filter(campaign=campaign).update(complained=40)
    assert guardrails_check(campaign=campaign) == []  # a is the last live variant: mail would stop
    assert not Quarantine.objects.exists()


@pytest.mark.django_db
def test_the_api_shows_quarantines_and_restores_with_the_right_role(two_variants: Any, api_as: Any, marketer: Any, oncall: Any) -> None:
    campaign = two_variants
    counts(campaign, {"a": {"sent": 8000, "unsubscribed": 60}, "b": {"sent": 8000, "unsubscribed": 16}})
    [quarantine] = guardrails_check(campaign=campaign)
    listed = api_as(marketer).get(f"/api/v1/campaigns/{campaign.pk}/results").json()
    [shown] = listed["quarantines"]
    assert (shown["variant"], shown["metric"], shown["restored_at"]) == ("a", "unsubscribe", None)
    assert "unsubscribe rate 0.75%" in shown["summary"]
    url = f"/api/v1/quarantines/{quarantine.pk}/restore"
    assert api_as(None).post(url, {"reason": "x"}, format="json").status_code == 401
    response = api_as(marketer).post(url, {"reason": "new copy"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["restored_at"] is not None
    assert api_as(marketer).post(url, {"reason": "again"}, format="json").status_code == 409


@pytest.mark.django_db
def test_the_admin_shows_results_and_the_quarantine_and_a_marketer_restores(two_variants: Any, staff_client: Any, marketer: Any) -> None:
    campaign = two_variants
    counts(campaign, {"a": {"accepted": 8000, "sent": 8000, "unsubscribed": 60}, "b": {"accepted": 8000, "sent": 8000, "unsubscribed": 16}})
    [quarantine] = guardrails_check(campaign=campaign)
    client = staff_client(marketer)
    page = client.get(f"/admin/dispatch/campaign/{campaign.pk}/change/").content.decode()
    assert "Results per variant" in page, page[:300]
    assert 'class="results-chart"' in page, page[page.find("Results per variant"):][:600]
    assert "unsubscribe rate" in page
    assert "a v1" in page and "b v1" in page and "0.75%" in page  # a's bar and its hover title
    assert "weight 0 until restored" in page and "unsubscribe rate 0.75% (60 of 8000)" in page
    type(campaign).objects.filter(pk=campaign.pk).update(status="running")  # the cockpit lists campaigns in progress
    cockpit = client.get("/admin/cockpit/").content.decode()
    assert "1 variant quarantined" in cockpit and "unsubscribes 76" in cockpit
    response = client.post(
        "/admin/dispatch/quarantine/",
        {"action": "restore", "_selected_action": [quarantine.pk], "apply": "1", "reason": "copy fixed"},
        follow=True,
    )
    assert response.status_code == 200
    quarantine.refresh_from_db()
    assert quarantine.restored_at is not None and quarantine.restored_by == marketer
