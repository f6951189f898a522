"""Server signing keys (spec, "Retrieving server keys"): ours, other servers', the notary.

Ours: :meth:`ServerSigningKeys.own_response` is ``/_matrix/key/v2/server``, signed,
valid for a week, with the keys replaced by a rotation as ``old_verify_keys``.

Theirs: cached in the ``server_signingkeys`` tree (this module alone writes it) as
the merged keys with their validity plus the last few responses as the server signed
them, which is what our notary endpoints hand out (with our signature added). A key's
validity is the response's ``valid_until_ts`` capped at a week after we received it,
as the spec demands. Missing or expired keys are fetched by the key-fetch job
(``nursery/keyfetch.py``): callers put a :class:`KeyFetch` on a bounded channel and
wait on it; a server has at most one fetch in flight, and later callers for the same
server wait on that one. The job uses :meth:`fetch_direct` and :meth:`query_notary`,
which verify everything before it is stored.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import orjson
import trio

from conduwuit.config import Config
from conduwuit.errors import MatrixError
from conduwuit.protocol.ids import is_valid_server_name
from conduwuit.protocol.signing import SignatureError, sign_json, verify_json
from conduwuit.services.server_keys import ServerKeys
from conduwuit.store import Store

from .client import FederationClient, FederationError, RemoteError

log = logging.getLogger(__name__)

TREE = "server_signingkeys"
WEEK_MS = 7 * 24 * 3600 * 1000
OWN_KEYS_VALID_MS = WEEK_MS  # how long others may use our published keys
MAX_VALIDITY_MS = WEEK_MS  # spec: the lesser of valid_until_ts and 7 days into the future
MAX_STORED_RESPONSES = 4
FETCH_QUEUE = 1024  # bounded: callers wait when the key-fetch job falls this far behind
FETCH_TIMEOUT = 60.0  # one key request to one server (direct or notary)


def now_ms() -> int:
    return int(time.time() * 1000)


class KeyResponseError(ValueError):
    """A key response is malformed or not signed as it must be."""


@attrs.frozen
class VerifyKey:
    """A server's public key: current (``valid_until_ts``) or old (``expired_ts``)."""

    key: str
    valid_until_ts: int
    expired_ts: int | None = None

    def valid_at(self, ts: int) -> bool:
        if self.expired_ts is not None:
            return ts < self.expired_ts
        return ts <= self.valid_until_ts


@attrs.define(eq=False)
class KeyFetch:
    """One server's keys wanted by someone; the key-fetch job sets ``done``."""

    server: str
    key_ids: frozenset[str]
    minimum_valid_until_ts: int
    direct_only: bool = False  # answering as a notary: ask the server itself only
    joining: bool = False  # query_trusted_key_servers_first_on_join applies
    done: trio.Event = attrs.field(factory=trio.Event)


def check_key_response(server: str, response: object) -> dict[str, Any]:
    """The response if it is ``server``'s well-formed key response, self-signed."""
    if not isinstance(response, dict):
        raise KeyResponseError("not a JSON object")
    if response.get("server_name") != server:
        raise KeyResponseError(f"server_name is {response.get('server_name')!r}, not {server!r}")
    verify_keys = response.get("verify_keys")
    if not isinstance(verify_keys, dict) or not verify_keys:
        raise KeyResponseError("no verify_keys")
    for kid, value in verify_keys.items():
        if not isinstance(value, dict) or not isinstance(value.get("key"), str):
            raise KeyResponseError(f"verify key {kid!r} has no key")
    old = response.get("old_verify_keys", {})
    if not isinstance(old, dict):
        raise KeyResponseError("old_verify_keys is not an object")
    for kid, value in old.items():
        if (not isinstance(value, dict) or not isinstance(value.get("key"), str)
                or not isinstance(value.get("expired_ts"), int)):
            raise KeyResponseError(f"old verify key {kid!r} needs key and expired_ts")
    if not isinstance(response.get("valid_until_ts"), int):
        raise KeyResponseError("no valid_until_ts")
    signatures = response.get("signatures")
    own = signatures.get(server) if isinstance(signatures, dict) else None
    signed_by = [kid for kid in (own or {}) if kid in verify_keys]
    if not signed_by:
        raise KeyResponseError(f"not signed by any of {server}'s verify_keys")
    for kid in signed_by:
        try:
            verify_json(response, server, kid, verify_keys[kid]["key"])
        except SignatureError as exc:
            raise KeyResponseError(str(exc)) from None
    return response


@attrs.define
class ServerSigningKeys:
    config: Config
    store: Store
    own: ServerKeys
    client: FederationClient
    clock_ms: Callable[[], int] = now_ms
    wait_limit: float = 90.0  # longest a caller waits for the job
    _send: trio.MemorySendChannel[KeyFetch] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[KeyFetch] = attrs.field(init=False)
    _pending: dict[str, KeyFetch] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[KeyFetch](FETCH_QUEUE)

    @property
    def server_name(self) -> str:
        return self.config.server_name

    # -- our own keys --------------------------------------------------------------------------

    def own_response(self) -> dict[str, Any]:
        """``GET /_matrix/key/v2/server``: our keys, signed by the current one."""
        body = {
            "server_name": self.server_name,
            "verify_keys": {self.own.key_id: {"key": self.own.verify_key_base64}},
            "old_verify_keys": self.own.old_verify_keys(),
            "valid_until_ts": self.clock_ms() + OWN_KEYS_VALID_MS,
        }
        return sign_json(body, self.server_name, self.own.key)

    def _own_keys(self) -> dict[str, VerifyKey]:
        keys = {kid: VerifyKey(v["key"], 0, int(v["expired_ts"]))
                for kid, v in self.own.old_verify_keys().items()}
        keys[self.own.key_id] = VerifyKey(self.own.verify_key_base64,
                                          self.clock_ms() + OWN_KEYS_VALID_MS)
        return keys

    # -- the cache -----------------------------------------------------------------------------

    def _load(self, server: str) -> dict[str, Any]:
        raw = self.store.tree(TREE).get(server.encode())
        if raw is None:
            return {"verify_keys": {}, "old_verify_keys": {}, "responses": []}
        entry: dict[str, Any] = orjson.loads(raw)
        return entry

    def cached(self, server: str) -> dict[str, VerifyKey]:
        """Every key we know of ``server``, without fetching."""
        if server == self.server_name:
            return self._own_keys()
        entry = self._load(server)
        keys = {kid: VerifyKey(v["key"], 0, int(v["expired_ts"]))
                for kid, v in entry["old_verify_keys"].items()}
        keys.update({kid: VerifyKey(v["key"], int(v["valid_until_ts"]))
                     for kid, v in entry["verify_keys"].items()})
        return keys

    def satisfied(self, fetch: KeyFetch) -> bool:
        keys = self.cached(fetch.server)
        ts = fetch.minimum_valid_until_ts
        if fetch.key_ids:
            return all(kid in keys and keys[kid].valid_at(ts) for kid in fetch.key_ids)
        return any(k.expired_ts is None and k.valid_at(ts) for k in keys.values())

    def store_response(self, server: str, response: Mapping[str, Any]) -> None:
        """Merge a verified key response into the cache."""
        received = self.clock_ms()
        entry = self._load(server)
        valid_until = min(int(response["valid_until_ts"]), received + MAX_VALIDITY_MS)
        old_ids = set(response.get("old_verify_keys", {}))
        for kid, value in response.get("old_verify_keys", {}).items():
            entry["old_verify_keys"][kid] = {"key": value["key"],
                                             "expired_ts": int(value["expired_ts"])}
            entry["verify_keys"].pop(kid, None)
        for kid, value in response["verify_keys"].items():
            if kid in old_ids:
                continue
            before = entry["verify_keys"].get(kid)
            if before is not None and before["key"] == value["key"]:
                until = max(valid_until, int(before["valid_until_ts"]))
            else:
                until = valid_until
            entry["verify_keys"][kid] = {"key": value["key"], "valid_until_ts": until}
            entry["old_verify_keys"].pop(kid, None)
        # As the server signed it (other notaries' signatures dropped), for our notary.
        signatures = response.get("signatures", {})
        own = {**response, "signatures": {server: dict(signatures.get(server, {}))}}
        covered = set(response["verify_keys"]) | old_ids
        kept = [r for r in entry["responses"] if not set(r["verify_keys"]) <= covered]
        entry["responses"] = [own, *kept][:MAX_STORED_RESPONSES]
        self.store.tree(TREE).put(server.encode(), orjson.dumps(entry))

    def forget(self, server: str) -> None:
        self.store.tree(TREE).delete(server.encode())

    # -- lookups -------------------------------------------------------------------------------

    async def keys_for(self, server: str, key_ids: Iterable[str] = (), *,
                       minimum_valid_until_ts: int | None = None, joining: bool = False,
                       direct_only: bool = False) -> dict[str, VerifyKey]:
        """``server``'s keys, fetched first if a wanted one is missing or not valid then.

        Returns what is known afterwards; callers check the keys they need.
        """
        fetch = KeyFetch(server, frozenset(key_ids),
                         minimum_valid_until_ts if minimum_valid_until_ts is not None
                         else self.clock_ms(), direct_only=direct_only, joining=joining)
        if server != self.server_name and not self.satisfied(fetch):
            await self.ensure(fetch)
        return self.cached(server)

    async def request_key(self, server: str, key_id: str) -> str:
        """The public key ``server`` signs requests with as ``key_id``, valid now; else 401."""
        now = self.clock_ms()
        key = (await self.keys_for(server, [key_id], minimum_valid_until_ts=now)).get(key_id)
        if key is None:
            raise MatrixError(401, "M_UNAUTHORIZED",
                              f"Unknown key {key_id} of {server}: could not fetch it")
        if key.expired_ts is not None:
            raise MatrixError(401, "M_UNAUTHORIZED",
                              f"Key {key_id} of {server} is an old key, not valid for requests")
        if key.valid_until_ts < now:
            raise MatrixError(401, "M_UNAUTHORIZED", f"Key {key_id} of {server} has expired")
        return key.key

    async def ensure(self, fetch: KeyFetch) -> None:
        """Have the key-fetch job fetch ``fetch.server``'s keys, one fetch per server."""
        for _ in range(2):
            if self.satisfied(fetch) or not self.config.allow_federation:
                return
            pending = self._pending.get(fetch.server)
            mine = pending is None
            if pending is None:
                pending = self._pending[fetch.server] = KeyFetch(
                    fetch.server, fetch.key_ids, fetch.minimum_valid_until_ts,
                    fetch.direct_only, fetch.joining)
                try:
                    await self._send.send(pending)
                except BaseException:
                    self.finish(pending)
                    raise
            with trio.move_on_after(self.wait_limit):
                await pending.done.wait()
            if mine:
                return  # ours was answered as well as it could be

    # -- the key-fetch job's side --------------------------------------------------------------

    @property
    def fetch_requests(self) -> trio.MemoryReceiveChannel[KeyFetch]:
        return self._receive

    def finish(self, fetch: KeyFetch) -> None:
        if self._pending.get(fetch.server) is fetch:
            del self._pending[fetch.server]
        fetch.done.set()

    def in_flight(self) -> int:
        return len(self._pending)

    async def fetch_direct(self, server: str) -> bool:
        """Ask ``server`` for its own keys (``/_matrix/key/v2/server``); True if stored."""
        try:
            response = await self.client.request("GET", server, "/_matrix/key/v2/server",
                                                  signed=False, timeout=FETCH_TIMEOUT)
            check_key_response(server, response)
        except (FederationError, RemoteError, KeyResponseError) as exc:
            log.info("keys of %s: %s", server, exc)
            return False
        self.store_response(server, response)
        return True

    async def query_notary(self, notary: str, fetches: list[KeyFetch]) -> None:
        """Ask ``notary`` for the keys of several servers in one request; store what verifies."""
        notary_keys = await self._notary_keys(notary)
        if not notary_keys:
            log.info("keys via notary %s: its own keys are unavailable", notary)
            return
        wanted = {f.server: {kid: {"minimum_valid_until_ts": f.minimum_valid_until_ts}
                             for kid in f.key_ids} for f in fetches}
        try:
            response = await self.client.request("POST", notary, "/_matrix/key/v2/query",
                                                  body={"server_keys": wanted},
                                                  timeout=FETCH_TIMEOUT)
        except (FederationError, RemoteError) as exc:
            log.info("keys via notary %s: %s", notary, exc)
            return
        entries = response.get("server_keys") if isinstance(response, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            server = entry.get("server_name") if isinstance(entry, dict) else None
            if not isinstance(server, str) or server not in wanted:
                continue
            try:
                check_key_response(server, entry)
                self._check_notary_signature(notary, notary_keys, entry)
            except KeyResponseError as exc:
                log.warning("keys of %s via notary %s rejected: %s", server, notary, exc)
                continue
            self.store_response(server, entry)

    async def _notary_keys(self, notary: str) -> dict[str, VerifyKey]:
        now = self.clock_ms()

        def valid() -> dict[str, VerifyKey]:
            return {kid: k for kid, k in self.cached(notary).items()
                    if k.expired_ts is None and k.valid_at(now)}

        keys = valid()
        if not keys and await self.fetch_direct(notary):
            keys = valid()
        return keys

    @staticmethod
    def _check_notary_signature(notary: str, keys: Mapping[str, VerifyKey],
                                entry: Mapping[str, Any]) -> None:
        signatures = entry.get("signatures", {}).get(notary, {})
        usable = [kid for kid in signatures if kid in keys]
        if not usable:
            raise KeyResponseError(f"not signed by the notary {notary} with a key we know")
        for kid in usable:
            try:
                verify_json(entry, notary, kid, keys[kid].key)
            except SignatureError as exc:
                raise KeyResponseError(str(exc)) from None

    # -- our notary ----------------------------------------------------------------------------

    async def notary_query(self, wanted: Mapping[str, tuple[frozenset[str], int]]) -> list[Any]:
        """``/_matrix/key/v2/query``: each server's keys as it signed them, signed by us too.

        ``wanted`` maps server names to (key ids, minimum_valid_until_ts). Missing or
        stale keys are fetched from the servers themselves first; servers we cannot
        reach and have nothing cached for are left out, as the spec says.
        """
        out: list[Any] = []
        if not self.config.allow_federation:
            return out
        async with trio.open_nursery() as nursery:
            for server, (key_ids, minimum) in wanted.items():
                if server != self.server_name and is_valid_server_name(server):
                    nursery.start_soon(functools.partial(
                        self.keys_for, server, key_ids, minimum_valid_until_ts=minimum,
                        direct_only=True))
        for server, (key_ids, _) in wanted.items():
            if server == self.server_name:
                out.append(self.own_response())
                continue
            if not is_valid_server_name(server):
                continue
            for response in self._load(server)["responses"]:
                if key_ids and not key_ids & (set(response["verify_keys"])
                                              | set(response.get("old_verify_keys", {}))):
                    continue
                out.append(sign_json(response, self.server_name, self.own.key))
        return out

