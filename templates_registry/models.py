"""Templates, their A/B variants, and each variant's immutable versions."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models

from templates_registry.rendering import VersionContent


class Template(models.Model):
    """A message a campaign sends; its variants are the alternatives an A/B test picks from."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # A version scoring at or above this (SpamAssassin points) is never approvable.
    spam_threshold = models.DecimalField(max_digits=5, decimal_places=2, default=5.0)
    # Four-eyes approval: the creator of a version (a person, or an AI generator's token user) cannot approve it.
    four_eyes = models.BooleanField(
        default=True, help_text="The creator of a version cannot approve it; another person must (services.version_approvable)."
    )
    # Marketing mail must carry Sendplane's signed unsubscribe link (the ``unsubscribe_url`` variable);
    # transactional mail (receipts, password resets) may go without a visible one.
    kind = models.CharField(
        max_length=16, choices=[("marketing", "Marketing"), ("transactional", "Transactional")], default="marketing",
        help_text="Marketing templates must link {{ unsubscribe_url }}; only transactional campaigns may use a transactional one",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class Variant(models.Model):
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="variants")
    slug = models.SlugField(max_length=100)
    # Relative share of recipients in an A/B test; 0 takes a variant out of rotation.
    weight = models.PositiveIntegerField(default=1, validators=[MaxValueValidator(10_000)])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["template_id", "slug"]
        constraints = [models.UniqueConstraint(fields=["template", "slug"], name="variant_slug_unique_per_template")]

    def __str__(self) -> str:
        return f"{self.template.slug}/{self.slug}"


class VersionStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SCORED = "scored", "Scored"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    RETIRED = "retired", "Retired"


class Origin(models.TextChoices):
    HUMAN = "human", "Human"
    AI = "ai", "AI generator"


class ImmutableVersionError(RuntimeError):
    """A version's content never changes after it is written; make a new version."""


class VariantVersion(models.Model):
    """One immutable revision of a variant. Only status fields ever change."""

    MUTABLE_FIELDS = frozenset({"status", "status_changed_at", "approved_by", "approved_at"})

    variant = models.ForeignKey(Variant, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    mjml_body = models.TextField()
    subject = models.CharField(max_length=998)  # RFC 5322 line limit
    preheader = models.CharField(max_length=500, blank=True)
    text_body = models.TextField(blank=True)
    sender_name = models.CharField(max_length=200, blank=True)
    # Declared variables, each with a sample value used for previews and scoring.
    variables = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=16, choices=VersionStatus.choices, default=VersionStatus.DRAFT)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.HUMAN)
    generator = models.CharField(max_length=200, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    prompt = models.TextField(blank=True)
    prompt_hash = models.CharField(max_length=64, blank=True)
    generation_params = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["variant_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["variant", "number"], name="version_number_unique_per_variant"),
            models.CheckConstraint(condition=models.Q(number__gte=1), name="version_number_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.variant} v{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        if self.pk is not None and not self._state.adding:
            if update_fields is None or not set(update_fields) <= self.MUTABLE_FIELDS:
                raise ImmutableVersionError(f"{self} is immutable; create a new version instead")
        super().save(*args, **kwargs)

    def content(self) -> VersionContent:
        return VersionContent(
            mjml_body=self.mjml_body,
            subject=self.subject,
            sender_name=self.sender_name,
            preheader=self.preheader,
            text_body=self.text_body,
            variables=self.variables,
        )



class AssessmentState(models.TextChoices):
    PENDING = "pending", "Waiting to be scored"
    SCORED = "scored", "Scored"
    NOT_SCORED = "not_scored", "Not scored (spamd unavailable)"


class VersionAssessment(models.Model):
    """A version's sandbox result: pre-send checks and its spam score, what the approval gate reads.

    Scores are cached by content hash: a version identical to one already
    scored copies its result instead of asking spamd again.
    """

    version = models.OneToOneField(VariantVersion, on_delete=models.CASCADE, related_name="assessment")
    content_hash = models.CharField(max_length=64, db_index=True)
    state = models.CharField(max_length=12, choices=AssessmentState.choices, default=AssessmentState.PENDING)
    checks = models.JSONField(default=list, help_text="Pre-send checks: name, passed, blocking, message")
    score = models.FloatField(null=True, blank=True)
    spamd_threshold = models.FloatField(null=True, blank=True)
    rules = models.JSONField(default=list, help_text="SpamAssassin rules hit: name, points, description")
    spamd_version = models.CharField(max_length=40, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    from_cache = models.BooleanField(default=False)
    not_scored_reason = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    scored_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # deliverability.services.assessments_due: not scored yet, retry time passed.
            models.Index(fields=["next_attempt_at"], condition=models.Q(state="not_scored"), name="assessment_retry"),
        ]

    def __str__(self) -> str:
        return f"{self.version}: {self.state} {self.score}"

    @property
    def blocking_failures(self) -> list[dict]:
        return [c for c in self.checks if c.get("blocking") and not c.get("passed")]
