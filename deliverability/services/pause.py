"""Pausing and resuming a sending domain: one locked function each, audited, idempotent.

The on-call API and admin, and the anomaly detector, all pause through here.
The worker claims under a lock on the domain row and hands each chunk over
holding it ``FOR KEY SHARE``, so once ``domain_pause`` has committed no new
claim succeeds, and once it returns (``hand_overs_wait``) the chunks that were
mid-hand-over have finished: nothing of that domain reaches SMTP afterwards.

**The detector, without a lock cycle.** ``services/detection.py`` imports this
module, never the reverse (not even lazily). A detector run holds the one
``DetectorState`` row and then locks domain rows (through ``domain_pause``);
a resume locks only its domain row and never touches ``DetectorState``, so the
two can wait for each other in one direction only and cannot deadlock.
Instead of resetting the detector's state, ``domain_resume`` bumps
``SendingDomain.detector_epoch`` in its own transaction; the detector reads
the epochs with the domain ids, forgets every domain whose epoch moved since
its last run, and passes the epoch it read as ``domain_pause(expected_epoch=)``.
That comparison happens under the domain's row lock (a pause that waited for
a resume's lock sees the resumed row), so a decision made on data read before
a resume never re-pauses the resumed domain: the pause is skipped, and the
detector's next run starts that domain cold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import DETECTOR, audit_record
from controlplane.locking import lock_no_key
from deliverability.errors import DeliverabilityError
from deliverability.models import PauseEvidence, SendingDomain, SendingSwitch
from deliverability.services.handover import GLOBAL, hand_overs_wait

logger = logging.getLogger("sendplane.pause")


class ResumeRefused(DeliverabilityError):
    """A detector pause is lifted only with ``force``: someone must have read the evidence."""

    status = 409


@dataclass(frozen=True)
class PauseOutcome:
    domain: SendingDomain
    changed: bool  # False: it already was in the asked state; nothing was written


def domain_pause(
    *,
    domain: SendingDomain,
    reason: str,
    actor: object = None,
    evidence: PauseEvidence | None = None,
    expected_epoch: int | None = None,
) -> PauseOutcome:
    """Pause the domain (a person when ``actor`` is a user, the detector when ``evidence`` is given).

    With ``expected_epoch`` (the detector's), nothing happens unless the domain's
    ``detector_epoch`` still is that value: it was resumed after the detector read its data.
    """
    if not reason.strip():
        raise DeliverabilityError("a reason is required", field="reason")
    by = DETECTOR if evidence is not None else _actor_label(actor)
    with transaction.atomic():
        locked = SendingDomain.objects.select_for_update(**lock_no_key()).get(pk=domain.pk)
        if expected_epoch is not None and locked.detector_epoch != expected_epoch:
            logger.info("not pausing %s: resumed after the detector read its data (%s)", locked.domain, reason.strip())
            return PauseOutcome(locked, changed=False)
        if locked.paused:
            hand_overs_wait(SendingDomain, locked.pk)
            return PauseOutcome(locked, changed=False)
        locked.paused, locked.paused_reason, locked.paused_at, locked.paused_by = True, reason.strip(), timezone.now(), by
        locked.save(update_fields=["paused", "paused_reason", "paused_at", "paused_by"])
        data = {}
        if evidence is not None:
            evidence.sending_domain = locked
            evidence.save()
            data = {"evidence": evidence.pk, "signal": evidence.signal, "observed": evidence.observed, "baseline": evidence.baseline}
        audit_record(action="domain.pause", target=locked, actor=actor, actor_label=by, reason=locked.paused_reason, data=data)
    logger.warning("paused %s by %s: %s", locked.domain, by, locked.paused_reason)
    hand_overs_wait(SendingDomain, locked.pk)
    return PauseOutcome(locked, changed=True)


def domain_resume(
    *, domain: SendingDomain, actor: object, ramp_minutes: int | None = None, force: bool = False, reason: str = "",
    override_minutes: int | None = None,
) -> PauseOutcome:
    """Resume sending, ramping from a tenth of the rate to all of it over ``ramp_minutes``.

    A detector pause needs ``force``. Resuming bumps ``detector_epoch``: the
    detector forgets the domain on its next run and learns it afresh, and a run
    already in progress does not re-pause it on what it read before (module docstring).

    ``override_minutes`` is the other key: the operator overrides the
    detector's pause for that long (with a reason) and the detector is *not*
    reset. It keeps judging and does not pause meanwhile; when the override
    lapses (``override_lapse``) its view returns. The view is of the override's
    time: the detector's evidence restarts when it begins (the baseline stays
    learned), so it pauses again only if the mail sent meanwhile says so.
    """
    ramp = settings.SENDPLANE_RESUME_RAMP_MINUTES if ramp_minutes is None else ramp_minutes
    if ramp < 0:
        raise DeliverabilityError("must be 0 or more", field="ramp_minutes")
    if override_minutes is not None:
        return _override(domain, actor, ramp, override_minutes, reason)
    with transaction.atomic():
        locked = SendingDomain.objects.select_for_update().get(pk=domain.pk)
        if not locked.paused:
            return PauseOutcome(locked, changed=False)
        if locked.paused_by == DETECTOR and not force:
            raise ResumeRefused(
                f"{locked.domain} was paused by the detector ({locked.paused_reason}); read the evidence, then resume with force"
            )
        was = {"paused_by": locked.paused_by, "paused_reason": locked.paused_reason}
        locked.detector_epoch += 1
        locked.override_until = None  # the detector forgets the domain: there is no view of its left to hold off
        _lift(locked, ramp, timezone.now(), "detector_epoch", "override_until")
        audit_record(
            action="domain.resume", target=locked, actor=actor, reason=reason, data={**was, "ramp_minutes": ramp, "force": force}
        )
    return PauseOutcome(locked, changed=True)


def _override(domain: SendingDomain, actor: object, ramp: int, minutes: int, reason: str) -> PauseOutcome:
    longest = settings.SENDPLANE_DETECTOR["OVERRIDE_MAX_MINUTES"]
    if not 1 <= minutes <= longest:
        raise DeliverabilityError(f"must be 1 to {longest} (SENDPLANE_DETECTOR_OVERRIDE_MAX_MINUTES)", field="override_minutes")
    if not reason.strip():
        raise DeliverabilityError("a reason is required to override the detector", field="reason")
    with transaction.atomic():
        locked = SendingDomain.objects.select_for_update().get(pk=domain.pk)
        if not locked.paused or locked.paused_by != DETECTOR:
            raise DeliverabilityError(f"{locked.domain} is not paused by the detector: resume it instead", field="override_minutes")
        now = timezone.now()
        was = {"paused_by": locked.paused_by, "paused_reason": locked.paused_reason}
        locked.override_from, locked.override_until = now, now + timedelta(minutes=minutes)
        _lift(locked, ramp, now, "override_from", "override_until")
        audit_record(
            action="domain.override", target=locked, actor=actor, reason=reason,
            data={**was, "minutes": minutes, "until": locked.override_until.isoformat(), "ramp_minutes": ramp},
        )
    return PauseOutcome(locked, changed=True)


def _lift(locked: SendingDomain, ramp: int, now: datetime, *changed: str) -> None:
    """The pause is lifted (the row locked by the caller): it ramps from now, its open evidence is closed."""
    locked.paused, locked.paused_reason, locked.paused_at, locked.paused_by = False, "", None, ""
    locked.ramp_started_at, locked.ramp_minutes = now, ramp
    locked.save(update_fields=["paused", "paused_reason", "paused_at", "paused_by", "ramp_started_at", "ramp_minutes", *changed])
    PauseEvidence.objects.filter(sending_domain=locked, provider__isnull=True, resumed_at__isnull=True).update(resumed_at=now)


def overridden(domain: SendingDomain, now: datetime | None = None) -> bool:
    """Whether an operator's override holds the detector's pauses off this domain now."""
    return domain.override_until is not None and domain.override_until > (now or timezone.now())


def override_lapse(*, now: datetime) -> dict[int, datetime]:
    """End the overrides past their time (audited); returns {domain id: when it lapsed}: their detector view returns."""
    lapsed = {}
    for domain in SendingDomain.objects.select_for_update().filter(override_until__lte=now):
        until = domain.override_until
        assert until is not None  # the filter
        audit_record(action="domain.override_lapse", target=domain, actor=DETECTOR, data={"until": until.isoformat()})
        SendingDomain.objects.filter(pk=domain.pk).update(override_until=None)
        lapsed[domain.pk] = until
    return lapsed


def ramp_factor(domain: SendingDomain, now: datetime | None = None) -> float:
    """Share of the domain's rate allowed now: a tenth right after a resume, all of it after the ramp."""
    if domain.ramp_started_at is None or domain.ramp_minutes <= 0:
        return 1.0
    elapsed = ((now or timezone.now()) - domain.ramp_started_at).total_seconds() / 60.0
    return min(1.0, max(0.1, elapsed / domain.ramp_minutes))


def _actor_label(actor: object) -> str:
    if isinstance(actor, str):  # a part of the system acting on its own ("dispatch"), as audit_record takes it
        return actor or "system"
    name = getattr(actor, "get_username", None)
    return (name() if callable(name) else "") or "system"


# --- the global kill switch -------------------------------------------------------------


def sending_switch() -> SendingSwitch:
    return SendingSwitch.objects.get_or_create(name=GLOBAL)[0]


def sending_pause_all(*, reason: str, actor: object) -> tuple[SendingSwitch, bool]:
    """Stop every domain at once. Returns (switch, changed); a second call changes nothing."""
    if not reason.strip():
        raise DeliverabilityError("a reason is required", field="reason")
    sending_switch()
    with transaction.atomic():
        switch = SendingSwitch.objects.select_for_update(**lock_no_key()).get(name=GLOBAL)
        changed = not switch.paused
        if changed:
            switch.paused, switch.paused_reason, switch.paused_by = True, reason.strip(), _actor_label(actor)
            switch.paused_at = timezone.now()
            switch.save(update_fields=["paused", "paused_reason", "paused_at", "paused_by"])
            audit_record(action="sending.pause_all", target=switch, actor=actor, reason=switch.paused_reason)
    if changed:
        logger.warning("all sending paused by %s: %s", switch.paused_by, switch.paused_reason)
    hand_overs_wait(SendingSwitch, switch.pk)
    return switch, changed


def sending_resume_all(*, actor: object, reason: str = "") -> tuple[SendingSwitch, bool]:
    """Lift the global switch; domains paused on their own stay paused."""
    sending_switch()
    with transaction.atomic():
        switch = SendingSwitch.objects.select_for_update().get(name=GLOBAL)
        if not switch.paused:
            return switch, False
        was = {"paused_by": switch.paused_by, "paused_reason": switch.paused_reason}
        switch.paused, switch.paused_reason, switch.paused_at, switch.paused_by = False, "", None, ""
        switch.save(update_fields=["paused", "paused_reason", "paused_at", "paused_by"])
        audit_record(action="sending.resume_all", target=switch, actor=actor, reason=reason, data=was)
    return switch, True
