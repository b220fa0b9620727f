"""Sending domains, their token buckets, and suppressed addresses."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class SendingDomain(models.Model):
    """A from-domain we send as, with its pace and its pause switch."""

    domain = models.CharField(max_length=253, unique=True)
    default_sender = models.EmailField(help_text="From address, e.g. news@mail.example.com")
    # DKIM: the private key stays out of the database; this names a file the
    # deployment provides (PEM), or is empty to send unsigned.
    dkim_selector = models.CharField(max_length=63, blank=True)
    dkim_key_path = models.CharField(max_length=500, blank=True)
    rate_per_second = models.FloatField(default=10.0)
    burst = models.PositiveIntegerField(default=20)
    # Daily rates while warming up a new domain: day 0 first; the rate is the
    # smaller of rate_per_second and the day's entry, the last entry holding on.
    warmup_schedule = models.JSONField(default=list, blank=True)
    warmup_started_on = models.DateField(null=True, blank=True)
    # Optional second bucket per mailbox provider group: {"gmail": 5.0, "microsoft": 3.0}.
    provider_rates = models.JSONField(default=dict, blank=True)
    paused = models.BooleanField(default=False)
    paused_reason = models.TextField(blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["domain"]

    def __str__(self) -> str:
        return self.domain


class TokenBucket(models.Model):
    """One bucket per key (``domain:<id>`` or ``domain:<id>:<provider>``), shared by every worker.

    A database row, taken under a row lock (PostgreSQL) or an IMMEDIATE
    transaction (SQLite): the same code serves the embedded default and a
    fleet of workers on many machines.
    """

    key = models.CharField(max_length=200, unique=True)
    tokens = models.FloatField()
    refilled_at = models.FloatField(help_text="Unix time of the last refill")

    def __str__(self) -> str:
        return f"{self.key}: {self.tokens:.1f}"


class SuppressionReason(models.TextChoices):
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    HARD_BOUNCE = "hard_bounce", "Hard bounce"
    COMPLAINT = "complaint", "Complaint"
    MANUAL = "manual", "Added by a person"


class Suppression(models.Model):
    """An address we must not send to: for one sending domain, or for all when domain is empty."""

    address = models.CharField(max_length=320, help_text="Lower-cased")
    sending_domain = models.ForeignKey(SendingDomain, null=True, blank=True, on_delete=models.CASCADE)
    reason = models.CharField(max_length=20, choices=SuppressionReason.choices)
    source = models.CharField(max_length=200, blank=True, help_text="What caused it: a message id, an event, a person")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["address", "sending_domain"], name="suppression_once_per_domain"),
            models.UniqueConstraint(
                fields=["address"], condition=Q(sending_domain__isnull=True), name="suppression_once_globally"
            ),
        ]
        indexes = [models.Index(fields=["address"], name="suppression_address")]

    def __str__(self) -> str:
        return f"{self.address} ({self.reason})"
