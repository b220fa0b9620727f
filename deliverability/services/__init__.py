"""Writes for deliverability: domains here; token buckets (tokens.py), pause, suppression, feedback
events and per-minute counters in their own modules, re-exported below."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import date
from typing import Any

from django.db import IntegrityError, transaction

from audit.services import audit_record
from controlplane.addresses import own_address_problem
from controlplane.locking import lock_no_key
from deliverability.dkim_signing import DkimCheck, dkim_settings_check
from deliverability.errors import DeliverabilityError
from deliverability.models import SenderRules, SendingDomain
from deliverability.providers import PROVIDER_DOMAINS

logger = logging.getLogger("sendplane.deliverability")


def domain_create(
    *, domain: str, default_sender: str, rate_per_second: float = 10.0, burst: int = 20, actor: object = None, **options: Any
) -> SendingDomain:
    """A new sending domain, validated setting by setting, its DKIM key against DNS (``dkim_settings_check``), audited.

    The row comes back with ``dkim_dns`` set when DKIM was checked: what DNS
    said ("matches ...", or "unchecked: <why>" when it did not answer).
    """
    values = {"default_sender": default_sender, "rate_per_second": rate_per_second, "burst": burst, **options}
    problem = own_address_problem(f"postmaster@{domain}")
    if problem:
        raise DeliverabilityError(f"{domain!r} is not a domain name ({problem.removeprefix('invalid address: ')})", field="domain")
    _check_domain_settings(domain, values)
    dkim = _check_dkim(domain, values.get("dkim_selector", ""), values.get("dkim_key_path", ""))
    try:
        with transaction.atomic():
            row = SendingDomain.objects.create(domain=domain.lower(), **values)
            audit_record(action="domain.create", target=row, actor=actor, data=_as_json(values) | _dkim_note(dkim))
    except IntegrityError:
        raise DeliverabilityError(f"{domain} already exists", field="domain") from None
    return _noted(row, dkim)


def domain_update(*, domain: SendingDomain, actor: object, reason: str = "", **changes: Any) -> SendingDomain:
    """Change a domain's settings (pace, warm-up, DKIM, sender, SMTP sessions), audited with the changed fields before and after.

    Validated like ``domain_create``; values it already has change nothing and write no entry. A change of
    selector or key is checked against DNS before the row is locked (the lookup may take seconds), and
    refused if the other half changed meanwhile.
    """
    _check_domain_settings(domain.domain, changes)
    current = SendingDomain.objects.get(pk=domain.pk)
    dkim_pair = _dkim_pair(current, changes)
    dkim = _check_dkim(current.domain, *dkim_pair) if dkim_pair != _dkim_pair(current, {}) else None
    with transaction.atomic():
        # NO KEY UPDATE: a settings change need not wait for chunks being handed over (handover.hand_overs_wait).
        locked = SendingDomain.objects.select_for_update(**lock_no_key()).get(pk=domain.pk)
        if dkim is not None and _dkim_pair(locked, changes) != dkim_pair:
            raise DeliverabilityError("changed by someone else meanwhile; try again", field="dkim_key_path")
        after = {name: value for name, value in changes.items() if getattr(locked, name) != value}
        if after:
            before = {name: getattr(locked, name) for name in after}
            for name, value in after.items():
                setattr(locked, name, value)
            locked.save(update_fields=list(after))
            data = {"before": _as_json(before), "after": _as_json(after)} | _dkim_note(dkim)
            audit_record(action="domain.update", target=locked, actor=actor, reason=reason, data=data)
    return _noted(locked, dkim)


def _dkim_pair(row: SendingDomain, changes: dict[str, Any]) -> tuple[str, str]:
    """(selector, key path) once ``changes`` apply to ``row``."""
    return changes.get("dkim_selector", row.dkim_selector), changes.get("dkim_key_path", row.dkim_key_path)


def _check_dkim(domain: str, selector: str, key_path: str) -> DkimCheck | None:
    """None when there is no DKIM (both empty); else what DNS said, or DeliverabilityError naming the field."""
    if not selector and not key_path:
        return None
    found = dkim_settings_check(domain=domain.lower(), selector=selector, key_path=key_path)
    if found.problem:
        raise DeliverabilityError(found.problem, field=found.field)
    if found.dns.startswith("unchecked"):
        logger.warning("DKIM of %s accepted without its DNS record: %s", domain, found.dns)
    return found


def _dkim_note(dkim: DkimCheck | None) -> dict[str, str]:
    return {"dkim_dns": dkim.dns} if dkim is not None else {}


def _noted(row: SendingDomain, dkim: DkimCheck | None) -> SendingDomain:
    row.dkim_dns = dkim.dns if dkim is not None else ""  # type: ignore[attr-defined]  # for the caller only, not a column
    return row


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf  # JSON's 1e400 is inf


_INT_MAX = 2_147_483_647  # PostgreSQL integer: burst and the SMTP limits


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= _INT_MAX


def _text(limit: int) -> Callable[[Any, str], str | None]:
    return lambda value, _: None if isinstance(value, str) and len(value) <= limit else f"must be text of at most {limit} characters"


# One check per setting: (value, domain name) -> the problem, or None.
_DOMAIN_SETTINGS: dict[str, Callable[[Any, str], str | None]] = {
    "default_sender": lambda v, d: (
        None if isinstance(v, str) and v.rpartition("@")[2].lower() == d.lower() and not own_address_problem(v)
        else f"must be an address at {d}"
    ),
    "rate_per_second": lambda v, _: None if _positive(v) else "must be positive",
    "burst": lambda v, _: None if _whole(v) else f"must be a whole number from 1 to {_INT_MAX}",
    "dkim_selector": _text(63),
    "dkim_key_path": _text(500),
    "warmup_schedule": lambda v, _: None if isinstance(v, list) and all(map(_positive, v)) else "must be a list of positive rates",
    "warmup_started_on": lambda v, _: None if v is None or isinstance(v, date) else "must be a date or null",
    "warmup_daily_caps": lambda v, _: (
        None if isinstance(v, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in v)
        else "must be a list of whole numbers of messages a day, each at least 1"
    ),
    "provider_rates": lambda v, _: (
        None if isinstance(v, dict) and set(v) <= PROVIDER_DOMAINS.keys() and all(map(_positive, v.values()))
        else f"must map provider groups ({', '.join(PROVIDER_DOMAINS)}) to positive rates"
    ),
    "smtp_connections": lambda v, _: _at_least_one_or_none(v),
    "smtp_deliveries_per_connection": lambda v, _: _at_least_one_or_none(v),
    "consent_required": lambda v, _: None if isinstance(v, bool) else "must be true or false",
    "sender_rules": lambda v, _: None if v in SenderRules.values else f"must be one of {', '.join(SenderRules.values)}",
}


def _at_least_one_or_none(value: Any) -> str | None:
    return None if value is None or _whole(value) else f"must be a whole number from 1 to {_INT_MAX}, or null (the relay's limit)"


def _check_domain_settings(domain: str, values: dict[str, Any]) -> None:
    for name, value in values.items():
        check = _DOMAIN_SETTINGS.get(name)
        problem = check(value, domain) if check else "is not a setting of a sending domain"
        if problem:
            raise DeliverabilityError(problem, field=name)


def _as_json(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value.isoformat() if isinstance(value, date) else value for name, value in values.items()}


def domain_rate(domain: SendingDomain) -> float:
    """Messages per second now: the configured rate (ramping up after a resume), capped by the warm-up step's rate."""
    rate = domain.rate_per_second * ramp_factor(domain)
    schedule = domain.warmup_schedule or []
    if not schedule or domain.warmup_started_on is None:
        return rate
    return min(rate, float(schedule[min(domain.warmup_step, len(schedule) - 1)]))


# Re-exported: callers import every deliverability write from ``deliverability.services``.
from controlplane.addresses import address_hash  # noqa: E402
from deliverability.services.counters import counters_add, counters_add_streams  # noqa: E402
from deliverability.services.feedback import Feedback, event_record  # noqa: E402
from deliverability.services.pause import (  # noqa: E402
    PauseOutcome,
    ResumeRefused,
    domain_pause,
    domain_resume,
    ramp_factor,
    sending_pause_all,
    sending_resume_all,
    sending_switch,
)
from deliverability.services.suppression import (  # noqa: E402
    address_erase,
    suppression_add,
    suppression_remove,
)
from deliverability.services.tokens import (  # noqa: E402
    Reservation,
    token_bucket_peek,
    token_bucket_refund,
    token_bucket_release,
    token_bucket_reserve,
    token_bucket_spend,
    token_bucket_take,
)

__all__ = [
    "DeliverabilityError", "Feedback", "address_erase", "address_hash", "counters_add",
    "counters_add_streams", "domain_create", "domain_rate", "domain_update",
    "PauseOutcome", "ResumeRefused", "domain_pause", "domain_resume", "ramp_factor", "sending_pause_all",
    "sending_resume_all", "sending_switch", "event_record", "suppression_add", "suppression_remove", "Reservation",
    "token_bucket_peek", "token_bucket_refund", "token_bucket_release", "token_bucket_reserve", "token_bucket_spend", "token_bucket_take",
]
