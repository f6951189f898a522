"""Server discovery: every branch of the spec's resolution, the DNS cache, the denylist.

Nothing here asks this machine's DNS: names resolve through a fake resolver (or, for
the dnspython backend, a DNS server the test runs on loopback), and well-known files
come from a fake HTTPS server on 127.0.0.1 with a trustme certificate.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import httpx
import orjson
import pytest
import trio
import trustme
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from conduwuit.config import Config
from conduwuit.services.federation.discovery import (
    WELL_KNOWN_DEFAULT_TTL,
    WELL_KNOWN_ERROR_TTL,
    WELL_KNOWN_MAX_TTL,
    Destination,
    Discovery,
    DiscoveryError,
    DnsAnswer,
    DnsCache,
    DnsFailure,
    DnspythonBackend,
    SrvRecord,
    is_denied,
    parse_denylist,
)

HOSTS = ["a.example", "b.example", "c.example", "d.example", "e.example", "f.example",
         "g.example", "h.example", "big.example", "bad.example", "redir.example",
         "target.example", "loop.example", "empty.example", "down.example"]
# The seed's default ip_range_denylist, as a config without the option gets it.
DEFAULT_RANGES: list[str] = attrs.fields(Config).ip_range_denylist.default.factory()  # type: ignore[union-attr]
DEFAULT_DENYLIST = parse_denylist(DEFAULT_RANGES)

# What the fake well-known server answers, by host: (status, headers, body).
Answer = tuple[int, dict[str, str], bytes]


def _json(value: Any, **headers: str) -> Answer:
    return 200, headers, orjson.dumps(value)


@attrs.define
class FakeResolver:
    srv_records: dict[str, list[SrvRecord]] = attrs.field(factory=dict)
    addresses_of: dict[str, list[str]] = attrs.field(factory=dict)
    asked: list[str] = attrs.field(factory=list)
    failing: set[str] = attrs.field(factory=set)  # names whose lookups time out

    async def srv(self, name: str) -> list[SrvRecord]:
        self.asked.append(f"SRV {name}")
        if name.split(".", 2)[-1] in self.failing:
            raise DnsFailure(f"SRV {name} timed out")
        return self.srv_records.get(name, [])

    async def addresses(self, host: str) -> list[str]:
        self.asked.append(f"A {host}")
        if host in self.failing:
            raise DnsFailure(f"A {host} timed out")
        if host.endswith(".example") and host not in self.addresses_of:
            return ["127.0.0.1"]
        return self.addresses_of.get(host, [])


@attrs.define
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@attrs.define
class WellKnownServer:
    port: int
    answers: dict[str, Answer]
    hits: dict[str, int] = attrs.field(factory=dict)


@asynccontextmanager
async def well_known_server(tmp_path: Path,
                            ca: trustme.CA) -> AsyncIterator[WellKnownServer]:
    state = WellKnownServer(0, {})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        host = dict(scope["headers"])[b"host"].decode().rsplit(":", 1)[0]
        state.hits[host] = state.hits.get(host, 0) + 1
        status, headers, body = state.answers.get(host, (404, {}, b"{}"))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": body})

    cert = ca.issue_cert(*HOSTS)
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "wk.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "wk.key"))
    config = HypercornConfig()
    config.certfile, config.keyfile = str(tmp_path / "wk.pem"), str(tmp_path / "wk.key")
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.5
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(functools.partial(serve, app, config,  # type: ignore[arg-type]
                                                      shutdown_trigger=stop.wait))
        state.port = int(url.rsplit(":", 1)[1])
        try:
            yield state
        finally:
            stop.set()


@asynccontextmanager
async def discovery(tmp_path: Path, *, denylist: list[str] | None = None) -> AsyncIterator[
        tuple[Discovery, FakeResolver, WellKnownServer, Clock]]:
    ca = trustme.CA()
    context = ssl.create_default_context()
    ca.configure_trust(context)
    resolver, clock = FakeResolver(), Clock()
    async with well_known_server(tmp_path, ca) as server, \
            httpx.AsyncClient(verify=context) as http:
        found = Discovery(resolver, parse_denylist(denylist or []), http, clock=clock,
                          well_known_port=server.port)
        yield found, resolver, server, clock


def _dest(name: str, addresses: tuple[str, ...], port: int, host: str,
          tls: str | None) -> Destination:
    return Destination(name, addresses, port, host, tls)


async def test_ip_literals_and_explicit_ports(tmp_path: Path) -> None:
    async with discovery(tmp_path) as (found, resolver, server, _):
        assert await found.resolve("1.2.3.4") == _dest("1.2.3.4", ("1.2.3.4",), 8448,
                                                       "1.2.3.4", None)
        assert await found.resolve("1.2.3.4:1234") == _dest("1.2.3.4:1234", ("1.2.3.4",), 1234,
                                                            "1.2.3.4:1234", None)
        v6 = await found.resolve("[2001:db8::1]:8449")
        assert v6 == _dest("[2001:db8::1]:8449", ("2001:db8::1",), 8449, "[2001:db8::1]:8449",
                           None)
        assert v6.base_url("2001:db8::1") == "https://[2001:db8::1]:8449"
        assert resolver.asked == [] and server.hits == {}, "IP literals need no lookup"

        resolver.addresses_of["host.example"] = ["192.0.2.7", "192.0.2.8"]
        assert await found.resolve("host.example:9000") == _dest(
            "host.example:9000", ("192.0.2.7", "192.0.2.8"), 9000, "host.example:9000",
            "host.example")
        assert resolver.asked == ["A host.example"] and server.hits == {}
        with pytest.raises(DiscoveryError):
            await found.resolve("not a name")


async def test_well_known_delegation(tmp_path: Path) -> None:
    async with discovery(tmp_path) as (found, resolver, server, _):
        server.answers.update({
            "a.example": _json({"m.server": "192.0.2.1"}),
            "b.example": _json({"m.server": "deleg.example:7000"}),
            "c.example": _json({"m.server": "srvd.example"}),
            "d.example": _json({"m.server": "old.example"}),
            "e.example": _json({"m.server": "plain.example"}),
        })
        resolver.addresses_of.update({"deleg.example": ["192.0.2.2"],
                                      "t.example": ["192.0.2.3"],
                                      "t2.example": ["192.0.2.4"],
                                      "plain.example": ["192.0.2.5"]})
        resolver.srv_records.update({
            "_matrix-fed._tcp.srvd.example": [SrvRecord(10, 0, 7001, "t.example")],
            "_matrix._tcp.srvd.example": [SrvRecord(0, 0, 1, "wrong.example")],
            "_matrix._tcp.old.example": [SrvRecord(0, 0, 7002, "t2.example")],
        })
        assert await found.resolve("a.example") == _dest("a.example", ("192.0.2.1",), 8448,
                                                         "192.0.2.1", None)
        assert await found.resolve("b.example") == _dest("b.example", ("192.0.2.2",), 7000,
                                                         "deleg.example:7000", "deleg.example")
        assert await found.resolve("c.example") == _dest("c.example", ("192.0.2.3",), 7001,
                                                         "srvd.example", "srvd.example")
        assert await found.resolve("d.example") == _dest("d.example", ("192.0.2.4",), 7002,
                                                         "old.example", "old.example")
        assert await found.resolve("e.example") == _dest("e.example", ("192.0.2.5",), 8448,
                                                         "plain.example", "plain.example")
        assert "SRV _matrix-fed._tcp.e.example" not in resolver.asked, \
            "SRV is looked up for the delegated name, not the original"


async def test_no_well_known_falls_back_to_srv_then_8448(tmp_path: Path) -> None:
    async with discovery(tmp_path) as (found, resolver, server, _):
        resolver.addresses_of.update({"t.example": ["192.0.2.3"], "t2.example": ["192.0.2.4"]})
        resolver.srv_records.update({
            "_matrix-fed._tcp.f.example": [SrvRecord(20, 0, 1, "t2.example"),
                                           SrvRecord(10, 5, 8500, "t.example")],
            "_matrix._tcp.g.example": [SrvRecord(0, 0, 8501, "t2.example")],
        })
        assert await found.resolve("f.example") == _dest("f.example", ("192.0.2.3",), 8500,
                                                         "f.example", "f.example")
        assert await found.resolve("g.example") == _dest("g.example", ("192.0.2.4",), 8501,
                                                         "g.example", "g.example")
        assert await found.resolve("h.example") == _dest("h.example", ("127.0.0.1",), 8448,
                                                         "h.example", "h.example")
        assert server.hits == {"f.example": 1, "g.example": 1, "h.example": 1}
        assert resolver.asked[-3:] == ["SRV _matrix-fed._tcp.h.example",
                                       "SRV _matrix._tcp.h.example", "A h.example"]
        # A failing SRV lookup counts as none; a failing address lookup is an error.
        resolver.failing.add("flaky.example")
        with pytest.raises(DiscoveryError, match="timed out"):
            await found.resolve("flaky.example")
        assert resolver.asked[-3:] == ["SRV _matrix-fed._tcp.flaky.example",
                                       "SRV _matrix._tcp.flaky.example", "A flaky.example"]


async def test_well_known_cache_lifetimes(tmp_path: Path) -> None:
    async with discovery(tmp_path) as (found, _, server, clock):
        server.answers.update({
            "a.example": _json({"m.server": "192.0.2.1"}, **{"Cache-Control": "max-age=600"}),
            "b.example": _json({"m.server": "192.0.2.2"}),
            "c.example": _json({"m.server": "192.0.2.3"},
                               **{"Cache-Control": "public, max-age=99999999"}),
        })
        for host in ("a.example", "b.example", "c.example", "d.example"):
            await found.well_known(host)
            await found.well_known(host)
            assert server.hits[host] == 1, f"{host} was cached"

        start = clock.now
        clock.now = start + 599
        await found.well_known("a.example")
        assert server.hits["a.example"] == 1
        clock.now = start + 601
        await found.well_known("a.example")
        assert server.hits["a.example"] == 2, "Cache-Control max-age is honoured"

        clock.now = start + WELL_KNOWN_DEFAULT_TTL - 1
        for host in ("b.example", "d.example"):
            await found.well_known(host)
        assert server.hits["b.example"] == 1, "24 h without Cache-Control"
        assert server.hits["d.example"] == 2, f"errors are cached {WELL_KNOWN_ERROR_TTL:.0f} s"
        clock.now = start + WELL_KNOWN_DEFAULT_TTL + 1
        await found.well_known("b.example")
        assert server.hits["b.example"] == 2
        clock.now = start + WELL_KNOWN_MAX_TTL - 1
        await found.well_known("c.example")
        assert server.hits["c.example"] == 1
        clock.now = start + WELL_KNOWN_MAX_TTL + 1
        await found.well_known("c.example")
        assert server.hits["c.example"] == 2, "a long max-age is capped at 48 h"


async def test_broken_well_known_answers(tmp_path: Path) -> None:
    async with discovery(tmp_path) as (found, _, server, _clock):
        wk = "/.well-known/matrix/server"
        server.answers.update({
            "big.example": _json({"m.server": "192.0.2.1", "pad": "x" * 10_000}),
            "bad.example": (200, {}, b"{not json"),
            "e.example": _json({"m.server": "no spaces allowed"}),
            "empty.example": _json({}),
            "down.example": (500, {}, orjson.dumps({"m.server": "192.0.2.1"})),
            "redir.example": (302, {"Location": f"https://target.example:{server.port}{wk}"},
                              b""),
            "target.example": _json({"m.server": "192.0.2.8:8008"}),
            "loop.example": (301, {"Location": wk}, b""),
        })
        for host in ("big.example", "bad.example", "e.example", "empty.example",
                     "down.example", "loop.example"):
            assert await found.well_known(host) is None, host
        assert server.hits["loop.example"] == 1, "a redirect loop is not followed"
        assert await found.well_known("redir.example") == "192.0.2.8:8008"
        assert server.hits["target.example"] == 1
        # A broken answer falls back to SRV / port 8448 like a missing one.
        destination = await found.resolve("big.example")
        assert (destination.port, destination.host_header) == (8448, "big.example")


async def test_denylist_refuses_after_resolution(tmp_path: Path) -> None:
    async with discovery(tmp_path, denylist=DEFAULT_RANGES) as (found, resolver, server, _):
        resolver.addresses_of.update({"inside.example": ["10.1.2.3"],
                                      "mixed.example": ["10.1.2.3", "93.184.216.34"]})
        for name in ("inside.example:8448", "127.0.0.1:8448", "[::1]:8448",
                     "[::ffff:10.0.0.1]:8448", "192.168.1.1"):
            with pytest.raises(DiscoveryError, match="ip_range_denylist"):
                await found.resolve(name)
        assert (await found.resolve("mixed.example:8448")).addresses == ("93.184.216.34",)
        # The well-known fetch itself is refused: a.example resolves to 127.0.0.1.
        server.answers["a.example"] = _json({"m.server": "93.184.216.34"})
        assert await found.well_known("a.example") is None
        assert server.hits == {}
    assert is_denied("fc00::1", DEFAULT_DENYLIST) and not is_denied("8.8.8.8", DEFAULT_DENYLIST)


# -- the DNS cache ---------------------------------------------------------------------------


@attrs.define
class FakeBackend:
    records: dict[tuple[str, str], DnsAnswer] = attrs.field(factory=dict)
    queries: list[tuple[str, str]] = attrs.field(factory=list)
    fail: bool = False

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        self.queries.append((name, rdtype))
        if self.fail:
            raise DnsFailure("no nameserver answered")
        return self.records.get((name, rdtype), DnsAnswer((), 0.0))


async def test_dns_cache_lifetimes_and_size() -> None:
    backend, clock = FakeBackend(), Clock()
    backend.records[("x.example", "A")] = DnsAnswer(("192.0.2.1",), 30.0)
    backend.records[("y.example", "A")] = DnsAnswer(("192.0.2.2",), 5000.0)
    cache = DnsCache(backend, max_entries=3, min_ttl=100.0, min_ttl_nxdomain=1000.0,
                     ip_lookup_strategy=5, clock=clock)
    assert await cache.addresses("x.example") == ["192.0.2.1"]
    assert await cache.addresses("X.Example.") == ["192.0.2.1"]
    assert backend.queries == [("x.example", "A")], "A answered: AAAA is only a fallback"
    clock.now += 99
    await cache.addresses("x.example")
    assert len(backend.queries) == 1, "kept dns_min_ttl although its TTL is 30 s"
    clock.now += 2
    await cache.addresses("x.example")
    assert len(backend.queries) == 2, "expired after dns_min_ttl"

    assert await cache.srv("_matrix-fed._tcp.x.example") == []  # NXDOMAIN, cached
    clock.now += 999
    await cache.srv("_matrix-fed._tcp.x.example")
    assert backend.queries.count(("_matrix-fed._tcp.x.example", "SRV")) == 1
    clock.now += 2
    await cache.srv("_matrix-fed._tcp.x.example")
    assert backend.queries.count(("_matrix-fed._tcp.x.example", "SRV")) == 2

    await cache.addresses("y.example")
    clock.now += 4000
    await cache.addresses("y.example")
    assert backend.queries.count(("y.example", "A")) == 1, "a long TTL is kept as it is"
    for i in range(5):
        await cache.lookup(f"n{i}.example", "A")
    await cache.addresses("y.example")
    assert backend.queries.count(("y.example", "A")) == 2, "dns_cache_entries bounds the cache"

    backend.fail = True
    with pytest.raises(DnsFailure):
        await cache.lookup("z.example", "A")
    backend.fail = False
    await cache.lookup("z.example", "A")
    assert backend.queries.count(("z.example", "A")) == 2, "failures are not cached"


async def test_ip_lookup_strategies() -> None:
    backend = FakeBackend()
    backend.records[("both.example", "A")] = DnsAnswer(("192.0.2.1",), 60.0)
    backend.records[("both.example", "AAAA")] = DnsAnswer(("2001:db8::1",), 60.0)
    backend.records[("six.example", "AAAA")] = DnsAnswer(("2001:db8::2",), 60.0)
    expected = {1: ["192.0.2.1"], 2: ["2001:db8::1"], 3: ["192.0.2.1", "2001:db8::1"],
                4: ["2001:db8::1"], 5: ["192.0.2.1"]}
    for strategy, addresses in expected.items():
        cache = DnsCache(backend, ip_lookup_strategy=strategy, clock=Clock())
        assert await cache.addresses("both.example") == addresses, strategy
    cache = DnsCache(backend, ip_lookup_strategy=5, clock=Clock())
    assert await cache.addresses("six.example") == ["2001:db8::2"], "falls back to AAAA"


# -- dnspython against a DNS server on loopback ----------------------------------------------


async def _serve_dns(sock: trio.socket.SocketType,
                     zone: dict[tuple[str, str], tuple[int, list[str]]]) -> None:
    while True:
        data, peer = await sock.recvfrom(4096)
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        key = (question.name.to_text(omit_final_dot=True), dns.rdatatype.to_text(question.rdtype))
        if key in zone:
            ttl, values = zone[key]
            response.answer.append(dns.rrset.from_text_list(question.name, ttl, "IN", key[1],
                                                            values))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        await sock.sendto(response.to_wire(), peer)


async def test_dnspython_backend_on_loopback() -> None:
    zone = {
        ("_matrix-fed._tcp.hs.example", "SRV"): (300, ["10 5 8448 matrix.hs.example."]),
        ("matrix.hs.example", "A"): (60, ["192.0.2.44"]),
    }
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve_dns, sock, zone)
        backend = DnspythonBackend(timeout=2.0, attempts=1, tcp_fallback=False, tcp_only=False,
                                   nameservers=["127.0.0.1"], port=port)
        answer = await backend.query("_matrix-fed._tcp.hs.example", "SRV")
        assert answer.records == (SrvRecord(10, 5, 8448, "matrix.hs.example"),)
        assert answer.ttl == 300
        assert (await backend.query("matrix.hs.example", "A")).records == ("192.0.2.44",)
        assert (await backend.query("nothing.hs.example", "A")).records == ()
        cache = DnsCache(backend)
        assert await cache.srv("_matrix-fed._tcp.hs.example") == [
            SrvRecord(10, 5, 8448, "matrix.hs.example")]
        nursery.cancel_scope.cancel()
    sock.close()
    # Nobody answers: a failure after the configured attempts, not a hang.
    silent = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await silent.bind(("127.0.0.1", 0))
    backend = DnspythonBackend(timeout=0.3, attempts=2, tcp_fallback=False, tcp_only=False,
                               nameservers=["127.0.0.1"], port=silent.getsockname()[1])
    with trio.fail_after(5), pytest.raises(DnsFailure):
        await backend.query("hs.example", "A")
    silent.close()
