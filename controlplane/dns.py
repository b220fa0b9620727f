"""The DNS lookups Sendplane makes itself, through one resolver built from one setting.

Provider groups read recipient domains' MX (``deliverability/providers.py``);
the domain checks read SPF, DKIM and DMARC records (issue 18). Both ask
``dns_resolver()``: the system resolver, a name server of the operator's
(``SENDPLANE_DNS_RESOLVER``: an IP address with an optional port, so tests
point it at a server on loopback), or none at all (``off``), with a total time
per lookup of ``SENDPLANE_DNS_TIMEOUT_SECONDS``. dnspython is used rather
than ``socket.getaddrinfo``: the C library answers A/AAAA only, never MX or
TXT, and gives no timeout and no TTL.
"""

from __future__ import annotations

import ipaddress

import dns.resolver
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

OFF = "off"
_PORT = 53


def dns_resolver_setting(value: str) -> str:
    """``value`` if it is a valid ``SENDPLANE_DNS_RESOLVER``, else ImproperlyConfigured in one line naming it."""
    name_server(value)
    return value


def name_server(value: str) -> tuple[str, int] | None:
    """(IP address, port) of the configured name server; None for the system resolver (empty) or ``off``.

    Only an address, never a host name: finding a name server by its name
    would need a resolver first, and would fail at the first lookup rather
    than at start-up.
    """
    text = value.strip()
    if text == "" or text.lower() == OFF:
        return None
    host, port = _split(text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise _malformed(value) from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _malformed(value)
    return str(address), int(port)


def _split(text: str) -> tuple[str, str]:
    if text.startswith("["):  # [::1]:5353
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _malformed(text)
        return host, rest[1:] or str(_PORT)
    if text.count(":") == 1:  # 127.0.0.1:5353
        host, _, port = text.partition(":")
        return host, port
    return text, str(_PORT)  # 127.0.0.1, or an IPv6 address without a port


def _malformed(value: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        "SENDPLANE_DNS_RESOLVER must be empty (the system resolver), off, or a name server's IP address with an "
        f"optional port (127.0.0.1:5353, [::1]:53), got {value!r}"
    )


def dns_resolver() -> dns.resolver.Resolver | None:
    """A resolver as configured, or None when ``SENDPLANE_DNS_RESOLVER`` is ``off``: then make no lookup at all.

    A new one each call (reading ``/etc/resolv.conf`` for the system's), so a
    caller may adjust its copy; it is safe to share between threads as is.
    Its ``lifetime`` bounds one lookup, retries included. dnspython's own
    cache stays off: callers cache what they derive, for as long as suits them.
    """
    value: str = settings.SENDPLANE_DNS_RESOLVER
    if value.strip().lower() == OFF:
        return None
    server = name_server(value)
    resolver = dns.resolver.Resolver(configure=server is None)
    if server is not None:
        resolver.nameservers = [server[0]]
        resolver.port = server[1]
    seconds: float = settings.SENDPLANE_DNS_TIMEOUT_SECONDS
    resolver.lifetime = seconds
    resolver.timeout = seconds / 2  # a lost UDP answer gets a second try within the lifetime
    return resolver
