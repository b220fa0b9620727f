"""Receivers of other apps' signals: django-anymail's tracking events (ESP webhooks)."""

from __future__ import annotations

from typing import Any

from anymail.signals import AnymailTrackingEvent, tracking
from django.dispatch import receiver

from dispatch.services.webhooks import webhook_event_ingest


@receiver(tracking, dispatch_uid="dispatch.webhook_event_ingest")
def tracking_received(sender: Any, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any) -> None:
    # Exceptions propagate on purpose: anymail's view answers 500 and the ESP retries.
    webhook_event_ingest(esp_name=esp_name, event=event)
