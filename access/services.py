"""Issuing, revoking and touching API tokens; every issue and revocation goes into the audit trail."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from access import keys
from access.models import ApiToken
from audit.services import audit_record
from controlplane.errors import ServiceError

TOUCH_EVERY = timedelta(minutes=1)
NAME_MAX = ApiToken._meta.get_field("name").max_length or 100


class TokenError(ServiceError):
    """A request the service refuses; the message is one line for the caller to show."""


def token_create(*, user: Any, name: str, created_by: Any) -> tuple[ApiToken, str]:
    """Returns the row and the plaintext, which exists nowhere else afterwards."""
    name = " ".join(name.split())
    if not name or len(name) > NAME_MAX:
        raise TokenError(f"a token name must be 1 to {NAME_MAX} characters")
    parts, plaintext = keys.new_token()
    while ApiToken.objects.filter(prefix=parts.prefix).exists():  # 32 bits: a clash is rare, but the prefix must name one token
        parts, plaintext = keys.new_token()
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name, prefix=parts.prefix, key_hash=keys.digest(parts.secret), created_by=created_by
        )
        audit_record(
            action="token.create", target=token, actor=created_by, actor_label="command:create_token", data={"user": user.get_username()}
        )
    return token, plaintext


def token_revoke(*, token: ApiToken, revoked_by: Any) -> bool:
    """True if this call revoked it; revoking a revoked token changes nothing and records nothing."""
    with transaction.atomic():
        row = ApiToken.objects.select_for_update().get(pk=token.pk)
        if row.revoked_at is None:
            row.revoked_at = timezone.now()
            row.save(update_fields=["revoked_at"])
            audit_record(
                action="token.revoke", target=row, actor=revoked_by, actor_label="command:revoke_token",
                data={"user": row.user.get_username()},
            )
            revoked = True
        else:
            revoked = False
    token.revoked_at = row.revoked_at
    return revoked


def token_touch(*, token: ApiToken, now: datetime | None = None) -> bool:
    """Record a use, at most once per TOUCH_EVERY: a conditional update, so concurrent requests write once."""
    now = now or timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < TOUCH_EVERY:
        return False
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - TOUCH_EVERY)
    if not ApiToken.objects.filter(stale, pk=token.pk).update(last_used_at=now):
        return False
    token.last_used_at = now
    return True
