"""A real authoritative DNS server on loopback (UDP and TCP, one port), serving the zones a test gives it.

    with DnsServer() as server:
        server.add_zone("acme.com", {
            "@": ["MX 10 aspmx.l.google.com.", 'TXT "v=spf1 include:_spf.google.com ~all"'],
            "_dmarc": ['TXT "v=DMARC1; p=reject"'],
            "s1._domainkey": ['TXT "v=DKIM1; k=rsa; p=MIIB..."'],
            "www": ["CNAME acme.com."],
            "mail": ["3600 A 192.0.2.25", "AAAA 2001:db8::25"],
        })
        server.add_zone("2.0.192.in-addr.arpa", {"25": ["PTR mail.acme.com."]})

Records are zone-file lines without the owner (an optional TTL first; 300
otherwise); each zone gets its SOA (negative answers' TTL: 300) and NS.
Answers are authoritative: the records, or a CNAME (followed within the
served zones), NODATA (NOERROR, the SOA in authority) for a name with other
records or with names below it, NXDOMAIN for a name the zone lacks, REFUSED
for a name outside every zone. A UDP answer that does not fit (512 bytes, or
the query's EDNS size) comes back truncated, so a resolver retries over TCP.

Every query is recorded in ``queries`` (name, type, "udp" or "tcp"), even one
it then ignores. ``drop_all`` or ``drop_names`` make it ignore queries (a
dead or unreachable server); ``delay_seconds`` makes it answer late, each
query on its own thread, as a distant server does.

The ``dns_server`` fixture starts one, points ``SENDPLANE_DNS_RESOLVER`` at
it and empties the provider groups' cache; a test module imports it.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

_CNAME_HOPS = 8


@dataclass(frozen=True)
class Query:
    name: str  # lower case, no final dot
    type: str  # "MX", "TXT", ...
    transport: str  # "udp" or "tcp"


class DnsServer:
    def __init__(self, zones: Mapping[str, Mapping[str, list[str]]] | None = None) -> None:
        self.zones: dict[dns.name.Name, dns.zone.Zone] = {}
        self.queries: list[Query] = []
        self.drop_all = False
        self.drop_names: set[str] = set()
        self.delay_seconds = 0.0
        self._lock = threading.Lock()
        for origin, records in (zones or {}).items():
            self.add_zone(origin, records)
        self._udp, self._tcp = _bind_pair(self)
        self.host, self.port = self._udp.server_address[:2]

    @property
    def address(self) -> str:
        """What SENDPLANE_DNS_RESOLVER takes."""
        return f"{self.host}:{self.port}"

    def add_zone(self, origin: str, records: Mapping[str, list[str]], *, ttl: int = 300) -> None:
        """Serve ``origin`` (replacing a zone of that name) with ``records``: owner ("@", "_dmarc") -> zone-file lines."""
        name = dns.name.from_text(origin)
        lines = [f"$ORIGIN {name}", f"$TTL {ttl}", f"@ SOA ns.{name} hostmaster.{name} 1 3600 600 86400 300", f"@ NS ns.{name}"]
        lines += [f"{owner} {line}" for owner, owner_lines in records.items() for line in owner_lines]
        zone = dns.zone.from_text("\n".join(lines) + "\n", origin=name, relativize=False)
        with self._lock:
            self.zones[name] = zone

    def queries_for(self, name: str, type_: str | None = None) -> list[Query]:
        with self._lock:
            return [q for q in self.queries if q.name == name.rstrip(".").lower() and type_ in (None, q.type)]

    def __enter__(self) -> DnsServer:
        for server in (self._udp, self._tcp):
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()

    # --- answering -------------------------------------------------------------------------

    def answer(self, wire: bytes, transport: str) -> bytes | None:
        """The response to one query's wire form, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not DNS: a real server drops it too
        if not query.question:
            return None
        question = query.question[0]
        qname = question.name.to_text(omit_final_dot=True).lower()
        with self._lock:
            self.queries.append(Query(qname, dns.rdatatype.to_text(question.rdtype), transport))
            dropped = self.drop_all or qname in self.drop_names
        if dropped:
            return None
        if self.delay_seconds:
            time.sleep(self.delay_seconds)  # a distant server; each query is on its own thread
        response = self._response(query, question.name, question.rdtype)
        limit = 65535 if transport == "tcp" else (query.payload if query.edns >= 0 else 512)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            return truncated.to_wire()

    def _response(self, query: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        response = dns.message.make_response(query)
        if query.opcode() != dns.opcode.QUERY or query.question[0].rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        zone = self._zone_of(name)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        response.flags |= dns.flags.AA
        for _ in range(_CNAME_HOPS):
            found = zone.get_rdataset(name, rdtype)
            cname = None if found is not None else zone.get_rdataset(name, dns.rdatatype.CNAME)
            rrset = found or cname
            if rrset is None:
                break
            response.answer.append(_rrset(name, rrset))
            if cname is None or rdtype == dns.rdatatype.CNAME:
                return response
            name = cname[0].target
            zone = self._zone_of(name)
            if zone is None:
                return response  # the target is elsewhere: the resolver follows it
        else:
            return response
        if not _exists(zone, name):
            response.set_rcode(dns.rcode.NXDOMAIN)
        soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
        assert soa is not None and zone.origin is not None
        response.authority.append(_rrset(zone.origin, soa))
        return response

    def _zone_of(self, name: dns.name.Name) -> dns.zone.Zone | None:
        with self._lock:
            served = [origin for origin in self.zones if name.is_subdomain(origin)]
            return self.zones[max(served, key=len)] if served else None


def _rrset(name: dns.name.Name, rdataset: Any) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
    rrset.update(rdataset)
    return rrset


def _exists(zone: dns.zone.Zone, name: dns.name.Name) -> bool:
    """A name with records, or with names below it (an empty non-terminal: _domainkey.acme.com)."""
    return any(owner == name or owner.is_subdomain(name) for owner in zone.nodes)


class _Udp(socketserver.BaseRequestHandler):
    server: Any

    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.dns.answer(data, "udp")
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _Tcp(socketserver.BaseRequestHandler):
    server: Any

    def handle(self) -> None:
        while (length := _read(self.request, 2)) is not None:
            data = _read(self.request, int.from_bytes(length, "big"))
            if data is None:
                return
            reply = self.server.dns.answer(data, "tcp")
            if reply is None:
                return  # dropped: close the connection without a word
            self.request.sendall(len(reply).to_bytes(2, "big") + reply)


def _read(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True  # TIME_WAIT only: Linux never lets two TCP listeners share a port


def _bind_pair(owner: DnsServer) -> tuple[_UdpServer, _TcpServer]:
    """UDP and TCP on one free port, as a resolver expects (it retries a truncated answer on the same port)."""
    for _ in range(50):
        udp = _UdpServer(("127.0.0.1", 0), _Udp)
        try:
            tcp = _TcpServer(("127.0.0.1", udp.server_address[1]), _Tcp)
        except OSError:
            udp.server_close()
            continue
        udp.dns = tcp.dns = owner
        return udp, tcp
    raise RuntimeError("no free port for both UDP and TCP on 127.0.0.1")


@pytest.fixture
def dns_server(settings: Any) -> Iterator[DnsServer]:
    """A DnsServer with no zones yet; SENDPLANE_DNS_RESOLVER points at it, the provider cache starts empty."""
    from deliverability.providers import providers_cache_clear

    with DnsServer() as server:
        settings.SENDPLANE_DNS_RESOLVER = server.address
        settings.SENDPLANE_DNS_TIMEOUT_SECONDS = 2.0
        providers_cache_clear()
        try:
            yield server
        finally:
            for thread in threading.enumerate():  # a lookup still running when its caller gave up would cache afterwards
                if thread.name.startswith("mx-lookup"):
                    thread.join(timeout=10)
            providers_cache_clear()
