"""Sending domains, their token buckets, and suppressed addresses."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

# The vocabularies are defined once, beside the code that produces them, and re-exported here
# (``from deliverability.models import EventType`` keeps working).
from deliverability.bounces.vocabulary import EventType, Kind, MatchedBy, Reason
from deliverability.detector import Rule, Signal


class SenderRules(models.TextChoices):
    """A sending domain's policy for the providers' sender rules (services/sender_rules.py)."""

    ENFORCE = "enforce", "Enforce"
    WARN = "warn", "Warn only"


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
    # Warm-up of a new domain (services/warmup.py): the steps' rates (messages a second) and, optionally, the
    # messages a day each step allows. The rate is the smaller of rate_per_second and the step's entry; the step
    # advances a day at a time only while the domain's signals are healthy, and backs off when they are not.
    warmup_schedule = models.JSONField(default=list, blank=True)
    warmup_daily_caps = models.JSONField(default=list, blank=True)
    warmup_started_on = models.DateField(null=True, blank=True)
    warmup_step = models.PositiveIntegerField(default=0, editable=False)
    warmup_step_since = models.DateField(null=True, blank=True, editable=False)
    # Optional second bucket per mailbox provider group: {"gmail": 5.0, "microsoft": 3.0}.
    provider_rates = models.JSONField(default=dict, blank=True)
    # The relay's session limits (SENDPLANE_SMTP_*) for this domain's mail, where its relay or its receivers
    # want fewer: set either and the domain gets sessions of its own in each worker process
    # (dispatch/services/smtp_pool.py), never more at once than the relay's limit.
    smtp_connections = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="At most this many SMTP sessions carry this domain's mail at once, per worker process; empty: the relay's limit",
    )
    smtp_deliveries_per_connection = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="A session of this domain is closed after this many messages; empty: the relay's limit",
    )
    paused = models.BooleanField(default=False)
    paused_reason = models.TextField(blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_by = models.CharField(
        max_length=150, blank=True, help_text="'detector' for an automatic pause, else who paused it; empty when running"
    )
    # After a resume the rate ramps from a tenth to the full rate over ramp_minutes (services/pause.py: ramp_factor).
    ramp_started_at = models.DateTimeField(null=True, blank=True)
    ramp_minutes = models.PositiveIntegerField(default=0)
    # Bumped by every resume (services/pause.py), read by the detector (services/detection.py): the detector forgets
    # a domain whose epoch moved since its last run, and never pauses it on data read under an older epoch.
    detector_epoch = models.PositiveIntegerField(default=0, editable=False)
    # An operator's override of a detector pause (services/pause.py): sending until then whatever the detector
    # decides; the detector keeps its own view (no epoch bump) and it returns when the override lapses.
    override_until = models.DateTimeField(null=True, blank=True, editable=False)
    override_from = models.DateTimeField(null=True, blank=True, editable=False)  # the detector's evidence restarts here
    # Consent (issue 18): a marketing campaign's trigger refuses recipients without consent for its purpose.
    consent_required = models.BooleanField(
        default=False, help_text="A marketing campaign's trigger refuses recipients who gave no consent for its purpose"
    )
    # The providers' sender rules (services/sender_rules.py): enforce refuses a marketing launch while a
    # required rule fails; warn shows the failures and sends.
    sender_rules = models.CharField(
        max_length=8, choices=SenderRules.choices, default=SenderRules.ENFORCE,
        help_text="enforce: a domain failing a required sender rule cannot launch a marketing campaign",
    )
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
    SOFT_BOUNCE = "soft_bounce", "Repeated soft bounces"
    COMPLAINT = "complaint", "Complaint"
    MANUAL = "manual", "Added by a person"


class Suppression(models.Model):
    """An address we must not send to: for one sending domain, or for all when domain is empty.

    Looked up by ``address_hash`` (SHA-256 of its matching form, ``controlplane.addresses``), so a
    GDPR erase can blank ``address`` and the address still stays suppressed.
    """

    address = models.CharField(max_length=320, blank=True, help_text="Lower-cased; empty once erased")
    address_hash = models.CharField(max_length=64, editable=False)
    sending_domain = models.ForeignKey(SendingDomain, null=True, blank=True, on_delete=models.CASCADE)
    reason = models.CharField(max_length=20, choices=SuppressionReason.choices)
    source = models.CharField(max_length=200, blank=True, help_text="What caused it: a message id, an event, a person")
    event = models.ForeignKey(
        "FeedbackEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="The event that caused it"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["address_hash", "sending_domain"], name="suppression_once_per_domain"),
            models.UniqueConstraint(
                fields=["address_hash"], condition=Q(sending_domain__isnull=True), name="suppression_once_globally"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.address or 'erased'} ({self.reason})"


class FeedbackEvent(models.Model):
    """One thing a receiver told us about one recipient: an ESP webhook, a raw bounce, an unsubscribe.

    ``dedupe_key`` makes ingestion idempotent: providers re-send and reorder,
    and the same bounce may be uploaded twice; the second insert changes nothing.
    """

    event_type = models.CharField(max_length=16, choices=EventType.choices)
    kind = models.CharField(max_length=12, blank=True, choices=Kind.choices)
    reason = models.CharField(max_length=32, blank=True, choices=Reason.choices)
    status = models.CharField(max_length=16, blank=True, help_text="Enhanced status code (RFC 3463)")
    smtp_reply = models.TextField(blank=True)
    feedback_type = models.CharField(max_length=32, blank=True)
    recipient = models.CharField(max_length=320, blank=True, help_text="Lower-cased; empty once erased")
    recipient_hash = models.CharField(max_length=64, blank=True, editable=False)
    sending_domain = models.ForeignKey(SendingDomain, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The outbox row it is about (dispatch.Message.uuid), when the report let us find it.
    message_uuid = models.UUIDField(null=True, blank=True)
    matched_by = models.CharField(max_length=16, blank=True, choices=MatchedBy.choices, help_text="Empty: tied to no message of ours")
    # Only a verified event suppresses and counts: a report about one of our messages (signed VERP token,
    # our Message-ID in the echoed original, ESP metadata) naming that message's own recipient, or our own
    # SMTP session / unsubscribe token. Anything else is evidence for operators; matched_by then says what
    # the report claimed and detail["unverified"] why the claim was not taken.
    verified = models.BooleanField(default=False, help_text="Tied to our message and its recipient: it suppressed and counted")
    source = models.CharField(max_length=40, help_text="webhook:<esp>, upload, mailbox, unsubscribe, smtp")
    dedupe_key = models.CharField(max_length=64, unique=True, editable=False)
    detail = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            # deliverability.services.suppression: soft bounces of one address in the window.
            models.Index(fields=["recipient_hash", "occurred_at"], name="event_recipient_time"),
            models.Index(fields=["message_uuid"], name="event_message"),
            models.Index(fields=["sending_domain", "occurred_at"], name="event_domain_time"),
            # dispatch.services.retention: events still in clear, oldest received first; anonymised rows leave it.
            models.Index(
                fields=["received_at"], condition=~Q(recipient="") | ~Q(smtp_reply="") | ~Q(detail={}), name="event_retention"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.recipient or 'erased'} ({self.reason or self.kind})"


class DomainMinute(models.Model):
    """What happened on one sending domain's mail to one provider group in one minute: the anomaly detector's input.

    One row per (domain, provider group, minute), incremented by upsert as
    events commit, so the detector reads a contiguous block of rows into
    arrays: per stream as they are, per domain summed. The bounce
    columns are disjoint: hard (address failures), reputation (blocks, spam,
    authentication: what says something about us), soft (the rest).
    """

    sending_domain = models.ForeignKey(SendingDomain, on_delete=models.CASCADE, related_name="minutes")
    provider = models.CharField(max_length=20, blank=True, default="", help_text="Provider group of the recipients; empty: every other")
    minute = models.DateTimeField(help_text="Start of the minute, UTC")
    # Final delivery attempts: accepted (250) or refused for good (5xx) by the receiving server;
    # a 4xx that will be retried is not counted until its last try.
    sent = models.PositiveIntegerField(default=0)
    delivered = models.PositiveIntegerField(default=0)
    deferred = models.PositiveIntegerField(default=0)
    bounced_hard = models.PositiveIntegerField(default=0)
    bounced_soft = models.PositiveIntegerField(default=0)
    bounced_reputation = models.PositiveIntegerField(default=0)
    complained = models.PositiveIntegerField(default=0)
    unsubscribed = models.PositiveIntegerField(default=0)

    COUNTS = (
        "sent", "delivered", "deferred", "bounced_hard", "bounced_soft", "bounced_reputation", "complained", "unsubscribed",
    )

    class Meta:
        ordering = ["sending_domain", "minute"]
        constraints = [models.UniqueConstraint(fields=["sending_domain", "provider", "minute"], name="domain_minute_once")]

    def __str__(self) -> str:
        return f"{self.sending_domain_id} {self.provider or 'other'} {self.minute:%Y-%m-%d %H:%M}"


class DetectorState(models.Model):
    """The anomaly detector's state for every domain, one row: survives restarts, read and written under a lock.

    ``state`` is ``deliverability.detector.DetectorState.to_bytes()`` (numpy
    arrays, one entry per domain in ``domain_ids`` order); ``domain_epochs``
    holds each domain's ``SendingDomain.detector_epoch`` as the run read it,
    in the same order (int64; empty before the field existed: all 0);
    ``minute`` is the last minute fed to it. One row rather than one per
    domain: the beat task loads and saves 100,000 domains in one read and one write.
    """

    name = models.CharField(max_length=32, unique=True, default="default")
    minute = models.DateTimeField(null=True, blank=True)
    domain_ids = models.BinaryField(default=bytes)
    domain_epochs = models.BinaryField(default=bytes)
    state = models.BinaryField(default=bytes)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"detector state {self.name} (last minute {self.minute:%Y-%m-%d %H:%M})" if self.minute else f"detector state {self.name}"


class PauseEvidence(models.Model):
    """Why the detector paused a domain, or one of its provider streams: the numbers an on-call engineer reads at 3 a.m."""

    sending_domain = models.ForeignKey(SendingDomain, on_delete=models.CASCADE, related_name="pause_evidence")
    provider = models.CharField(  # noqa: DJ001 - null (the whole domain) is not "" (the stream to every other receiver)
        max_length=20, null=True, blank=True, help_text="The provider stream paused; null: the whole domain, empty: every other receiver"
    )
    minute = models.DateTimeField(help_text="The minute whose data tipped the decision")
    signal = models.CharField(max_length=16, choices=Signal.choices)
    rule = models.CharField(max_length=16, choices=Rule.choices)
    baseline = models.FloatField(help_text="The domain's learned rate before the shift")
    observed = models.FloatField(help_text="The rate since the shift began")
    statistic = models.FloatField()
    threshold = models.FloatField()
    volume = models.PositiveIntegerField(help_text="Messages sent since the shift began")
    events = models.PositiveIntegerField(default=0, help_text="Bounces or complaints since the shift began")
    replies = models.JSONField(default=list, blank=True, help_text="Receiving servers' replies that decided (batch rule)")
    created_at = models.DateTimeField(auto_now_add=True)
    resumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "pause evidence"

    def __str__(self) -> str:
        return f"{self.sending_domain}: {self.signal} {self.observed:.2%} vs baseline {self.baseline:.2%}"

    def summary(self) -> str:
        heard = f"; replies: {' | '.join(self.replies)}" if self.replies else ""
        stream = "" if self.provider is None else f" at {self.provider or 'other receivers'}"
        return (
            f"detector{stream}: {self.signal} rate {self.observed:.2%} over {self.volume} messages "
            f"vs baseline {self.baseline:.2%} ({self.rule} {self.statistic:.1f} > {self.threshold:.1f}){heard}"
        )


class ProviderStream(models.Model):
    """Mail from one sending domain to one mailbox provider group: its own pause and pace (issue 16).

    ``services/streams.py`` owns it: what the workers hear from a provider
    (``bounces/replies.py``) backs its rate off (``rate_factor``, AIMD) or
    pauses it, while the domain's other streams send on. A row exists once a
    stream was heard from; none means running at full rate.
    """

    sending_domain = models.ForeignKey(SendingDomain, on_delete=models.CASCADE, related_name="streams")
    provider = models.CharField(max_length=20, blank=True, help_text="Provider group (deliverability.providers); empty: every other")
    paused = models.BooleanField(default=False)
    paused_reason = models.TextField(blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_by = models.CharField(max_length=150, blank=True)
    replies = models.JSONField(default=list, blank=True, help_text="The replies that decided the pause")
    rate_factor = models.FloatField(default=1.0, help_text="Share of the stream's rate allowed now (backs off on rate limiting)")
    slowed_at = models.DateTimeField(null=True, blank=True)
    strikes = models.PositiveIntegerField(default=0, help_text="Refusals about us since the stream last had mail accepted")
    detector_epoch = models.PositiveIntegerField(default=0, help_text="Bumped by each resume: the detector forgets the stream's past")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sending_domain", "provider"], name="stream_once_per_domain")]

    def __str__(self) -> str:
        return f"{self.sending_domain} -> {self.provider or 'other receivers'}"


class BatchWatch(models.Model):
    """One domain's bounce CUSUM as the minute pass left it, for the workers' check between minutes.

    Written by ``detection.detector_run`` where it changed; read by
    ``batch_watch.batch_watch`` after a batch that heard refusals. A domain
    without a row (or whose ``epoch`` is not its ``detector_epoch``: resumed
    since) is judged as a cold one.
    """

    sending_domain = models.OneToOneField(SendingDomain, on_delete=models.CASCADE, primary_key=True, related_name="batch_watch")
    epoch = models.PositiveIntegerField(default=0)
    cusum = models.FloatField(default=0.0)
    p0 = models.FloatField()
    p1 = models.FloatField()
    exc_events = models.FloatField(default=0.0)
    exc_trials = models.FloatField(default=0.0)

    class Meta:
        verbose_name_plural = "batch watches"

    def __str__(self) -> str:
        return f"{self.sending_domain}: cusum {self.cusum:.1f}, p0 {self.p0:.2%}"


class SendingSwitch(models.Model):
    """The global kill switch, one row: when paused, no domain sends, whatever its own state.

    Read under the same locks as a domain's ``paused`` (the claim and the
    hand-over), so "pause everything" has the same guarantee as a domain pause.
    """

    name = models.CharField(max_length=16, unique=True, default="global")
    paused = models.BooleanField(default=False)
    paused_reason = models.TextField(blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_by = models.CharField(max_length=150, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "global sending switch"  # one row: "switches" would promise more

    def __str__(self) -> str:
        return f"all sending {'PAUSED' if self.paused else 'running'}"


# --- Consent (issue 18) --------------------------------------------------------------------------
TRANSACTIONAL = "transactional"  # a campaign purpose that needs no consent (receipts, password resets)
DEFAULT_PURPOSE = "marketing"  # always known: a campaign that names no purpose is marketing


class Purpose(models.Model):
    """A named marketing purpose recipients consent to (a newsletter, product offers).

    ``transactional`` and ``marketing`` are built in and need no row.
    """

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class LawfulBasis(models.TextChoices):
    """GDPR article 6(1) bases that apply to direct marketing."""

    CONSENT = "consent", "Consent"
    CONTRACT = "contract", "Contract (soft opt-in of customers)"
    LEGITIMATE_INTEREST = "legitimate_interest", "Legitimate interest"


class ConsentRecord(models.Model):
    """One recipient's consent for one purpose: when, where and on what basis it was given, and its withdrawal.

    Keyed like a suppression by ``address_hash``; an erase blanks ``address`` and
    ``evidence`` and keeps the withdrawal (a withdrawn consent still stops a send).
    """

    address = models.CharField(max_length=320, blank=True, help_text="Lower-cased; empty once erased")
    address_hash = models.CharField(max_length=64, editable=False)
    purpose = models.SlugField(max_length=64)
    lawful_basis = models.CharField(max_length=24, choices=LawfulBasis.choices, default=LawfulBasis.CONSENT)
    source = models.CharField(max_length=200, help_text="Where it was given: a sign-up form, an import, a person")
    evidence = models.JSONField(default=dict, blank=True, help_text="What proves it: form id, double opt-in time, wording shown")
    given_at = models.DateTimeField()
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_source = models.CharField(max_length=200, blank=True, help_text="unsubscribe:<message>, api, admin, mailto")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-given_at"]
        constraints = [models.UniqueConstraint(fields=["address_hash", "purpose"], name="consent_once_per_purpose")]
        indexes = [
            # dispatch.services.retention: withdrawals still holding an address or evidence, oldest first.
            models.Index(
                fields=["withdrawn_at"],
                condition=Q(withdrawn_at__isnull=False) & (~Q(address="") | ~Q(evidence={})),
                name="consent_retention",
            ),
        ]

    def __str__(self) -> str:
        state = "withdrawn" if self.withdrawn_at else "given"
        return f"{self.address or 'erased'}: {self.purpose} ({state})"


# --- The providers' sender rules (issue 18) -------------------------------------------------------


class DomainCheck(models.Model):
    """The last ``domain_check`` of a sending domain: every rule's result, and whether the required ones passed."""

    sending_domain = models.OneToOneField(SendingDomain, on_delete=models.CASCADE, primary_key=True, related_name="sender_check")
    checked_at = models.DateTimeField()
    passed = models.BooleanField(help_text="Every required rule passed")
    results = models.JSONField(default=list, help_text="One per rule: rule, status, required, message, fix")

    def __str__(self) -> str:
        return f"{self.sending_domain}: {'pass' if self.passed else 'FAIL'} at {self.checked_at:%Y-%m-%d %H:%M}"


class BulkSender(models.Model):
    """An organisational domain that once sent more than 5,000 messages to Gmail in a day: Gmail's stricter
    bulk-sender rules apply to it for good."""

    org_domain = models.CharField(max_length=253, unique=True)
    since = models.DateField(help_text="The first day past the threshold")
    messages = models.PositiveIntegerField(help_text="Messages to Gmail that day")

    def __str__(self) -> str:
        return f"{self.org_domain} (bulk since {self.since})"
