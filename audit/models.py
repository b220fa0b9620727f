"""The append-only audit trail: who changed what that matters, when, why, with what evidence.

Below every other app (any app may import it; it imports none), so the
registry, deliverability and dispatch all write to the same trail.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    """One state change. Rows are only ever inserted (services.audit_record); the admin shows them read-only."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Kept as text too: the trail must still say who after a user is deleted, and "detector" is nobody's account.
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=64, db_index=True, help_text="e.g. domain.pause, domain.resume")
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=300, blank=True)
    reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name_plural = "audit entries"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id", "created_at"], name="audit_target_time")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.target_label}"
