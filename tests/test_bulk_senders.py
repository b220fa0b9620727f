"""Gmail's bulk senders (deliverability/services/bulk_senders.py): mail to Gmail counted per organisational domain and UTC
day; the first day at the threshold is recorded for good, and the stricter sender rules then apply."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from deliverability.models import BulkSender, DomainMinute, SendingDomain
from deliverability.services.bulk_senders import bulk_senders_record, organisational_domain
from deliverability.tasks import bulk_senders

pytestmark = pytest.mark.django_db

DAY = dt.date(2026, 3, 2)


def domain(name: str) -> SendingDomain:
    return SendingDomain.objects.create(domain=name, default_sender=f"hello@{name}")


def sent(sending_domain: SendingDomain, count: int, *, day: dt.date = DAY, hour: int = 12, provider: str = "gmail") -> None:
    minute = dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)
    DomainMinute.objects.create(sending_domain=sending_domain, provider=provider, minute=minute, sent=count)


def test_the_organisational_domain_comes_from_the_public_suffix_list() -> None:
    assert organisational_domain("news.mail.acme.co.uk") == "acme.co.uk"
    assert organisational_domain("News.Acme-Shop.com.") == "acme-shop.com"
    assert organisational_domain("co.uk") == "co.uk"


def test_subdomains_of_one_organisation_add_up_to_the_threshold(settings: Any) -> None:
    settings.SENDPLANE_BULK_SENDER_DAILY = 5000
    sent(domain("news.acme-shop.com"), 3000, hour=1)
    sent(domain("mail.acme-shop.com"), 2000, hour=23)
    recorded = bulk_senders_record(today=DAY)
    assert [(row.org_domain, row.since, row.messages) for row in recorded] == [("acme-shop.com", DAY, 5000)]


def test_below_the_threshold_other_providers_and_other_days_do_not_count(settings: Any) -> None:
    settings.SENDPLANE_BULK_SENDER_DAILY = 5000
    news = domain("news.acme-shop.com")
    sent(news, 4999)
    sent(news, 4000, provider="microsoft")
    sent(news, 4000, provider="")
    sent(news, 4000, day=DAY - dt.timedelta(days=1))
    assert bulk_senders_record(today=DAY) == []
    assert not BulkSender.objects.exists()


def test_the_first_day_is_kept_for_good_and_a_second_run_changes_nothing(settings: Any) -> None:
    settings.SENDPLANE_BULK_SENDER_DAILY = 100
    news = domain("news.acme-shop.com")
    sent(news, 150, day=DAY - dt.timedelta(days=1))
    sent(news, 900)
    assert [row.since for row in bulk_senders_record(today=DAY)] == [DAY - dt.timedelta(days=1)]
    assert bulk_senders_record(today=DAY) == []
    DomainMinute.objects.all().delete()  # quiet days after: still a bulk sender
    assert bulk_senders_record(today=DAY + dt.timedelta(days=5)) == []
    assert BulkSender.objects.get().messages == 150


def test_the_hourly_task_records_today(settings: Any) -> None:
    settings.SENDPLANE_BULK_SENDER_DAILY = 10
    today = dt.datetime.now(dt.UTC).date()
    sent(domain("news.other-brand.org"), 10, day=today, hour=0)
    assert bulk_senders() == ["other-brand.org"]
    assert bulk_senders() == []
    assert "bulk-senders" in settings.CELERY_BEAT_SCHEDULE


def test_crossing_the_threshold_makes_the_stricter_rules_required(settings: Any) -> None:
    from deliverability.services.sender_rules import domain_check

    settings.SENDPLANE_BULK_SENDER_DAILY = 10
    news = domain("news.acme-shop.com")  # no DKIM: allowed of a small sender, not of a bulk one
    before = domain_check(news)
    assert not next(r for r in before.results if r.rule == "dkim").required and not before.bulk_sender
    sent(news, 10, day=dt.datetime.now(dt.UTC).date())
    bulk_senders()
    after = domain_check(news)
    assert after.bulk_sender
    assert {r.rule for r in after.results if r.required} == {
        "spf",
        "spf_lookups",
        "dkim",
        "spf_or_dkim",
        "dmarc",
        "alignment",
        "reverse_dns",
        "unsubscribe",
    } - {"reverse_dns"}  # SENDPLANE_RELAY_IPS is unset here: the relay's reverse DNS cannot be checked, so is not required
    assert "dkim" in {r.rule for r in after.failing()}
