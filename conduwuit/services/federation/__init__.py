"""Federation: talking to other Matrix servers, and checking who talks to us.

* ``discovery``: server name -> addresses/port/Host/SNI; DNS cache; ip_range_denylist
* ``client``: signed outbound requests over pooled, verified TLS, with backoff
* ``auth``: the X-Matrix header, both ways
* ``keys``: our signing keys as published, other servers' keys cached, the notary
* ``queries``: profile, alias, device and key queries, both ways
* ``openid``: OpenID tokens for third parties
* ``ingest``: the checks on every event another server sends, and storing the outcome

With ``allow_federation = false`` nothing here sends a request (the client refuses
every destination) and the federation endpoints answer 403.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import httpx
import trio

from conduwuit import __version__
from conduwuit.config import Config
from conduwuit.services.profile import Profile
from conduwuit.services.server_keys import ServerKeys
from conduwuit.store import Store

from .auth import RequestVerifier
from .client import FederationClient, FederationError, RemoteError, make_http_client
from .discovery import Discovery, DnsCache, DnspythonBackend, Resolver, parse_denylist
from .ingest import Ingest
from .keys import ServerSigningKeys
from .openid import OpenIdTokens
from .queries import Queries

__all__ = [
    "Federation",
    "FederationClient",
    "FederationError",
    "RemoteError",
]

log = logging.getLogger(__name__)

INSECURE = (
    "allow_invalid_tls_certificates_yes_i_know_what_the_fuck_i_am_doing_with_this_"
    "and_i_know_this_is_insecure"
)


def user_agent() -> str:
    return f"conduwuit/{__version__}"


def make_resolver(config: Config) -> DnsCache:
    backend = DnspythonBackend(timeout=float(config.dns_timeout), attempts=config.dns_attempts,
                               tcp_fallback=config.dns_tcp_fallback,
                               tcp_only=config.query_over_tcp_only)
    return DnsCache(backend, max_entries=config.dns_cache_entries,
                    min_ttl=float(config.dns_min_ttl),
                    min_ttl_nxdomain=float(config.dns_min_ttl_nxdomain),
                    ip_lookup_strategy=config.ip_lookup_strategy)


@attrs.define
class Federation:
    config: Config
    discovery: Discovery
    client: FederationClient
    keys: ServerSigningKeys
    verifier: RequestVerifier
    queries: Queries
    openid: OpenIdTokens
    ingest: Ingest
    _http: list[httpx.AsyncClient]

    @classmethod
    def build(cls, config: Config, store: Store, server_keys: ServerKeys, profile: Profile,
              rooms: Any, resolver: Resolver | None = None) -> Federation:
        """``rooms`` is the Rooms service (aliases, membership)."""
        if getattr(config, INSECURE):
            log.warning("!!! TLS certificates of other servers are NOT VERIFIED (%s = true): "
                        "anyone on the network path can impersonate any server. Use this "
                        "for test networks only. !!!", INSECURE)
        ua = user_agent()
        well_known_http = make_http_client(
            config, user_agent=ua, timeout=float(config.well_known_timeout),
            connect_timeout=float(config.well_known_conn_timeout),
            idle_timeout=float(config.request_idle_timeout),
            idle_per_host=config.request_idle_per_host)
        federation_http = make_http_client(
            config, user_agent=ua, timeout=float(config.federation_timeout),
            connect_timeout=float(config.request_conn_timeout),
            idle_timeout=float(config.federation_idle_timeout),
            idle_per_host=config.federation_idle_per_host)
        discovery = Discovery(resolver or make_resolver(config),
                              parse_denylist(config.ip_range_denylist), well_known_http,
                              max_entries=max(1, config.dns_cache_entries))
        client = FederationClient(config, config.server_name, lambda: server_keys.key, discovery,
                                  federation_http)
        keys = ServerSigningKeys(config, store, server_keys, client)
        verifier = RequestVerifier(config.server_name, keys.request_key, client.is_forbidden)
        queries = Queries(config, client, profile, rooms.aliases, rooms.membership)
        openid = OpenIdTokens(store, config.server_name, config.openid_token_ttl)
        ingest = Ingest(config.server_name, rooms, keys, client)
        return cls(config, discovery, client, keys, verifier, queries, openid, ingest,
                   [federation_http, well_known_http])

    async def hold_connections(self) -> None:
        """A job that owns the connection pools: they close when the server stops."""
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self.aclose()

    async def aclose(self) -> None:
        for http in self._http:
            await http.aclose()
