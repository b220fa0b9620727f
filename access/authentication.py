"""``Authorization: Token sp_<prefix>_<secret>`` (or ``Bearer``): DRF authentication by hashed API token.

The ``Token`` scheme is the one DRF's authtoken used, so clients keep their
header. ``request.auth`` is the ApiToken. Every refusal is a 401 with one line, and
counts against the anonymous rate of the client's address (a 429 over it): guessing
tokens costs the guesser as much as asking without one.
"""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

from access.models import ApiToken
from access.selectors import token_for_plaintext
from access.services import token_touch
from access.throttling import throttle_unauthenticated

SCHEMES = {b"token", b"bearer"}


class ApiTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Any) -> tuple[Any, ApiToken] | None:
        try:
            return self._authenticate(request)
        except AuthenticationFailed:
            throttle_unauthenticated(request)
            raise

    def _authenticate(self, request: Any) -> tuple[Any, ApiToken] | None:
        words = get_authorization_header(request).split()
        if not words or words[0].lower() not in SCHEMES:
            return None  # not ours: the session (or nobody) may still authenticate
        if len(words) != 2:
            raise AuthenticationFailed("Invalid Authorization header: expected 'Token <token>'.")
        try:
            plaintext = words[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid Authorization header: the token is not ASCII.") from None
        token = token_for_plaintext(plaintext)
        if token is None:
            raise AuthenticationFailed("Invalid token.")
        if token.revoked_at is not None:
            raise AuthenticationFailed("Token revoked.")
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        token_touch(token=token)
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return "Token"  # also what makes DRF answer 401 rather than 403 to an anonymous request
