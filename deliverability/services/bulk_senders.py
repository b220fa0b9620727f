"""Gmail's bulk senders: an organisational domain that once sent 5,000 messages to Gmail in a day, for good.

Gmail's sender guidelines (February 2024) hold a domain that has sent "close
to 5,000 messages or more" to personal Gmail accounts in a day to stricter
rules (SPF and DKIM and DMARC, aligned; one-click unsubscribe), and never
lets it go back. Sendplane counts per organisational domain (the sending
domains ``news.acme.org`` and ``mail.acme.org`` are both ``acme.org``, as
Gmail counts), per UTC day, the ``sent`` of the ``gmail`` stream's
per-minute counters (``DomainMinute``: final attempts, accepted or refused).
The hourly beat task ``deliverability.tasks.bulk_senders`` records a
``BulkSender`` the first day a count reaches ``SENDPLANE_BULK_SENDER_DAILY``;
rows are never removed. ``sender_rules`` reads them.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from functools import cache

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from publicsuffixlist import PublicSuffixList

from deliverability.models import BulkSender, DomainMinute

GMAIL = "gmail"  # the provider group of DomainMinute rows that went to Gmail (deliverability/providers.py)


@cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list the package ships: no network, ever


def organisational_domain(domain: str) -> str:
    """The registered domain under its public suffix (RFC 7489 section 3.2): ``mail.acme.co.uk`` -> ``acme.co.uk``.

    A name that is itself a public suffix (or has no dot) is its own.
    """
    name = domain.lower().rstrip(".")
    return _suffixes().privatesuffix(name) or name


def is_bulk_sender(org_domain: str) -> bool:
    return BulkSender.objects.filter(org_domain=org_domain).exists()


def gmail_daily_counts(*, first: dt.date, last: dt.date) -> dict[tuple[dt.date, str], int]:
    """Messages to Gmail per (UTC day, organisational domain), days ``first`` to ``last`` included."""
    start = dt.datetime.combine(first, dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    rows = (
        DomainMinute.objects.filter(provider=GMAIL, minute__gte=start, minute__lt=end)
        .annotate(day=TruncDate("minute", tzinfo=dt.UTC))
        .values("day", "sending_domain__domain")
        .annotate(sent=Sum("sent"))
    )
    counts: dict[tuple[dt.date, str], int] = defaultdict(int)
    for row in rows:
        counts[(row["day"], organisational_domain(row["sending_domain__domain"]))] += row["sent"] or 0
    return dict(counts)


def bulk_senders_record(*, today: dt.date | None = None, days: int = 2) -> list[BulkSender]:
    """Record the organisational domains whose mail to Gmail reached the threshold on one of the last ``days`` days.

    Idempotent: a domain already recorded keeps its first day. Days are taken oldest first, so ``since`` is the
    earliest day seen. Yesterday is looked at too: the hourly run at 00:30 finishes counting the day before.
    """
    last = today or timezone.now().date()
    threshold: int = settings.SENDPLANE_BULK_SENDER_DAILY
    counts = gmail_daily_counts(first=last - dt.timedelta(days=days - 1), last=last)
    recorded = []
    for (day, org_domain), sent in sorted(counts.items()):
        if sent >= threshold and not is_bulk_sender(org_domain):
            row = _record(org_domain, day, sent)
            if row is not None:
                recorded.append(row)
    return recorded


def _record(org_domain: str, day: dt.date, sent: int) -> BulkSender | None:
    """The new row, or None when another run recorded it meanwhile (the unique org_domain decides)."""
    try:
        with transaction.atomic():
            return BulkSender.objects.create(org_domain=org_domain, since=day, messages=sent)
    except IntegrityError:
        return None
