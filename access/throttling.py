"""DRF's user and anonymous throttles, with rates read from settings at request time, and a per-address throttle
for plain Django views (the unsubscribe page).

DRF copies ``DEFAULT_THROTTLE_RATES`` into a class attribute at import, so a
changed setting (``override_settings`` in tests) would never be seen. Counters
live in Django's default cache: per process with LocMemCache, shared with
``SENDPLANE_CACHE_URL=redis://...`` (ops/configuration.md).

DRF checks throttles after authentication and permissions, so a request with no
credentials (a 401 from the permission) or a wrong token (a 401 from the
authentication) would never be counted at all: ``throttle_unauthenticated`` is
called by both first, and counts such a request against the anonymous rate.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from rest_framework import throttling
from rest_framework.exceptions import Throttled


class _RateFromSettings:
    scope: str | None  # as DRF's throttles declare it; the subclasses below set "user" and "anon"

    def get_rate(self) -> str:
        if self.scope is None:  # what DRF's own get_rate says of a throttle without a scope
            raise ImproperlyConfigured(f"You must set either `.scope` or `.rate` for '{type(self).__name__}' throttle")
        return settings.SENDPLANE_API_THROTTLE[self.scope]


class UserRateThrottle(_RateFromSettings, throttling.UserRateThrottle):
    """Per authenticated user (all of a user's tokens and sessions share one budget)."""


class AnonRateThrottle(_RateFromSettings, throttling.AnonRateThrottle):
    """Per client address, for requests nobody authenticated."""


class AddressRateThrottle(_RateFromSettings, throttling.SimpleRateThrottle):
    """Per client address (REMOTE_ADDR, DRF's NUM_PROXIES), whoever the request says it is: ``scope`` names the rate."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__()

    def get_cache_key(self, request: Any, view: Any) -> str:
        # Never asks request.user: the token check calls this while it is working out who that is.
        return self.cache_format % {"scope": self.scope, "ident": client_address(request)}

    def allows(self, request: Any) -> bool:
        """Count the request; False once the address is over the rate. No view: the rate is the scope's alone."""
        no_view: Any = None
        return self.allow_request(request, no_view)


def client_address(request: Any) -> str | None:
    """The address every per-client count uses (the API, the unsubscribe page, django-axes): DRF's, by NUM_PROXIES.

    None for a request without one (``force_login``'s), which django-axes records as unknown."""
    address: str | None = throttling.BaseThrottle().get_ident(request)
    return address


def throttle_unauthenticated(request: Any) -> None:
    """Count a request that failed to authenticate against the anonymous rate; raise ``Throttled`` (429) over it."""
    throttle = AddressRateThrottle("anon")
    if not throttle.allows(request):
        raise Throttled(throttle.wait())


def throttle_per_address(scope: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """A plain Django view answers 429 with Retry-After to an address over the ``scope`` rate."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def throttled(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            throttle = AddressRateThrottle(scope)
            if throttle.allows(request):
                return view(request, *args, **kwargs)
            wait = throttle.wait()
            response = HttpResponse("Too many requests from your address; try again in a minute.\n", status=429, content_type="text/plain")
            response["Retry-After"] = str(max(1, round(wait or 60)))
            return response

        return throttled

    return decorate
