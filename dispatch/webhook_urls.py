"""ESP tracking webhooks (django-anymail) under /webhooks/<esp>/tracking/, off unless a secret is set.

anymail validates each request (basic auth, signatures) and normalizes it;
``dispatch.signals`` passes the events to ``dispatch.services.webhooks``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailImproperlyInstalled
from anymail.utils import get_anymail_setting
from anymail.webhooks.amazon_ses import AmazonSESBaseWebhookView, AmazonSESTrackingWebhookView
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, path

logger = logging.getLogger(__name__)


def secret_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """No ANYMAIL WEBHOOK_SECRET, no endpoint: 404, never anymail's open-to-anyone mode.

    Read per request through anymail's own setting lookup, so the gate and the
    view's basic-auth check always agree on the secret.
    """

    @functools.wraps(view)  # keeps csrf_exempt from anymail's view
    def gated(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not get_anymail_setting("webhook_secret", default=None):
            raise Http404("ESP webhooks are off: ANYMAIL_WEBHOOK_SECRET is not set")
        return view(request, *args, **kwargs)

    return gated


class AmazonSESTracking(AmazonSESTrackingWebhookView):
    """anymail's SES view, also without boto3 (not a dependency; only SNS auto-confirm needs it).

    Without boto3 a SubscriptionConfirmation is answered 200 and its URL logged
    for an operator to open; notifications work the same either way.
    """

    def __init__(self, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except AnymailImproperlyInstalled:
            self.auto_confirm_enabled = False
            self.session_params: dict[str, Any] = {}
            self.client_params: dict[str, Any] = {}
            super(AmazonSESBaseWebhookView, self).__init__(**kwargs)

    def auto_confirm_sns_subscription(self, sns_message: dict[str, Any]) -> None:
        if self.auto_confirm_enabled:
            return super().auto_confirm_sns_subscription(sns_message)
        logger.warning("SNS topic %s waits for confirmation: open %s", sns_message.get("TopicArn"), sns_message.get("SubscribeURL"))
        return None


def _tracking(pattern: URLPattern, name: str) -> URLPattern:
    view = AmazonSESTracking.as_view() if name == "amazon_ses_tracking_webhook" else pattern.callback
    return path(str(pattern.pattern), secret_required(view), name=name)


# Tracking only (/webhooks/<esp>/tracking/): inbound mail is not ours to receive.
urlpatterns = [_tracking(p, p.name) for p in anymail_urls.urlpatterns if p.name and p.name.endswith("tracking_webhook")]
