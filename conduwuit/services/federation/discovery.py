"""Finding another server: the spec's "Resolving server names", a DNS cache, the denylist.

:meth:`Discovery.resolve` turns a server name into a :class:`Destination`: the
addresses to connect to, the port, the ``Host`` header and the name the TLS
certificate must carry (sent as SNI; ``None`` for IP literals, which get no SNI).
The order is the spec's: IP literal; hostname with an explicit port;
``/.well-known/matrix/server`` (cached per its ``Cache-Control``, at most 48 h,
failures for an hour); SRV ``_matrix-fed._tcp`` then the deprecated ``_matrix._tcp``;
else the hostname's addresses on port 8448.

DNS goes through dnspython's async resolver, which runs on Trio natively (no
thread per lookup, no blocking ``getaddrinfo``), behind :class:`DnsCache`, which
keeps answers at least ``dns_min_ttl`` (negative answers ``dns_min_ttl_nxdomain``)
and at most ``dns_cache_entries`` of them. Every address found is checked against
``ip_range_denylist`` before anything connects to it, including well-known fetches
and their redirects, which is why those are made to resolved addresses too.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
import httpx
import orjson
import trio

from conduwuit.protocol.ids import is_valid_server_name

log = logging.getLogger(__name__)

DEFAULT_PORT = 8448
WELL_KNOWN_MAX_CHARS = 10_000  # a longer answer is broken (conduwuit and Synapse alike)
WELL_KNOWN_DEFAULT_TTL = 24 * 3600.0  # spec: "the recommended sensible default"
WELL_KNOWN_MAX_TTL = 48 * 3600.0  # spec: "a maximum cache time ... 48 hours"
WELL_KNOWN_MIN_TTL = 5 * 60.0  # so a no-cache answer does not mean a fetch per request
WELL_KNOWN_ERROR_TTL = 3600.0  # spec: "errors are recommended to be cached for up to an hour"
MAX_REDIRECTS = 5

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DiscoveryError(Exception):
    """The server name cannot be resolved to an address we may connect to."""


# -- server names ------------------------------------------------------------------------------


def split_host_port(name: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6]:port`` -> (host without brackets, port or None)."""
    if name.startswith("["):
        end = name.index("]")
        host, rest = name[1:end], name[end + 1 :]
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, colon, port = name.rpartition(":")
    if colon and port.isdigit():
        return host, int(port)
    return name, None


def ip_literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def url_host(address: str) -> str:
    """An address as it goes into a URL: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


@attrs.frozen
class Destination:
    """Where and how to reach a server."""

    server_name: str
    addresses: tuple[str, ...]
    port: int
    host_header: str
    tls_name: str | None  # SNI and certificate name; None for IP literals (no SNI)

    def base_url(self, address: str) -> str:
        return f"https://{url_host(address)}:{self.port}"


# -- DNS --------------------------------------------------------------------------------------


@attrs.frozen
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


@attrs.frozen
class DnsAnswer:
    """Records of one type for one name; empty for NXDOMAIN / no such records."""

    records: tuple[Any, ...]  # str addresses for A/AAAA, SrvRecord for SRV
    ttl: float


class DnsFailure(Exception):
    """The lookup itself failed (timeout, no nameserver answered); not cached."""


class DnsBackend(Protocol):
    async def query(self, name: str, rdtype: str) -> DnsAnswer: ...


class Resolver(Protocol):
    """What discovery needs from DNS; :class:`DnsCache` in production, fakes in tests."""

    async def srv(self, name: str) -> list[SrvRecord]: ...

    async def addresses(self, host: str) -> list[str]: ...


@attrs.define
class DnspythonBackend:
    """Queries through dnspython's async resolver (Trio-native), using /etc/resolv.conf."""

    timeout: float
    attempts: int
    tcp_fallback: bool
    tcp_only: bool
    # Tests point these at a DNS server on loopback; None reads /etc/resolv.conf.
    nameservers: list[str] | None = None
    port: int = 53
    _resolver: Any = None

    def _get(self) -> Any:
        if self._resolver is None:
            import dns.asyncresolver
            import dns.resolver

            if self.nameservers is not None:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = list(self.nameservers)
                resolver.port = self.port
            else:
                try:
                    resolver = dns.asyncresolver.Resolver(configure=True)
                except dns.resolver.NoResolverConfiguration:
                    log.warning("no DNS configuration (/etc/resolv.conf): federation by name "
                                "cannot work")
                    resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.timeout = self.timeout
            resolver.lifetime = self.timeout
            self._resolver = resolver
        return self._resolver

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        import dns.exception
        import dns.resolver

        resolver = self._get()
        last: Exception | None = None
        for _ in range(max(1, self.attempts)):
            for tcp in self._transports():
                try:
                    answer = await resolver.resolve(name, rdtype, tcp=tcp, search=False)
                except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                    # Negative answers live dns_min_ttl_nxdomain (days), far past any SOA TTL.
                    return DnsAnswer((), 0.0)
                except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
                    last = exc
                    continue
                return DnsAnswer(_records(answer, rdtype), float(answer.rrset.ttl))
        raise DnsFailure(f"DNS {rdtype} lookup of {name} failed: {last}")

    def _transports(self) -> Sequence[bool]:
        if self.tcp_only:
            return (True,)
        # dnspython already retries truncated UDP answers over TCP; this covers UDP
        # being lost altogether (firewalls, containers).
        return (False, True) if self.tcp_fallback else (False,)


def _records(answer: Any, rdtype: str) -> tuple[Any, ...]:
    if rdtype == "SRV":
        return tuple(SrvRecord(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True))
                     for r in answer)
    return tuple(r.address for r in answer)


@attrs.define
class DnsCache:
    """An LRU cache of DNS answers with minimum lifetimes, in front of a backend."""

    backend: DnsBackend
    max_entries: int = 32768
    min_ttl: float = 10800.0
    min_ttl_nxdomain: float = 259200.0
    # 1 A only, 2 AAAA only, 3 both, 4 AAAA then A, 5 A then AAAA (ip_lookup_strategy)
    ip_lookup_strategy: int = 5
    clock: Callable[[], float] = trio.current_time
    _entries: OrderedDict[tuple[str, str], tuple[float, DnsAnswer]] = attrs.field(
        factory=OrderedDict
    )

    async def lookup(self, name: str, rdtype: str) -> DnsAnswer:
        key = (name.lower().rstrip("."), rdtype)
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None:
            if hit[0] > now:
                self._entries.move_to_end(key)
                return hit[1]
            del self._entries[key]
        answer = await self.backend.query(key[0], rdtype)
        floor = self.min_ttl if answer.records else self.min_ttl_nxdomain
        if self.max_entries > 0:
            self._entries[key] = (now + max(answer.ttl, floor), answer)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return answer

    def clear(self) -> None:
        self._entries.clear()

    async def srv(self, name: str) -> list[SrvRecord]:
        records = [r for r in (await self.lookup(name, "SRV")).records if isinstance(r, SrvRecord)]
        return sorted(records, key=lambda r: (r.priority, -r.weight))

    async def addresses(self, host: str) -> list[str]:
        order = {1: ("A",), 2: ("AAAA",), 3: ("A", "AAAA"), 4: ("AAAA", "A"),
                 5: ("A", "AAAA")}.get(self.ip_lookup_strategy, ("A", "AAAA"))
        found: list[str] = []
        for rdtype in order:
            found.extend(str(r) for r in (await self.lookup(host, rdtype)).records)
            if found and self.ip_lookup_strategy in (4, 5):
                break  # the preferred family answered; the other is only a fallback
        return found


# -- the denylist ------------------------------------------------------------------------------


def parse_denylist(ranges: Sequence[str]) -> list[IpNetwork]:
    return [ipaddress.ip_network(r, strict=False) for r in ranges]


def is_denied(address: str, denylist: Sequence[IpNetwork]) -> bool:
    ip = ipaddress.ip_address(address)
    candidates: list[IpAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    return any(c in net for c in candidates for net in denylist if c.version == net.version)


# -- discovery ---------------------------------------------------------------------------------


_MAX_AGE = re.compile(r"max-age\s*=\s*\"?(\d+)")


@attrs.define
class Discovery:
    resolver: Resolver
    denylist: list[IpNetwork]
    # The client for well-known fetches (short timeouts); requests go to resolved
    # addresses with the name as SNI and Host, so the denylist covers them too.
    http: httpx.AsyncClient
    clock: Callable[[], float] = trio.current_time
    max_entries: int = 32768
    # Tests serve the well-known from a loopback port other than 443.
    well_known_port: int = 443
    _well_known: OrderedDict[str, tuple[float, str | None]] = attrs.field(factory=OrderedDict)

    async def resolve(self, server_name: str) -> Destination:
        """The spec's resolution steps; DiscoveryError if nothing allowed is found."""
        if not is_valid_server_name(server_name):
            raise DiscoveryError(f"{server_name!r} is not a valid server name")
        host, port = split_host_port(server_name)
        if ip_literal(host) is not None:  # step 1
            return self._destination(server_name, [host], port or DEFAULT_PORT, server_name, None)
        if port is not None:  # step 2
            return self._destination(server_name, await self._addresses(host), port,
                                     server_name, host)
        delegated = await self.well_known(host)  # step 3
        if delegated is not None:
            return await self._delegated(server_name, delegated)
        return await self._by_srv(server_name, host, host)  # steps 4-6

    async def _delegated(self, server_name: str, delegated: str) -> Destination:
        host, port = split_host_port(delegated)
        if ip_literal(host) is not None:  # 3.1
            return self._destination(server_name, [host], port or DEFAULT_PORT, delegated, None)
        if port is not None:  # 3.2
            return self._destination(server_name, await self._addresses(host), port,
                                     delegated, host)
        return await self._by_srv(server_name, host, host)  # 3.3-3.5

    async def _by_srv(self, server_name: str, host: str, tls_name: str) -> Destination:
        for service in ("_matrix-fed._tcp", "_matrix._tcp"):
            try:
                records = await self.resolver.srv(f"{service}.{host}")
            except DnsFailure as exc:  # as if there were none; the A lookup decides
                log.debug("%s", exc)
                records = []
            # Lowest priority first; among equals the heaviest (weights are for spreading
            # load, which one server's federation traffic does not need).
            for record in sorted(records, key=lambda r: (r.priority, -r.weight)):
                if record.target in ("", "."):  # "service decidedly not available"
                    continue
                addresses = await self._addresses(record.target)
                if addresses:
                    return self._destination(server_name, addresses, record.port, host,
                                             tls_name)
        return self._destination(server_name, await self._addresses(host), DEFAULT_PORT, host,
                                 tls_name)

    async def _addresses(self, host: str) -> list[str]:
        if ip_literal(host) is not None:
            return [host]
        try:
            return await self.resolver.addresses(host)
        except DnsFailure as exc:
            raise DiscoveryError(str(exc)) from None

    def _destination(self, server_name: str, addresses: Sequence[str], port: int,
                     host_header: str, tls_name: str | None) -> Destination:
        return Destination(server_name, self.allowed(server_name, addresses), port, host_header,
                           tls_name)

    async def allowed_addresses(self, host: str) -> tuple[str, ...]:
        """Resolve any host (a media CDN, say) and keep what the denylist allows."""
        return self.allowed(host, await self._addresses(host))

    def allowed(self, name: str, addresses: Sequence[str]) -> tuple[str, ...]:
        """The addresses outside ``ip_range_denylist``; DiscoveryError if none is left."""
        if not addresses:
            raise DiscoveryError(f"{name} has no address")
        allowed = tuple(a for a in addresses if not is_denied(a, self.denylist))
        if not allowed:
            raise DiscoveryError(
                f"{name} resolves only to addresses in ip_range_denylist ({', '.join(addresses)})"
            )
        return allowed

    # -- .well-known/matrix/server -------------------------------------------------------------

    async def well_known(self, hostname: str) -> str | None:
        """The delegated server name from ``/.well-known/matrix/server``, cached; None if none."""
        now = self.clock()
        hit = self._well_known.get(hostname)
        if hit is not None and hit[0] > now:
            return hit[1]
        result, ttl = await self._fetch_well_known(hostname)
        self._well_known[hostname] = (self.clock() + ttl, result)
        self._well_known.move_to_end(hostname)
        while len(self._well_known) > self.max_entries:
            self._well_known.popitem(last=False)
        return result

    def forget_well_known(self, hostname: str | None = None) -> None:
        if hostname is None:
            self._well_known.clear()
        else:
            self._well_known.pop(hostname, None)

    async def _fetch_well_known(self, hostname: str) -> tuple[str | None, float]:
        port = "" if self.well_known_port == 443 else f":{self.well_known_port}"
        url = httpx.URL(f"https://{hostname}{port}/.well-known/matrix/server")
        seen: set[str] = set()
        for _ in range(MAX_REDIRECTS + 1):
            seen.add(str(url))
            try:
                response, body = await self._get(url)
            except (DiscoveryError, httpx.HTTPError, OSError, trio.TooSlowError) as exc:
                log.debug("well-known of %s: %s", hostname, exc)
                return None, WELL_KNOWN_ERROR_TTL
            if response.is_redirect and "location" in response.headers:
                url = url.join(response.headers["location"])
                if str(url) in seen or url.scheme != "https":
                    log.debug("well-known of %s: redirect loop or to %s", hostname, url)
                    return None, WELL_KNOWN_ERROR_TTL
                continue
            return _parse_well_known(hostname, response, body)
        log.debug("well-known of %s: too many redirects", hostname)
        return None, WELL_KNOWN_ERROR_TTL

    async def _get(self, url: httpx.URL) -> tuple[httpx.Response, bytes]:
        host = url.host
        addresses = self.allowed(host, await self._addresses(host))
        port = url.port or 443
        target = url.copy_with(host=addresses[0], port=port)
        extensions = {} if ip_literal(host) is not None else {"sni_hostname": host}
        headers = {"Host": url.netloc.decode("ascii")}
        request = self.http.build_request("GET", target, headers=headers, extensions=extensions)
        response = await self.http.send(request, stream=True)
        try:
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > WELL_KNOWN_MAX_CHARS:
                    raise DiscoveryError(f"well-known of {host} is over "
                                         f"{WELL_KNOWN_MAX_CHARS} characters")
        finally:
            await response.aclose()
        return response, body


def _parse_well_known(hostname: str, response: httpx.Response,
                      body: bytes) -> tuple[str | None, float]:
    if response.status_code != 200:
        return None, WELL_KNOWN_ERROR_TTL
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, WELL_KNOWN_ERROR_TTL
    delegated = value.get("m.server") if isinstance(value, dict) else None
    if not isinstance(delegated, str) or not is_valid_server_name(delegated):
        log.debug("well-known of %s has no valid m.server", hostname)
        return None, WELL_KNOWN_ERROR_TTL
    return delegated, _cache_ttl(response.headers.get("cache-control", ""))


def _cache_ttl(cache_control: str) -> float:
    value = cache_control.lower()
    if "no-store" in value or "no-cache" in value:
        return WELL_KNOWN_MIN_TTL
    match = _MAX_AGE.search(value)
    if match is None:
        return WELL_KNOWN_DEFAULT_TTL
    return min(max(float(match.group(1)), WELL_KNOWN_MIN_TTL), WELL_KNOWN_MAX_TTL)
