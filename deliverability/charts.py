"""The reputation chart of a domain: markup that ``controlplane/static/sendplane/charts.js`` fills from the admin's JSON.

The script draws with uPlot (vendored under ``controlplane/static/vendor/uplot/``,
served by the project's own static files: no CDN) two charts on one UTC time
axis: messages a minute per provider stream, then the bounce and complaint
rates with the detector's ceilings; pauses and resumes are bands and flags on
both, listed below with who acted and why, and a table gives the numbers as
text. The data comes from ``SendingDomainAdmin``'s ``chart.json``
(``chart_data.reputation_chart_data``), one request per range shown.

Rendering the markup reads nothing: the cockpit puts one per domain on its
page without a query per domain (its compact charts load when scrolled to).
"""

from __future__ import annotations

from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from deliverability.chart_data import DEFAULT_RANGE, RANGES
from deliverability.models import SendingDomain

SCRIPT = "sendplane/charts.js"
STYLES = ("vendor/uplot/uPlot.min.css", "sendplane/charts.css")
UPLOT = "vendor/uplot/uPlot.iife.min.js"


def reputation_chart(domain: SendingDomain, *, range: str = DEFAULT_RANGE, compact: bool = False) -> SafeString:
    """The chart's container with its styles and script; ``compact``: a smaller chart without the range and provider buttons."""
    if range not in RANGES:
        raise ValueError(f"unknown range {range!r}: one of {', '.join(RANGES)}")
    return format_html(
        '<link rel="stylesheet" href="{}"><link rel="stylesheet" href="{}">'
        '<div class="sp-chart{}" data-src="{}" data-range="{}" data-uplot="{}" data-domain="{}">'
        "<noscript><p>The reputation chart needs JavaScript; the detector evidence below lists the pauses.</p></noscript>"
        "</div>"
        # A module runs once a page, however many charts include it (the cockpit has one a domain).
        '<script type="module" src="{}"></script>',
        static(STYLES[0]), static(STYLES[1]),
        " sp-chart-compact" if compact else "",
        reverse("admin:deliverability_sendingdomain_chart", args=[domain.pk]), range, static(UPLOT), domain.domain,
        static(SCRIPT),
    )
