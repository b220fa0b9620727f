"""The admin cockpit (/admin/cockpit/): one read-only page for whoever watches the sending.

Every role sees it; an account without a role is refused. Panels: campaigns
in progress (a bar by message status, the domain's send rate over the last
minute), each domain's last 24 hours (the reputation chart with the
detector's ceilings and pauses), the detector's newest decisions with their
evidence, spamd and the broker, and the global sending switch.

Its cost does not grow with the fleet: one query per panel (campaigns and
their status counts, domains, every domain's counters at once, pauses of the
day, newest decisions, the switch), whatever the number of campaigns,
domains or messages.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import SafeString

from access.permissions import Capability, user_can
from controlplane.health import CHECKS, checks_run
from deliverability import detector
from deliverability.charts import reputation_svg
from deliverability.models import PauseEvidence, ProviderStream, SendingDomain
from deliverability.selectors import MinuteSeries, domain_minute_series, reputation_points
from deliverability.services import sending_switch
from dispatch.models import TERMINAL, WAITING, Campaign, CampaignStatus, MessageStatus, Quarantine
from dispatch.selectors import Result, campaigns_progress, campaigns_results

HOURS = 24
STEP_MINUTES = 10
DECISIONS_SHOWN = 20
CAMPAIGNS_SHOWN = 50  # newest first; a fleet with more running at once reads them in the campaign list
IN_PROGRESS = (CampaignStatus.RUNNING, CampaignStatus.PAUSED)
DEPENDENCIES = ("spamd", "broker")  # /readyz's checks; the database answered this page already
BAR_WIDTH = 300
# Status colours of the campaign bars: done statuses first, then what is still moving.
COLOURS = {
    MessageStatus.SENT: "#3a7", MessageStatus.FAILED: "#c33", MessageStatus.SUPPRESSED: "#999",
    MessageStatus.UNKNOWN: "#e90", MessageStatus.CANCELLED: "#666", MessageStatus.SENDING: "#48c",
    MessageStatus.DEFERRED: "#bcd", MessageStatus.QUEUED: "#e4e4e4",
}


@dataclass(frozen=True)
class Segment:
    status: str
    count: int
    x: float
    width: float
    colour: str


@dataclass(frozen=True)
class CampaignRow:
    campaign: Campaign
    progress: dict[str, int]  # the shape of dispatch.selectors.campaign_progress
    rate: float  # messages a second its domain sent over the last minute
    results: Result | None = None  # its counters (dispatch.selectors.campaigns_results)
    quarantined: int = 0  # variants the guardrails set aside and nobody restored yet

    @property
    def done(self) -> int:
        return sum(self.progress[s] for s in TERMINAL)

    @property
    def waiting(self) -> int:
        return sum(self.progress[s] for s in WAITING)

    @property
    def segments(self) -> list[Segment]:
        total, x, out = self.progress["total"] or 1, 0.0, []
        for status, colour in COLOURS.items():
            width = BAR_WIDTH * self.progress[status] / total
            if width:
                out.append(Segment(status, self.progress[status], x, width, colour))
            x += width
        return out


@dataclass(frozen=True)
class DomainRow:
    domain: SendingDomain
    rate: float
    chart: SafeString


def cockpit_view(request: HttpRequest) -> HttpResponse:
    """Mounted by dispatch/admin.py behind ``admin.site.admin_view`` (staff login first)."""
    if not user_can(request.user, Capability.READ):
        raise PermissionDenied
    now = timezone.now()
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)  # the current minute included
    domains = list(SendingDomain.objects.order_by("domain"))
    series = domain_minute_series(start=end - timedelta(hours=HOURS), end=end, domain_ids=[d.pk for d in domains])
    rates = _rates(series, now)
    context = {
        **admin.site.each_context(request),
        "title": "Cockpit",
        "hours": HOURS,
        "campaigns": _campaigns(rates),
        "domains": _domains(domains, series, rates, end - timedelta(hours=HOURS)),
        "decisions": list(PauseEvidence.objects.select_related("sending_domain")[:DECISIONS_SHOWN]),
        "streams": list(_troubled_streams()),
        "dependencies": checks_run({name: CHECKS[name] for name in DEPENDENCIES}),
        "switch": sending_switch(),
        "colours": COLOURS,
        "bar_width": BAR_WIDTH,
    }
    return TemplateResponse(request, "admin/cockpit.html", context)


def _troubled_streams() -> QuerySet[ProviderStream]:
    """Streams a provider paused or slowed: where on-call looks first when one provider refuses us."""
    troubled = ProviderStream.objects.filter(Q(paused=True) | Q(rate_factor__lt=1.0)).select_related("sending_domain")
    return troubled.order_by("-paused", "sending_domain__domain", "provider")


def _campaigns(rates: dict[int, float]) -> list[CampaignRow]:
    campaigns = list(Campaign.objects.filter(status__in=IN_PROGRESS).select_related("sending_domain")[:CAMPAIGNS_SHOWN])
    ids = [c.pk for c in campaigns]
    progress, results = campaigns_progress(campaign_ids=ids), campaigns_results(campaign_ids=ids)
    quarantined = dict(
        Quarantine.objects.filter(campaign__in=ids, restored_at__isnull=True).values_list("campaign").annotate(n=Count("id")).order_by()
    )
    return [
        CampaignRow(c, progress[c.pk], rates.get(c.sending_domain_id, 0.0), results.get(c.pk), quarantined.get(c.pk, 0))
        for c in campaigns
    ]


def _rates(series: MinuteSeries, now: datetime) -> dict[int, float]:
    """Sent per second over the last complete minute and the current one so far."""
    seconds = 60 + now.second + now.microsecond / 1e6
    sent = series.counts["sent"][:, -2:].sum(axis=1)
    return {domain_id: float(n) / seconds for domain_id, n in zip(series.domain_ids, sent, strict=True)}


def _domains(domains: list[SendingDomain], series: MinuteSeries, rates: dict[int, float], start: datetime) -> list[DomainRow]:
    pauses: dict[int, list[PauseEvidence]] = defaultdict(list)
    for evidence in PauseEvidence.objects.filter(created_at__gte=start):  # domain_pause_evidence(since=) for every domain
        pauses[evidence.sending_domain_id].append(evidence)
    points = reputation_points(series, step_minutes=STEP_MINUTES)
    ceilings = detector.DEFAULT.ceiling[0], detector.DEFAULT.ceiling[1]
    return [
        DomainRow(domain, rates.get(domain.pk, 0.0), reputation_svg(points[row], pauses[domain.pk], ceilings=ceilings))
        for row, domain in enumerate(domains)
    ]
