"""Reads for deliverability."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q

from deliverability.models import SendingDomain, Suppression


def suppressed_among(*, addresses: Iterable[str], sending_domain: SendingDomain) -> set[str]:
    """Which of these (lower-cased) addresses are suppressed for this domain or globally."""
    wanted = {a.lower() for a in addresses}
    found: set[str] = set()
    chunk: list[str] = []
    for address in wanted:
        chunk.append(address)
        if len(chunk) == 1000:
            found |= _suppressed(chunk, sending_domain)
            chunk = []
    return found | (_suppressed(chunk, sending_domain) if chunk else set())


def _suppressed(addresses: list[str], sending_domain: SendingDomain) -> set[str]:
    scope = Q(sending_domain__isnull=True) | Q(sending_domain=sending_domain)
    return set(Suppression.objects.filter(scope, address__in=addresses).values_list("address", flat=True))
