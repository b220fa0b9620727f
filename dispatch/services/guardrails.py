"""Variant guardrails: a variant that hurts more than its siblings is quarantined, with the evidence, until a person restores it.

AI generators push many variants; one of them may read as spam to its
readers. Every minute (beat ``dispatch.tasks.guardrails``) each running or
paused campaign's results per variant are tested, metric by metric
(complaints and unsubscribes over messages sent, bounces over messages
answered), against the pooled results of the campaign's other live variants.

**The test** is conditional on the events: of the E events both sides had,
the variant's share is Binomial(E, pi0) if its rate equals its siblings'
(pi0 = its share of the messages), whatever that common rate is. Against
"its rate is theta times theirs" (pi1 = theta n / (theta n + m)) the
likelihood ratio is a martingale under the null, and so is an equal
mixture over ``THETAS``; by Ville's inequality it ever reaches 1/alpha with
probability at most alpha, however often it is looked at. A variant is
quarantined when it does, with at least ``MIN_EVENTS`` events of its own,
for alpha = ``FALSE_ALARM_BUDGET`` / 3 metrics: a healthy variant is
quarantined during a campaign with probability at most 1%
(``tests/test_guardrails.py`` prints the figures).

**Quarantine**: the variant's weight goes to 0 (``variant_set_weight``, so
new triggers go to the others), a ``Quarantine`` row keeps the evidence
and the weight it had, audited (``variant.quarantine``), shown in the API
and the admin; ``quarantine_restore`` gives the weight back. The last live
variant of a template is never quarantined (mail would stop): it is logged.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import DETECTOR, audit_record
from controlplane.errors import ServiceError
from dispatch.models import Campaign, CampaignResult, CampaignStatus, Quarantine
from templates_registry.models import Variant
from templates_registry.services import variant_set_weight

logger = logging.getLogger("sendplane.guardrails")

FALSE_ALARM_BUDGET = 0.01  # chance a healthy variant is quarantined over a campaign's life, all metrics together
METRICS = ("complaint", "unsubscribe", "bounce")
ALPHA = FALSE_ALARM_BUDGET / len(METRICS)
THETAS = (1.5, 2.0, 3.0, 5.0)  # rate ratios the mixture bets on: a third worse to five times
MIN_EVENTS = 3  # of the variant's own: one or two complaints are never a verdict


class GuardrailError(ServiceError):
    status = 409


@dataclass(frozen=True)
class Evidence:
    """One metric of one variant against its siblings when the test decided."""

    metric: str
    events: int  # the variant's
    trials: int
    sibling_events: int
    sibling_trials: int
    statistic: float  # log of the mixture likelihood ratio
    threshold: float  # log(1 / alpha)

    @property
    def rate(self) -> float:
        return self.events / self.trials if self.trials else 0.0

    @property
    def sibling_rate(self) -> float:
        return self.sibling_events / self.sibling_trials if self.sibling_trials else 0.0

    def summary(self) -> str:
        return (
            f"{self.metric} rate {self.rate:.2%} ({self.events} of {self.trials}) against its siblings' "
            f"{self.sibling_rate:.2%} ({self.sibling_events} of {self.sibling_trials}); "
            f"evidence {self.statistic:.1f} > {self.threshold:.1f}"
        )


def mixture_log_ratio(events: int, trials: int, sibling_events: int, sibling_trials: int) -> float:
    """log of the mixture likelihood ratio "the variant's rate is theta times its siblings'" against "the same"."""
    total = events + sibling_events
    if not trials or not sibling_trials or not total:
        return 0.0
    share = trials / (trials + sibling_trials)
    logs = []
    for theta in THETAS:
        alt = theta * trials / (theta * trials + sibling_trials)
        logs.append(events * math.log(alt / share) + sibling_events * math.log((1 - alt) / (1 - share)))
    top = max(logs)
    return top + math.log(sum(math.exp(value - top) for value in logs) / len(logs))


def judge(metric: str, events: int, trials: int, sibling_events: int, sibling_trials: int) -> Evidence | None:
    """The evidence when the variant is worse than its siblings beyond the budget's doubt, else None."""
    if events < MIN_EVENTS:
        return None
    statistic = mixture_log_ratio(events, trials, sibling_events, sibling_trials)
    threshold = math.log(1 / ALPHA)
    if statistic < threshold:
        return None
    return Evidence(metric, events, trials, sibling_events, sibling_trials, statistic, threshold)


def metric_counts(counts: dict[str, int]) -> dict[str, tuple[int, int]]:
    """(events, trials) of each metric from a results row's counts (``dispatch.selectors.Result.rates``' definitions)."""
    attempted = counts["sent"] + counts["failed"]
    return {
        "complaint": (counts["complained"], counts["sent"]),
        "unsubscribe": (counts["unsubscribed"], counts["sent"]),
        "bounce": (counts["bounced_hard"] + counts["bounced_soft"], attempted),
    }


# --- the database --------------------------------------------------------------------------------


def guardrails_run() -> list[Quarantine]:
    """Every running or paused campaign once (the beat task)."""
    found = []
    for campaign in Campaign.objects.filter(status__in=[CampaignStatus.RUNNING, CampaignStatus.PAUSED]):
        found += guardrails_check(campaign=campaign)
    return found


def guardrails_check(*, campaign: Campaign) -> list[Quarantine]:
    """Test each live variant of the campaign against the others; quarantine what the test decides."""
    by_variant = _variant_counts(campaign)
    quarantined = []
    for variant_id in sorted(by_variant):
        live = [v for v in by_variant if _live(v)]
        if variant_id not in live or len(live) < 2:
            continue
        evidence = _worst(variant_id, by_variant, live)
        if evidence is not None:
            quarantine = _quarantine(campaign, variant_id, evidence)
            if quarantine is not None:
                quarantined.append(quarantine)
    return quarantined


def _variant_counts(campaign: Campaign) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {}
    for row in CampaignResult.objects.filter(campaign=campaign).select_related("version"):
        target = counts.setdefault(row.version.variant_id, dict.fromkeys(CampaignResult.COUNTS, 0))
        for name in CampaignResult.COUNTS:
            target[name] += getattr(row, name)
    return counts


def _live(variant_id: int) -> bool:
    return Variant.objects.filter(pk=variant_id, weight__gt=0).exists()


def _worst(variant_id: int, by_variant: dict[int, dict[str, int]], live: list[int]) -> Evidence | None:
    mine = metric_counts(by_variant[variant_id])
    others = [metric_counts(by_variant[v]) for v in live if v != variant_id]
    decided = []
    for metric in METRICS:
        events, trials = mine[metric]
        sibling_events, sibling_trials = (sum(o[metric][i] for o in others) for i in (0, 1))
        evidence = judge(metric, events, trials, sibling_events, sibling_trials)
        if evidence is not None:
            decided.append(evidence)
    return max(decided, key=lambda e: e.statistic - e.threshold, default=None)


def _quarantine(campaign: Campaign, variant_id: int, evidence: Evidence) -> Quarantine | None:
    with transaction.atomic():
        variant = Variant.objects.select_for_update().get(pk=variant_id)
        others = Variant.objects.filter(template_id=variant.template_id, weight__gt=0).exclude(pk=variant_id).exists()
        if variant.weight == 0:
            return None  # quarantined (or set aside by a person) meanwhile
        if not others:
            logger.warning("not quarantining %s, the last live variant of its template: %s", variant, evidence.summary())
            return None
        quarantine = Quarantine.objects.create(
            campaign=campaign, variant=variant, metric=evidence.metric, weight_before=variant.weight, evidence=asdict(evidence),
        )
        variant_set_weight(variant=variant, weight=0, actor=DETECTOR)
        audit_record(
            action="variant.quarantine", target=variant, actor=DETECTOR, reason=evidence.summary(),
            data={"campaign": campaign.pk, "quarantine": quarantine.pk, **asdict(evidence)},
        )
    logger.warning("quarantined %s in campaign %s: %s", variant, campaign.pk, evidence.summary())
    return quarantine


def quarantine_restore(*, quarantine: Quarantine, actor: Any, reason: str = "") -> Quarantine:
    """Give the variant its weight back (audited); refused when it was restored already."""
    with transaction.atomic():
        locked = Quarantine.objects.select_for_update().select_related("variant").get(pk=quarantine.pk)
        if locked.restored_at is not None:
            raise GuardrailError(f"the quarantine of {locked.variant} was lifted already", field="quarantine")
        locked.restored_at, locked.restored_by, locked.restore_reason = timezone.now(), _user(actor), reason
        locked.save(update_fields=["restored_at", "restored_by", "restore_reason"])
        variant_set_weight(variant=locked.variant, weight=locked.weight_before, actor=actor)
        audit_record(
            action="variant.restore", target=locked.variant, actor=actor, reason=reason,
            data={"quarantine": locked.pk, "weight": locked.weight_before},
        )
    return locked


def _user(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) else None
