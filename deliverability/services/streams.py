"""Streams: one sending domain's mail to one mailbox provider group, paced and paused on what that provider says.

The worker records each batch's answers and calls ``stream_hear`` in the same
transaction. Per provider group of the batch, the replies about *us*
(``bounces/replies.py``) decide:

- rate limiting halves the stream's ``rate_factor`` (at most once per
  ``_SLOW_EVERY``: one storm is one signal, not one per refused message), and
  every later batch with accepted mail and no rate limiting adds
  ``_RECOVER`` back, up to the full rate (AIMD, as TCP paces a link it shares);
- ``_STRIKES`` authentication or blocklist refusals with no accepted mail in
  between pause the stream with the reason and the replies that decided
  ("authentication failing at gmail"); one odd reply never does.

The minute pass (``services/detection.py``) judges each stream's counters
with the anomaly detector too and pauses a stream whose own rates shifted
through ``stream_pause_detected``, with the detector's evidence.

``_pace_providers`` in the worker reads the streams: a paused one sends
nothing, a slowed one its share. A stream is resumed by a person (API, admin),
audited; it starts again at a quarter of its rate at most and recovers as
accepted batches add back (the stream's resume ramp), and the detector
forgets its past (``detector_epoch``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from audit.services import DETECTOR, audit_record
from deliverability.bounces.replies import Action, ReplyAction, reply_action
from deliverability.errors import DeliverabilityError
from deliverability.models import PauseEvidence, ProviderStream, SendingDomain

logger = logging.getLogger("sendplane.streams")

_MIN_FACTOR = 1 / 32  # a stream backs off to 1/32 of its rate at most; below that a pause is the answer
_RECOVER = 0.05  # share of the rate added back per batch with accepted mail and no rate limiting
_SLOW_EVERY = timedelta(seconds=10)  # one halving per window: the replies of one storm arrive together
_STRIKES = 3  # refusals about our authentication or listing, with nothing accepted between, that pause the stream
_REPLIES_KEPT = 3
_RESUME_FACTOR = 0.25  # a resumed stream starts at a quarter of its rate at most: the ramp back is the AIMD's recovery


@dataclass(frozen=True)
class Heard:
    """One answer of a batch: the recipient's provider group, the reply code (250 for accepted) and text."""

    provider: str
    code: int | None
    reply: str


def stream_hear(
    *, domain_id: int, heard: list[Heard], streams: dict[str, ProviderStream] | None = None
) -> list[ProviderStream]:
    """Update each provider group's stream from what this batch heard; returns the streams paused now.

    ``streams``: the domain's streams as the batch's pacing read them (else read here). A batch of accepted mail
    to streams at full rate (the usual case) then costs no query and locks nothing; a change re-reads under lock.
    """
    by_provider: dict[str, list[Heard]] = defaultdict(list)
    for item in heard:
        by_provider[item.provider].append(item)
    if streams is None:
        streams = {s.provider: s for s in ProviderStream.objects.filter(sending_domain_id=domain_id)}
    paused = []
    for provider, items in by_provider.items():
        stream = _hear_one(domain_id, provider, items, streams.get(provider))
        if stream is not None:
            paused.append(stream)
    return paused


def _hear_one(domain_id: int, provider: str, items: list[Heard], seen: ProviderStream | None) -> ProviderStream | None:
    accepted = sum(1 for item in items if item.code is not None and item.code < 300)
    actions = [(reply_action(provider, item.code, item.reply), item) for item in items if item.code != 250]
    slow = any(found is not None and found.action == Action.SLOW_DOWN for found, _ in actions)
    against = [(found, item) for found, item in actions if found is not None and found.action != Action.SLOW_DOWN]
    if not slow and not against and (seen is None or (seen.rate_factor >= 1.0 and seen.strikes == 0)):
        return None  # at full rate with nothing against it: nothing to write, no row to lock
    with transaction.atomic():
        stream, _ = ProviderStream.objects.select_for_update().get_or_create(sending_domain_id=domain_id, provider=provider)
        now = timezone.now()
        if slow and (stream.slowed_at is None or now - stream.slowed_at >= _SLOW_EVERY):
            stream.rate_factor, stream.slowed_at = max(_MIN_FACTOR, stream.rate_factor / 2), now
            logger.info("stream %s slowed to %.0f%% of its rate: rate limited", stream, stream.rate_factor * 100)
        elif accepted and not slow and stream.rate_factor < 1.0:
            stream.rate_factor = min(1.0, stream.rate_factor + _RECOVER)
        stream.strikes = len(against) if accepted else stream.strikes + len(against)
        decided = not stream.paused and stream.strikes >= _STRIKES and bool(against)
        if decided:
            _pause(stream, against, now)
        stream.save()
    return stream if decided else None


def _pause(stream: ProviderStream, against: list[tuple[ReplyAction, Heard]], now: datetime) -> None:
    found = against[-1][0]
    at = stream.provider or "other receivers"
    replies = list(dict.fromkeys(f"{item.code} {item.reply}"[:200] for _, item in reversed(against)))[:_REPLIES_KEPT]
    stream.paused, stream.paused_at, stream.paused_by, stream.replies = True, now, DETECTOR, replies
    stream.paused_reason = f"{found.label} at {at}: {replies[0]}"
    audit_record(
        action="stream.pause", target=stream.sending_domain, actor=DETECTOR, reason=stream.paused_reason,
        data={"provider": stream.provider, "replies": replies, "strikes": stream.strikes},
    )
    logger.warning("paused the stream %s: %s", stream, stream.paused_reason)


def stream_pause_detected(*, stream_id: int, evidence: PauseEvidence, expected_epoch: int) -> bool:
    """Pause the stream on the detector's evidence (saved, audited); False when it was paused already, or resumed
    (itself or its domain) since the detector read it: a decision on data from before a resume is dropped."""
    with transaction.atomic():
        stream = ProviderStream.objects.select_for_update().select_related("sending_domain").filter(pk=stream_id).first()
        if stream is None or stream.paused or stream.detector_epoch + stream.sending_domain.detector_epoch != expected_epoch:
            return False
        evidence.sending_domain, evidence.provider = stream.sending_domain, stream.provider
        evidence.save()
        stream.paused, stream.paused_at, stream.paused_by = True, timezone.now(), DETECTOR
        stream.paused_reason, stream.replies = evidence.summary(), []
        stream.save(update_fields=["paused", "paused_at", "paused_by", "paused_reason", "replies", "updated_at"])
        audit_record(
            action="stream.pause", target=stream.sending_domain, actor=DETECTOR, reason=stream.paused_reason,
            data={"provider": stream.provider, "evidence": evidence.pk},
        )
    logger.warning("paused the stream %s: %s", stream, stream.paused_reason)
    return True


def stream_resume(*, domain: SendingDomain, provider: str, actor: object, reason: str = "") -> ProviderStream:
    """Let the stream send again, ramping back from a quarter of its rate at most; audited. Refused when it is not paused."""
    with transaction.atomic():
        stream = ProviderStream.objects.select_for_update().filter(sending_domain=domain, provider=provider).first()
        if stream is None or not stream.paused:
            raise DeliverabilityError(f"the stream of {domain.domain} to {provider or 'other receivers'} is not paused", field="provider")
        was = {"paused_by": stream.paused_by, "paused_reason": stream.paused_reason}
        stream.paused, stream.paused_reason, stream.paused_at, stream.paused_by, stream.strikes = False, "", None, "", 0
        stream.rate_factor, stream.detector_epoch = min(stream.rate_factor, _RESUME_FACTOR), stream.detector_epoch + 1
        stream.save()
        now = timezone.now()
        PauseEvidence.objects.filter(sending_domain=domain, provider=provider, resumed_at__isnull=True).update(resumed_at=now)
        audit_record(action="stream.resume", target=domain, actor=actor, reason=reason, data={"provider": provider, **was})
    return stream
