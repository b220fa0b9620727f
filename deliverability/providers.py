"""Mailbox provider groups, so one provider's limits pace only its own stream."""

from __future__ import annotations

# Domains that share one provider's infrastructure (and its rate limits).
PROVIDER_DOMAINS = {
    "gmail": {"gmail.com", "googlemail.com"},
    "microsoft": {"outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk", "outlook.fr", "live.co.uk"},
    "yahoo": {"yahoo.com", "ymail.com", "rocketmail.com", "yahoo.co.uk", "yahoo.fr", "aol.com"},
    "apple": {"icloud.com", "me.com", "mac.com"},
}
_BY_DOMAIN = {domain: group for group, domains in PROVIDER_DOMAINS.items() for domain in domains}


def provider_of(address: str) -> str:
    """The provider group of an address, or "" for everyone else."""
    return _BY_DOMAIN.get(address.rpartition("@")[2].lower(), "")
