"""Finding tokens: by the plaintext a client presents, by the prefix an operator names."""

from __future__ import annotations

import hmac

from access import keys
from access.models import ApiToken


def token_for_plaintext(plaintext: str) -> ApiToken | None:
    """The token ``plaintext`` is, revoked or not (the caller says which), with its user.

    Found by the hash of the secret: the database compares digests the client
    cannot steer, so the lookup's timing tells nothing about stored secrets.
    """
    parts = keys.parse(plaintext)
    if parts is None:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=keys.digest(parts.secret)).first()
    if token is None or not hmac.compare_digest(token.prefix, parts.prefix):
        return None
    return token


def token_by_prefix(prefix: str) -> ApiToken | None:
    return ApiToken.objects.select_related("user").filter(prefix=prefix.strip()).first()
