"""Keep tests away from this machine's DNS resolver (it is not on loopback).

:func:`install` makes every server built afterwards resolve names through a
backend that refuses all lookups, so federation to a made-up name such as
``elsewhere.example`` fails at once instead of asking the network. IP literals
need no DNS and keep working; discovery tests pass their own fake resolvers, and
the dnspython backend is tested against a DNS server the test runs on loopback.
"""

from __future__ import annotations

import conduwuit.services.federation as federation
from conduwuit.config import Config
from conduwuit.services.federation.discovery import DnsAnswer, DnsCache, DnsFailure


class NoDns:
    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        raise DnsFailure(f"tests do not use the machine's DNS (asked for {rdtype} {name})")


def _resolver(config: Config) -> DnsCache:
    return DnsCache(NoDns(), max_entries=0)


def install() -> None:
    federation.make_resolver = _resolver
