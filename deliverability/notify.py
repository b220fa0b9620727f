"""Telling people the detector acted: a log line, a metric, and an optional webhook POST.

Called after the pause commits; a notification that fails is logged and never
undoes or delays the pause.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from django.conf import settings

from controlplane import metrics
from deliverability.models import PauseEvidence

logger = logging.getLogger("sendplane.detector")
WEBHOOK_TIMEOUT_SECONDS = 5


def pause_notify(evidence: PauseEvidence) -> None:
    logger.warning("anomaly detector paused %s: %s", _what(evidence), evidence.summary())
    metrics.DETECTOR_PAUSES.labels(signal=evidence.signal, rule=evidence.rule).inc()
    if settings.SENDPLANE_ALERT_WEBHOOK_URL:
        _post(settings.SENDPLANE_ALERT_WEBHOOK_URL, _payload(evidence))


def _what(evidence: PauseEvidence) -> str:
    domain = evidence.sending_domain.domain
    return domain if evidence.provider is None else f"{domain}'s mail to {evidence.provider or 'other receivers'}"


def _payload(evidence: PauseEvidence) -> dict[str, object]:
    return {
        "event": "domain.paused" if evidence.provider is None else "stream.paused",
        "domain": evidence.sending_domain.domain,
        "provider": evidence.provider,
        "text": f"Sendplane paused {_what(evidence)}: {evidence.summary()}",
        "evidence": {
            "id": evidence.pk, "minute": evidence.minute.isoformat(), "signal": evidence.signal, "rule": evidence.rule,
            "baseline": evidence.baseline, "observed": evidence.observed, "statistic": evidence.statistic,
            "threshold": evidence.threshold, "volume": evidence.volume, "events": evidence.events,
        },
    }


def _post(url: str, payload: dict[str, object]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310 - http(s) checked in settings
            response.read(1024)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        logger.error("alert webhook %s failed: %s", url, exc)
