"""API tokens: per user, revocable, stored as a hash (the plaintext is shown once, at creation).

Below every domain app, like ``audit``: it imports nothing from the registry,
deliverability or dispatch.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """Created by services.token_create, revoked by services.token_revoke; never edited or deleted."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. the client that holds it.")
    prefix = models.CharField(max_length=8, unique=True, editable=False, help_text="Names the token; not a secret.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False, help_text="SHA-256 of the secret, hex.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    # Written at most once a minute per token (services.token_touch): not a write per request.
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix} ({self.name})"
