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

