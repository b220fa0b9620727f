"""Dispatch reads."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from functools import reduce
from operator import or_

import numpy as np
from django.db.models import Count, Q, Sum

from controlplane.addresses import address_spellings
from dispatch.models import Campaign, CampaignResult, Message, MessageStatus
from templates_registry.models import VariantVersion
from templates_registry.preview import RecipientContext


def campaign_progress(*, campaign: Campaign) -> dict[str, int]:
    """Messages of the campaign by status, every status present (0 when none)."""
    return campaigns_progress(campaign_ids=[campaign.pk])[campaign.pk]


def campaigns_progress(*, campaign_ids: list[int]) -> dict[int, dict[str, int]]:
    """``campaign_progress`` of many campaigns in one aggregate query (the cockpit, the admin list)."""
    progress: dict[int, dict[str, int]] = {pk: dict.fromkeys([*MessageStatus.values, "total"], 0) for pk in campaign_ids}
    counts = Message.objects.filter(campaign__in=campaign_ids).values_list("campaign_id", "status").annotate(n=Count("id")).order_by()
    for campaign_id, status, n in counts:
        progress[campaign_id][status] += n
        progress[campaign_id]["total"] += n
    return progress


def message_recipient_context(*, version: VariantVersion, reference: str) -> RecipientContext | None:
    """The registry's preview asks for a real recipient's context through this (registered in apps.py).

    ``reference``: a message's uuid (any version's: the registry says when it is another's) or a recipient's
    address, any spelling (its newest message of ``version``). An erased recipient's rows match no address.
    """
    try:
        messages = Message.objects.filter(uuid=uuid.UUID(reference))
    except ValueError:
        spellings = address_spellings(reference) or [reference]
        messages = Message.objects.filter(reduce(or_, (Q(recipient__iexact=s) for s in spellings)), version=version)
    found = messages.select_related("sending_domain").order_by("-created_at", "-id").first()
    if found is None:
        return None
    return RecipientContext(
        message=str(found.uuid), version_id=found.version_id, recipient=found.recipient, context=found.context,
        sender_address=found.sending_domain.default_sender,
    )


# --- results ----------------------------------------------------------------------------------

_Z = 1.96  # 95% two-sided


@dataclass(frozen=True)
class Rate:
    """k of n, with its 95% Wilson interval (honest at small n and at rates near 0: a complaint rate of 0 of 40 is
    "0, up to 8.8%", not "0")."""

    events: int
    trials: int

    @property
    def value(self) -> float | None:
        return self.events / self.trials if self.trials else None

    @property
    def interval(self) -> tuple[float, float] | None:
        if not self.trials:
            return None
        n, p = self.trials, self.events / self.trials
        centre = (p + _Z * _Z / (2 * n)) / (1 + _Z * _Z / n)
        half = _Z * math.sqrt(p * (1 - p) / n + _Z * _Z / (4 * n * n)) / (1 + _Z * _Z / n)
        return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Result:
    """One version's (or a campaign's total) counts, and the rates a marketer reads."""

    counts: dict[str, int]
    version_id: int | None = None
    variant: str = ""
    number: int | None = None
    cost_micros: int = 0  # spent, in millionths of SENDPLANE_COST_CURRENCY

    @property
    def waiting(self) -> int:
        """Queued by a trigger and not yet answered for good (nor cancelled: those are not counted here)."""
        return max(0, self.counts["accepted"] - self.counts["sent"] - self.counts["failed"])

    def rates(self) -> dict[str, Rate]:
        c = self.counts
        attempted = c["sent"] + c["failed"]  # the receiver answered for good: the bounce rate's denominator
        return {
            "bounce": Rate(c["bounced_hard"] + c["bounced_soft"], attempted),
            "hard_bounce": Rate(c["bounced_hard"], attempted),
            "complaint": Rate(c["complained"], c["sent"]),
            "unsubscribe": Rate(c["unsubscribed"], c["sent"]),
            "delivery": Rate(c["delivered"], c["sent"]),  # ESPs only report it
            "open": Rate(c["opened"], c["sent"]),  # inflated by Apple Mail Privacy Protection: shown, not decided on
            "click": Rate(c["clicked"], c["sent"]),
        }


def campaigns_results(*, campaign_ids: list[int]) -> dict[int, Result]:
    """Each campaign's total results in one aggregate query (the cockpit); a campaign without any is left out."""
    sums = [Sum(name) for name in (*CampaignResult.COUNTS, "cost_micros")]
    rows = CampaignResult.objects.filter(campaign__in=campaign_ids).values("campaign").annotate(*sums).order_by()
    return {
        row["campaign"]: Result(
            counts={name: row[f"{name}__sum"] or 0 for name in CampaignResult.COUNTS}, cost_micros=row["cost_micros__sum"] or 0
        )
        for row in rows
    }


def campaign_results(*, campaign: Campaign) -> tuple[Result, list[Result]]:
    """The campaign's total and each version's results, from the counters (no message is read)."""
    rows = list(
        CampaignResult.objects.filter(campaign=campaign)
        .select_related("version__variant")
        .order_by("version__variant__slug", "version__number")
    )
    versions = [
        Result(
            counts={name: getattr(row, name) for name in CampaignResult.COUNTS},
            version_id=row.version_id, variant=row.version.variant.slug, number=row.version.number,
            cost_micros=row.cost_micros,
        )
        for row in rows
    ]
    total = {name: sum(r.counts[name] for r in versions) for name in CampaignResult.COUNTS}
    return Result(counts=total, cost_micros=sum(r.cost_micros for r in versions)), versions


LOWER_IS_BETTER = frozenset({"bounce", "hard_bounce", "complaint", "unsubscribe"})
SUGGEST_AT = 0.95  # the leader is suggested as the winner only when it is best with this probability
_DRAWS = 20_000


@dataclass(frozen=True)
class Leader:
    """The version most likely best by ``metric``, how likely (Beta posteriors, uniform priors), and whether that
    is enough to suggest it (``SUGGEST_AT``)."""

    metric: str
    result: Result
    probability: float

    @property
    def suggested(self) -> bool:
        return self.probability >= SUGGEST_AT


def results_leader(versions: list[Result], metric: str) -> Leader | None:
    """None with fewer than two versions that sent anything."""
    rated = [(v, v.rates()[metric]) for v in versions if v.rates()[metric].trials]
    if len(rated) < 2:
        return None
    rng = np.random.default_rng(0)  # the same answer for the same counts: a page reload never changes the verdict
    draws = np.stack([rng.beta(1 + r.events, 1 + r.trials - r.events, _DRAWS) for _, r in rated])
    best = draws.argmin(axis=0) if metric in LOWER_IS_BETTER else draws.argmax(axis=0)
    shares = np.bincount(best, minlength=len(rated)) / _DRAWS
    top = int(shares.argmax())
    return Leader(metric=metric, result=rated[top][0], probability=float(shares[top]))
