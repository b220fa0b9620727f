"""Campaigns, triggers (with their idempotency record) and the outbox of messages."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from deliverability.models import DEFAULT_PURPOSE, SendingDomain
from templates_registry.models import Template, VariantVersion


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class Campaign(models.Model):
    name = models.CharField(max_length=200)
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="campaigns")
    sending_domain = models.ForeignKey(SendingDomain, on_delete=models.PROTECT, related_name="campaigns")
    status = models.CharField(max_length=16, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT)
    # "transactional" (needs no consent), else a marketing purpose (deliverability.Purpose, or the built-in "marketing").
    purpose = models.SlugField(max_length=64, default=DEFAULT_PURPOSE)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class Trigger(models.Model):
    """One accepted trigger request; its key makes a repeat return the first response."""

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="triggers")
    idempotency_key = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64)
    response = models.JSONField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    # The request's X-Request-ID (or a new id): the worker's and feedback's log lines about its messages carry it.
    correlation_id = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "idempotency_key"], name="trigger_key_once_per_campaign")
        ]
        indexes = [
            # dispatch.services.retention: answers still naming recipients, or keys not yet in their erased form
            # ("erased:", triggers.erased_key), oldest first; done rows leave the index.
            models.Index(
                fields=["created_at"],
                condition=(
                    ~Q(idempotency_key__startswith="erased:")
                    | ~Q(response__suppressed_recipients=[])
                    | ~Q(response__rejections=[])
                    | ~Q(response__without_consent_recipients=[])
                ),
                name="trigger_retention",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.idempotency_key} (campaign {self.campaign_id})"


class MessageStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    DEFERRED = "deferred", "Deferred (will retry)"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SUPPRESSED = "suppressed", "Suppressed"
    UNKNOWN = "unknown", "Unknown (may have been sent)"
    CANCELLED = "cancelled", "Cancelled (its campaign was cancelled before it was handed over)"


WAITING = (MessageStatus.QUEUED, MessageStatus.DEFERRED)
TERMINAL = (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SUPPRESSED, MessageStatus.UNKNOWN, MessageStatus.CANCELLED)
# Done with for good: retention (dispatch.services.retention) may blank them. Not UNKNOWN: an operator still decides it.
FINAL = (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SUPPRESSED, MessageStatus.CANCELLED)


class Message(models.Model):
    """One recipient of one trigger: the source of truth the broker only hints at."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)  # the Message-ID's left part
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="messages")
    trigger = models.ForeignKey(Trigger, on_delete=models.PROTECT, related_name="messages")
    # Denormalized from the campaign so claims read one table.
    sending_domain = models.ForeignKey(SendingDomain, on_delete=models.PROTECT, related_name="+")
    provider = models.CharField(max_length=20, blank=True)
    version = models.ForeignKey(VariantVersion, on_delete=models.PROTECT, related_name="+")
    recipient = models.CharField(max_length=320)
    context = models.JSONField(default=dict)
    status = models.CharField(max_length=12, choices=MessageStatus.choices, default=MessageStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    not_before = models.DateTimeField()
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_reply = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # When the hand-over chunk that last carried it read the pause flags and suppressions
    # (deliverability.services.handover): a suppression committed later may not have stopped it.
    checked_at = models.DateTimeField(null=True, blank=True)
    # The trigger rendered this recipient and found no active content (templates_registry.checks): the worker,
    # whose render is the same, need not look again. False for rows queued before that check existed.
    content_checked = models.BooleanField(default=False, editable=False)
    # Outcomes already counted in its campaign's results (dispatch.services.results): one bit each, so a
    # message's second bounce report or fifth open never counts twice.
    outcomes = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # dispatch.services.worker.message_claim: due rows of one domain, oldest first.
            models.Index(
                fields=["sending_domain", "not_before"],
                condition=Q(status__in=["queued", "deferred"]),
                name="message_claimable",
            ),
            # dispatch.services.sweeper: leases that ran out.
            models.Index(fields=["lease_expires_at"], condition=Q(status="sending"), name="message_leased"),
            models.Index(fields=["campaign", "status"], name="message_campaign_status"),
            # dispatch.services.retention: final rows still holding a context, or an address, oldest first. Blanked
            # rows leave the index, so a batch never walks past the years already done.
            models.Index(
                fields=["created_at"], condition=Q(status__in=FINAL) & ~Q(context={}), name="message_retention_context"
            ),
            models.Index(
                fields=["created_at"], condition=Q(status__in=FINAL) & ~Q(recipient=""), name="message_retention_address"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.recipient} ({self.status})"

    def message_id(self) -> str:
        return f"<{self.uuid}@{self.sending_domain.domain}>"


class CampaignResult(models.Model):
    """What happened to one campaign's messages of one version: counted as it happens, never by scanning messages.

    Each column counts messages (not events): ``dispatch.services.results``
    adds one when a message first reaches that outcome. Opens are inflated by
    Apple Mail Privacy Protection (its proxy fetches every image): shown, never
    decided on by default.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="results")
    version = models.ForeignKey(VariantVersion, on_delete=models.PROTECT, related_name="+")
    accepted = models.PositiveIntegerField(default=0, help_text="Queued by a trigger")
    sent = models.PositiveIntegerField(default=0, help_text="Taken by the receiving server or the ESP")
    failed = models.PositiveIntegerField(default=0, help_text="Refused for good at delivery (or given up on)")
    delivered = models.PositiveIntegerField(default=0, help_text="Reported delivered by an ESP")
    deferred = models.PositiveIntegerField(default=0, help_text="Deferred at least once")
    bounced_hard = models.PositiveIntegerField(default=0)
    bounced_soft = models.PositiveIntegerField(default=0)
    complained = models.PositiveIntegerField(default=0)
    unsubscribed = models.PositiveIntegerField(default=0)
    opened = models.PositiveIntegerField(default=0, help_text="Inflated by Apple Mail Privacy Protection")
    clicked = models.PositiveIntegerField(default=0)
    # What handing these messages over cost, in millionths of SENDPLANE_COST_CURRENCY, at the price of the day.
    cost_micros = models.BigIntegerField(default=0)

    COUNTS = (
        "accepted", "sent", "failed", "delivered", "deferred", "bounced_hard", "bounced_soft", "complained", "unsubscribed",
        "opened", "clicked",
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "version"], name="campaign_result_once_per_version")]

    def __str__(self) -> str:
        return f"campaign {self.campaign_id} version {self.version_id}"


class Quarantine(models.Model):
    """A variant set aside by the guardrails (dispatch.services.guardrails): its weight went to 0, with the evidence."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="quarantines")
    variant = models.ForeignKey("templates_registry.Variant", on_delete=models.CASCADE, related_name="quarantines")
    metric = models.CharField(max_length=16, help_text="complaint, unsubscribe or bounce")
    evidence = models.JSONField(help_text="The variant's and its siblings' counts, the test's statistic and threshold")
    weight_before = models.PositiveIntegerField(help_text="Given back on restore")
    created_at = models.DateTimeField(auto_now_add=True)
    restored_at = models.DateTimeField(null=True, blank=True)
    restored_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    restore_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.variant} quarantined ({self.metric})"


class AttemptOutcome(models.TextChoices):
    """What one attempt ended with, as the transport said it (the message's own status may differ: a 4xx after
    its last try is ``deferred`` here and ``failed`` on the message)."""

    SENT = "sent", "Sent (250)"
    DEFERRED = "deferred", "Deferred (4xx or connection lost before DATA)"
    FAILED = "failed", "Failed (5xx, or the message could not be prepared)"
    SUPPRESSED = "suppressed", "Suppressed at the last check before hand-over"
    UNKNOWN = "unknown", "Unknown (a 250 may have been sent)"


class MessageAttempt(models.Model):
    """One hand-over of one message (or its end before one), written in bulk by the worker's recording.

    Rows go back to the queue without one when they were never handed over
    (paused, out of tokens, a session that could not open): those are not
    attempts. ``reply`` may quote the recipient: the GDPR erase blanks it
    (dispatch.services.erasure).
    """

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField(help_text="The message's attempt count when it was claimed")
    at = models.DateTimeField()
    outcome = models.CharField(max_length=12, choices=AttemptOutcome.choices)
    code = models.PositiveSmallIntegerField(null=True, blank=True, help_text="The receiver's reply code; empty: none was read")
    reply = models.TextField(blank=True)  # bounded like Message.last_reply (1,000 characters)
    transport = models.CharField(max_length=40, blank=True, help_text="smtp, an ESP's name, or sweeper (a lease that ran out)")

    class Meta:
        ordering = ["message_id", "at", "id"]
        # dispatch.story.message_story: one message's attempts, in time order.
        indexes = [models.Index(fields=["message", "at"], name="attempt_message_time")]

    def __str__(self) -> str:
        return f"attempt {self.number} of message {self.message_id}: {self.outcome}"


class JobKind(models.TextChoices):
    RESCORE = "rescore", "Version re-scoring"
    SUPPRESSION_IMPORT = "suppression_import", "Suppression import"
    ERASURE = "erasure", "Erasure"


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Job(models.Model):
    """Long work done in chunks, its progress shown while it runs (dispatch.services.jobs).

    The input waits in ``JobItem`` rows, each deleted in the transaction that
    counts it done, so a job keeps only what is left to do: a finished
    erasure keeps no address. ``summary`` and ``problems`` never name an
    address in clear (hash labels, controlplane.addresses).
    """

    kind = models.CharField(max_length=24, choices=JobKind.choices)
    state = models.CharField(max_length=8, choices=JobState.choices, default=JobState.QUEUED)
    total = models.PositiveIntegerField(help_text="Items to do: the input's good lines, or the versions")
    done = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True, help_text="Outcomes by name (added, already suppressed, ...)")
    summary = models.CharField(max_length=300, blank=True)
    problems = models.JSONField(default=list, blank=True, help_text="One line each, the first 100")
    problem_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Who runs it: a runner claims the job by a conditional update and renews the lease after each chunk.
    runner = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    claims = models.PositiveIntegerField(default=0, help_text="Runs that took the job up (more than one: it was resumed)")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # dispatch.services.jobs.jobs_resume (beat): unfinished jobs whose runner's lease ran out; done jobs leave it.
            models.Index(fields=["lease_until"], condition=Q(state__in=["queued", "running"]), name="job_unfinished_lease"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"


class JobItem(models.Model):
    """One item of a job still to do (a version id, or an address and its line); deleted once done."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField()
    line = models.PositiveIntegerField(default=0, help_text="The input's line, for problems; 0: not from a list")
    data = models.JSONField()

    class Meta:
        ordering = ["job_id", "position"]
        # dispatch.services.jobs: the next chunk of a job, in input order.
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="job_item_position")]

    def __str__(self) -> str:
        return f"item {self.position} of job {self.job_id}"
