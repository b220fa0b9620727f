"""ESP tracking webhooks (django-anymail) under /webhooks/<esp>/tracking/, off unless a secret is set.

anymail validates each request (basic auth, signatures) and normalizes it;
``dispatch.signals`` passes the events to ``dispatch.services.webhooks``.
A body anymail cannot read (empty, not JSON, truncated, nested too deeply, not
the shape the ESP sends) is a one-line 400 here: anymail's parsers would raise
KeyError, TypeError or RecursionError, a 500 the ESP retries for days.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailAPIError, AnymailImproperlyInstalled, AnymailWebhookValidationFailure
from anymail.utils import get_anymail_setting
from anymail.webhooks.amazon_ses import AmazonSESBaseWebhookView, AmazonSESTrackingWebhookView
from anymail.webhooks.base import AnymailBaseWebhookView
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.urls import URLPattern, path

from controlplane.json_values import JSONValueError, json_parse

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


class MalformedBody(Exception):
    """The request passed anymail's authentication but its body cannot be read as the ESP's events."""


# What anymail's parsers raise on a body that is not what the ESP sends (SES wraps its JSON errors in AnymailAPIError).
_PARSE_ERRORS = (ValueError, TypeError, LookupError, AttributeError, RecursionError, AnymailAPIError)
_JSON_TYPES = {"application/json", "text/plain"}  # SNS posts its JSON as text/plain; Mailgun's legacy form is checked by anymail


@contextmanager
def _readable(what: str) -> Iterator[None]:
    try:
        yield
    except _PARSE_ERRORS as exc:
        raise MalformedBody(f"{what}: not the shape this ESP sends ({type(exc).__name__})") from exc


def _bad_request(line: str) -> HttpResponse:
    line = " ".join(line.split())
    logger.warning("webhook refused: %s", line)
    return HttpResponseBadRequest(line, content_type="text/plain; charset=utf-8")


class BodyChecked(AnymailBaseWebhookView):
    """Mixed in before anymail's view: authentication first (a bad secret or signature is still a 400), then the body."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return super().post(request, *args, **kwargs)
        except MalformedBody as exc:
            return _bad_request(f"malformed {self.esp_name} webhook body: {exc}")
        except AnymailWebhookValidationFailure as exc:  # the same 400 anymail gives, in one line instead of an HTML page
            return _bad_request(f"{self.esp_name} webhook not validated: {exc}")

    def run_validators(self, request: HttpRequest) -> None:
        with _readable("signature fields"):
            super().run_validators(request)
        if not request.body.strip():
            raise MalformedBody("empty")
        if request.content_type in _JSON_TYPES:
            try:
                json_parse(request.body)
            except JSONValueError as exc:
                raise MalformedBody(str(exc)) from None

    def parse_events(self, request: HttpRequest) -> list[Any]:
        with _readable("events"):
            return list(super().parse_events(request))  # a generator would fail later, inside the signal loop


def _tracking(pattern: URLPattern, name: str) -> URLPattern:
    base = AmazonSESTracking if name == "amazon_ses_tracking_webhook" else pattern.callback.view_class  # type: ignore[attr-defined]
    checked: type[BodyChecked] = type(f"BodyChecked{base.__name__}", (BodyChecked, base), {})
    view = checked.as_view()
    return path(str(pattern.pattern), secret_required(view), name=name)


# Tracking only (/webhooks/<esp>/tracking/): inbound mail is not ours to receive.
urlpatterns = [_tracking(p, p.name) for p in anymail_urls.urlpatterns if p.name and p.name.endswith("tracking_webhook")]
