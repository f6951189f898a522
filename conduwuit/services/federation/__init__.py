"""Federation: talking to other Matrix servers, and checking who talks to us.

* ``discovery``: server name -> addresses/port/Host/SNI; DNS cache; ip_range_denylist
* ``client``: signed outbound requests over pooled, verified TLS, with backoff
* ``auth``: the X-Matrix header, both ways
* ``keys``: our signing keys as published, other servers' keys cached, the notary
* ``queries``: profile, alias, device and key queries, both ways
* ``openid``: OpenID tokens for third parties
* ``sender``: persisted per-destination queues of PDUs and EDUs for other servers
* ``ingest``: the checks on every event another server sends, and storing the outcome
* ``backfill``: history from before we joined, fetched when clients page back to it
* ``membership``: our users joining, leaving, knocking on rooms of other servers, and
  invites of their users
* ``serving``: our rooms' events, state and history for other servers (ACLs, visibility)
* ``inbound``: other servers joining, leaving, knocking, inviting; inbound transactions
* ``edus``: typing, receipts, presence, device lists and to-device messages from others

With ``allow_federation = false`` nothing here sends a request (the client refuses
every destination) and the federation endpoints answer 403.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio

from conduwuit import __version__
from conduwuit.config import Config
from conduwuit.services.profile import Profile
from conduwuit.services.server_keys import ServerKeys
from conduwuit.store import Store

from .auth import RequestVerifier
from .backfill import Backfill
from .client import FederationClient, FederationError, RemoteError, make_http_client
from .discovery import Discovery, DnsCache, DnspythonBackend, Resolver, parse_denylist
from .edus import Edus
from .inbound import Inbound
from .ingest import Ingest
from .keys import ServerSigningKeys
from .membership import RemoteMembership
from .openid import OpenIdTokens
from .queries import Queries
from .sender import Sender
from .serving import FederationServing

if TYPE_CHECKING:
    from conduwuit.services.e2ee import E2ee
    from conduwuit.services.notifier import Notifier
    from conduwuit.services.presence import Presence
    from conduwuit.services.receipts import Receipts
    from conduwuit.services.rooms import Rooms
    from conduwuit.services.typing import Typing
    from conduwuit.services.users import Users

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
    sender: Sender = attrs.field(kw_only=True)
    serving: FederationServing = attrs.field(kw_only=True)
    membership: RemoteMembership = attrs.field(kw_only=True)
    backfill: Backfill = attrs.field(kw_only=True)
    # Built by attach_inbound once the services they feed exist.
    edus: Edus = attrs.field(init=False)
    inbound: Inbound = attrs.field(init=False)

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
                   [federation_http, well_known_http],
                   sender=Sender(config, store, client, rooms.events, rooms.membership),
                   serving=FederationServing(config.server_name, rooms),
                   membership=RemoteMembership(config, client, server_keys, keys, queries,
                                               ingest, rooms),
                   backfill=Backfill(config, store, rooms, ingest, client))

    def attach_inbound(self, store: Store, server_keys: ServerKeys, users: Users, rooms: Rooms,
                       notifier: Notifier, typing: Typing, receipts: Receipts,
                       presence: Presence, e2ee: E2ee) -> None:
        """Build the inbound side (joins, invites, /send and its EDUs)."""
        self.edus = Edus(self.config, users, rooms, typing, receipts, presence, e2ee)
        self.inbound = Inbound(self.config, store, server_keys, users, rooms, self.ingest,
                               self.edus, notifier, self.client.is_forbidden)

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
