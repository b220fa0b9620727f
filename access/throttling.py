"""DRF's user and anonymous throttles, with rates read from settings at request time.

DRF copies ``DEFAULT_THROTTLE_RATES`` into a class attribute at import, so a
changed setting (``override_settings`` in tests) would never be seen. Counters
live in Django's default cache: per process with LocMemCache, shared with
``SENDPLANE_CACHE_URL=redis://...`` (ops/configuration.md).
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from rest_framework import throttling


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
