"""The admin's home page (the cockpit) and /admin/cockpit/ (the last 24 hours in charts), for whoever watches the sending.

Every role sees both; an account without a role is refused. The home page
(``home_context``, mounted by ``site_dress`` as the admin index) answers what
someone opening the admin asks first: what is paused and why (the global
switch, domains, provider streams, campaigns), what is sending now (each
domain's rate now against its rate allowed, its warm-up step, the detector's
verdict: deliverability/glance.py), what waits for approval (versions in
review with their spam scores), the incidents of the last 24 hours (from the
audit trail) and the campaigns in progress. /admin/cockpit/ has campaigns in
progress (a bar by message status, the domain's send rate over the last
minute), each domain's last 24 hours (the reputation chart with the
detector's ceilings and pauses), the detector's newest decisions with their
evidence, spamd and the broker, and the global sending switch.

Their cost does not grow with the fleet: one query per panel (campaigns and
their status counts, domains, their counters at once, pauses of the day,
newest decisions, versions in review, incidents, the switch), whatever the
number of campaigns, domains, versions or messages; lists are capped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import SafeString

from access.permissions import Capability, user_can
from audit.admin import _admin_url as admin_url_of
from audit.models import AuditEntry
from controlplane.health import CHECKS, checks_run
from deliverability.charts import reputation_chart
from deliverability.glance import PAUSED, domains_at_a_glance, troubled_streams
from deliverability.models import PauseEvidence, ProviderStream, SendingDomain
from deliverability.selectors import MinuteSeries, domain_minute_series
from deliverability.services import sending_switch
from dispatch.models import TERMINAL, WAITING, Campaign, CampaignStatus, MessageStatus, Quarantine
from dispatch.selectors import Result, campaigns_progress, campaigns_results
from templates_registry.admin import Badge, assessment_of, score_badge
from templates_registry.models import VariantVersion, VersionStatus

HOURS = 24
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
        "title": "The last 24 hours",
        "hours": HOURS,
        "campaigns": _campaigns(rates),
        "domains": _domains(domains, rates),
        "decisions": list(PauseEvidence.objects.select_related("sending_domain")[:DECISIONS_SHOWN]),
        "streams": list(_troubled_streams()),
        "dependencies": checks_run({name: CHECKS[name] for name in DEPENDENCIES}),
        "switch": sending_switch(),
        "colours": COLOURS,
        "bar_width": BAR_WIDTH,
    }
    return TemplateResponse(request, "admin/cockpit.html", context)


def _troubled_streams() -> QuerySet[ProviderStream]:
    return troubled_streams()


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


def _domains(domains: list[SendingDomain], rates: dict[int, float]) -> list[DomainRow]:
    # The charts load their data when scrolled to (deliverability/charts.py): the page reads nothing more per domain.
    return [DomainRow(domain, rates.get(domain.pk, 0.0), reputation_chart(domain, compact=True)) for domain in domains]


# --- the home page: the admin index (site_dress) -------------------------------------------------

SITE_NAME = "Sendplane"
DOMAINS_SHOWN = 200  # paused first; a larger fleet reads the rest in the sending domains list
VERSIONS_SHOWN = 20
INCIDENTS_SHOWN = 50
INCIDENT_HOURS = 24
# What the audit trail calls an incident, as the home page says it, and whether it stopped mail (True) or let it go again.
INCIDENTS = {
    "sending.pause_all": ("All sending paused", True), "sending.resume_all": ("All sending resumed", False),
    "domain.pause": ("Domain paused", True), "domain.resume": ("Domain resumed", False),
    "domain.override": ("Detector pause overridden", False), "domain.override_lapse": ("Override lapsed", True),
    "stream.pause": ("Provider stream paused", True), "stream.resume": ("Provider stream resumed", False),
    "campaign.pause": ("Campaign paused", True), "campaign.resume": ("Campaign resumed", False),
    "variant.quarantine": ("Variant quarantined", True), "variant.restore": ("Variant restored", False),
    "domain.warmup": ("Warm-up backed off", True),  # only its "back off" decisions: an advance is no incident
}
IN_REVIEW = (VersionStatus.DRAFT, VersionStatus.SCORED)  # waiting for a score, or scored and waiting for approval


def site_dress(site: AdminSite) -> None:
    """Sendplane's name on every admin page (header, browser title, login page) and the cockpit as the home page."""
    site.site_header = site.site_title = SITE_NAME
    site.index_title = "Cockpit"
    site.index_template = "admin/cockpit/index.html"
    index = site.index

    def home(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        return index(request, {**home_context(request), **(extra_context or {})})

    site.index = home  # type: ignore[method-assign]  # the index's own view, given the panels as its extra context


@dataclass(frozen=True)
class Incident:
    entry: AuditEntry
    what: str
    stopped: bool  # it stopped mail (a pause, a quarantine), rather than letting it go again
    url: str | None  # the target's admin page


@dataclass(frozen=True)
class InReview:
    version: VariantVersion
    badge: Badge


def home_context(request: HttpRequest) -> dict[str, Any]:
    """The home page's panels (empty for an account without a role: Django's index shows it nothing either)."""
    if not user_can(request.user, Capability.READ):
        return {}
    switch = sending_switch()
    domains = list(SendingDomain.objects.order_by("-paused", "domain")[: DOMAINS_SHOWN + 1])
    glances = domains_at_a_glance(domains[:DOMAINS_SHOWN], switch=switch)
    campaigns = _campaigns({g.domain.pk: g.rate_now for g in glances})
    incidents = _incidents(timezone.now() - timedelta(hours=INCIDENT_HOURS))
    return {
        "switch": switch,
        "dependencies": checks_run({name: CHECKS[name] for name in DEPENDENCIES}),
        "glances": glances,
        "more_domains": len(domains) > DOMAINS_SHOWN,
        "paused_domains": [g for g in glances if g.state == PAUSED],
        "streams": list(_troubled_streams()),
        "paused_campaigns": _paused_campaigns(campaigns, incidents),
        "in_review": _in_review(),
        "versions_shown": VERSIONS_SHOWN,
        "incidents": incidents,
        "incident_hours": INCIDENT_HOURS,
        "campaigns": campaigns,
        "colours": COLOURS,
        "bar_width": BAR_WIDTH,
    }


@dataclass(frozen=True)
class PausedCampaign:
    row: CampaignRow
    by: str
    at: datetime | None
    reason: str  # from its pause's audit entry, when that is among the day's incidents


def _paused_campaigns(rows: list[CampaignRow], incidents: list[Incident]) -> list[PausedCampaign]:
    pauses: dict[str, AuditEntry] = {}
    for incident in incidents:  # newest first: each campaign's latest pause
        if incident.entry.action == "campaign.pause":
            pauses.setdefault(incident.entry.target_id, incident.entry)
    out = []
    for row in (r for r in rows if r.campaign.status == CampaignStatus.PAUSED):
        entry = pauses.get(str(row.campaign.pk))
        out.append(PausedCampaign(row, entry.actor_label, entry.created_at, entry.reason) if entry else PausedCampaign(row, "", None, ""))
    return out


def _in_review() -> list[InReview]:
    versions = VariantVersion.objects.filter(status__in=IN_REVIEW).select_related("variant__template", "assessment", "created_by")
    return [
        InReview(v, score_badge(assessment_of(v), float(v.variant.template.spam_threshold)))
        for v in versions.order_by("-created_at", "-id")[: VERSIONS_SHOWN + 1]
    ]


def _incidents(since: datetime) -> list[Incident]:
    kinds = Q(action__in=[a for a in INCIDENTS if a != "domain.warmup"]) | Q(action="domain.warmup", reason="back off")
    entries = AuditEntry.objects.filter(kinds, created_at__gte=since).order_by("-created_at", "-id")[:INCIDENTS_SHOWN]
    return [Incident(e, *INCIDENTS[e.action], admin_url_of(e.target_type, e.target_id)) for e in entries]
