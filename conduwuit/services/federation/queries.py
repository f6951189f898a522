"""Federation queries: asking other servers (profiles, aliases, keys) and answering them.

Outbound calls turn the remote answer into what our client API answers: the
remote's 404 stays a 404 and its 403 a 403, while a server that cannot be reached
(or that federation may not reach: disabled, forbidden) is a 502 or 403 of our own.
Remote 401s are never passed on: a client would take them for its own token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs

from conduwuit.config import Config
from conduwuit.errors import MatrixError, invalid_param, not_found
from conduwuit.protocol.ids import RoomAlias, UserId
from conduwuit.services.profile import Profile
from conduwuit.services.rooms.aliases import Aliases
from conduwuit.services.rooms.membership import Membership

from .client import FederationClient, FederationError, RemoteError, path_segment

log = logging.getLogger(__name__)

QUERY = "/_matrix/federation/v1/query"


def remote_failure(exc: FederationError | RemoteError, what: str) -> MatrixError:
    """What our client sees when a request to another server for ``what`` failed."""
    if isinstance(exc, RemoteError):
        if exc.status == 404:
            return not_found(f"{what} not found on {exc.destination}")
        if exc.status == 403:
            return MatrixError(403, "M_FORBIDDEN", exc.error or f"{exc.destination} refused")
        if exc.status == 400:
            return MatrixError(400, exc.errcode, exc.error or f"{exc.destination} refused")
        if exc.status == 429:
            return MatrixError(429, "M_LIMIT_EXCEEDED", f"{exc.destination} is rate limiting us")
        return MatrixError(502, "M_UNKNOWN", f"{exc.destination} failed: {exc}")
    if "disabled" in exc.reason or "forbidden" in exc.reason:
        return MatrixError(403, "M_FORBIDDEN", f"Cannot reach {exc.destination}: {exc.reason}")
    return MatrixError(502, "M_UNKNOWN", f"Cannot reach {exc.destination}: {exc.reason}")


@attrs.define
class Queries:
    config: Config
    client: FederationClient
    profile: Profile
    aliases: Aliases
    membership: Membership

    @property
    def server_name(self) -> str:
        return self.config.server_name

    # -- profiles ------------------------------------------------------------------------------

    async def lookup_profile(self, user_id: str, field: str | None = None) -> dict[str, Any]:
        """``GET /profile/{userId}[/{field}]`` for any user: ours from the store, others asked."""
        parsed = UserId.try_parse(user_id)
        if parsed is None or parsed.server_name == self.server_name:
            if field is None:
                return self.profile.lookup(user_id)
            return self.profile.lookup_field(user_id, field)
        query: dict[str, str | int] = {"user_id": user_id}
        if field is not None:
            query["field"] = field
        try:
            answer = await self.client.request("GET", parsed.server_name, f"{QUERY}/profile",
                                               query=query)
        except RemoteError as exc:
            raise remote_failure(exc, "Profile") from None
        except FederationError as exc:
            # As conduwuit: a server we cannot reach has no profile to show.
            if "disabled" in exc.reason or "forbidden" in exc.reason:
                raise remote_failure(exc, "Profile") from None
            raise not_found(f"Profile not found: {exc.destination} could not be reached "
                            f"({exc.reason})") from None
        if not isinstance(answer, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{parsed.server_name} sent a broken profile")
        profile = {k: v for k, v in answer.items() if v is not None}
        if field is not None:
            if field not in profile:
                raise not_found(f"{user_id} has no profile field {field!r}")
            return {field: profile[field]}
        return profile

    def answer_profile(self, user_id: str, field: str | None) -> dict[str, Any]:
        """Inbound ``query/profile`` about one of our users."""
        if not self.config.allow_inbound_profile_lookup_federation_requests:
            raise MatrixError(403, "M_FORBIDDEN",
                              "Profile lookup over federation is disabled on this server")
        parsed = UserId.try_parse(user_id)
        if parsed is None:
            raise invalid_param(f"{user_id!r} is not a valid user id")
        if parsed.server_name != self.server_name:
            raise invalid_param(f"{user_id} is not a user of this server")
        if field is None:
            return self.profile.lookup(user_id)
        return self.profile.lookup_field(user_id, field)

    # -- room aliases --------------------------------------------------------------------------

    async def resolve_alias(self, alias: str) -> dict[str, Any]:
        """``{"room_id", "servers"}`` for any alias: ours from the store, others asked."""
        parsed = RoomAlias.try_parse(alias)
        if parsed is None:
            raise invalid_param(f"{alias!r} is not a valid room alias")
        if parsed.server_name == self.server_name:
            return self.local_alias(alias)
        try:
            answer = await self.client.request("GET", parsed.server_name, f"{QUERY}/directory",
                                               query={"room_alias": alias})
        except (FederationError, RemoteError) as exc:
            raise remote_failure(exc, "Room alias") from None
        room_id = answer.get("room_id") if isinstance(answer, dict) else None
        servers = answer.get("servers") if isinstance(answer, dict) else None
        if not isinstance(room_id, str) or not isinstance(servers, list):
            raise MatrixError(502, "M_UNKNOWN", f"{parsed.server_name} sent a broken alias answer")
        servers = [s for s in servers if isinstance(s, str)]
        if parsed.server_name not in servers:
            servers.append(parsed.server_name)
        return {"room_id": room_id, "servers": servers}

    def local_alias(self, alias: str) -> dict[str, Any]:
        """One of our aliases with the servers likely to hold its room (ours first)."""
        room_id = self.aliases.resolve(alias)
        if room_id is None:
            raise not_found("Room alias not found")
        servers = [self.server_name]
        servers.extend(s for s in self.membership.servers(room_id) if s != self.server_name)
        return {"room_id": room_id, "servers": servers}

    # -- devices and keys ----------------------------------------------------------------------

    async def user_devices(self, user_id: str) -> dict[str, Any]:
        """A remote user's devices (``GET /user/devices/{userId}`` on their server)."""
        parsed = UserId.try_parse(user_id)
        if parsed is None:
            raise invalid_param(f"{user_id!r} is not a valid user id")
        try:
            answer: dict[str, Any] = await self.client.request(
                "GET", parsed.server_name,
                f"/_matrix/federation/v1/user/devices/{path_segment(user_id)}")
        except (FederationError, RemoteError) as exc:
            raise remote_failure(exc, "Devices") from None
        return answer

    async def keys_query(self, server: str,
                         device_keys: Mapping[str, list[str]]) -> dict[str, Any]:
        """``POST /user/keys/query`` on ``server`` for some of its users."""
        try:
            answer: dict[str, Any] = await self.client.request(
                "POST", server, "/_matrix/federation/v1/user/keys/query",
                body={"device_keys": dict(device_keys)})
        except (FederationError, RemoteError) as exc:
            raise remote_failure(exc, "Keys") from None
        return answer

    async def keys_claim(self, server: str,
                         one_time_keys: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
        """``POST /user/keys/claim`` on ``server`` for some of its users' devices."""
        try:
            answer: dict[str, Any] = await self.client.request(
                "POST", server, "/_matrix/federation/v1/user/keys/claim",
                body={"one_time_keys": {u: dict(d) for u, d in one_time_keys.items()}})
        except (FederationError, RemoteError) as exc:
            raise remote_failure(exc, "Keys") from None
        return answer
