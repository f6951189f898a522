"""The client-facing room directory: local aliases and the published room list.

``Aliases`` and ``Directory`` hold the data; this adds who may change what, and the
``/publicRooms`` listing (search, room types, pagination) built from room summaries.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import attrs

from conduwuit.config import Config
from conduwuit.errors import MatrixError
from conduwuit.protocol.ids import RoomAlias, is_valid_server_name
from conduwuit.protocol.power_levels import PowerLevels
from conduwuit.services.users import Users

from .aliases import Aliases
from .directory import Directory
from .events_db import EventStore
from .membership import Membership
from .state import CANONICAL_ALIAS, CREATE, POWER_LEVELS, RoomState
from .summary import RoomSummaries
from .timeline import Draft, Timeline
from .visibility import Visibility

log = logging.getLogger(__name__)

DEFAULT_PUBLIC_ROOMS_LIMIT = 100
MAX_PUBLIC_ROOMS_LIMIT = 500


@attrs.frozen
class PublicRoomsQuery:
    limit: int | None = None
    since: str | None = None
    search: str | None = None
    room_types: list[str | None] | None = None
    # Rooms to list instead of the main directory (appservice network directories).
    room_ids: list[str] | None = None


@attrs.define
class RoomDirectory:
    config: Config
    users: Users
    aliases: Aliases
    directory: Directory
    events: EventStore
    state: RoomState
    membership: Membership
    timeline: Timeline
    visibility: Visibility
    summaries: RoomSummaries

    # --- aliases -------------------------------------------------------------------

    def resolve(self, alias: str) -> tuple[str, list[str]]:
        """``GET /directory/room/{alias}``: the room and servers that can help join it."""
        _parse_alias(alias)
        room_id = self.aliases.resolve(alias)
        if room_id is None:
            if not alias.endswith(f":{self.config.server_name}"):
                raise MatrixError(404, "M_NOT_FOUND",
                                  "Room alias not found (resolving aliases of other servers "
                                  "over federation is not available yet)")
            raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found")
        return room_id, self.servers(room_id)

    def servers(self, room_id: str) -> list[str]:
        """Servers with joined members, ours first (always listed: the alias is ours)."""
        ours = self.config.server_name
        others = sorted(s for s in self.membership.servers(room_id) if s != ours)
        return [ours, *others]

    def create_alias(self, alias: str, room_id: object, user_id: str) -> None:
        parsed = _parse_alias(alias)
        if not isinstance(room_id, str):
            raise MatrixError(400, "M_MISSING_PARAM" if room_id is None else "M_BAD_JSON",
                              "'room_id' must be given as a string")
        if parsed.server_name != self.config.server_name:
            raise MatrixError(400, "M_INVALID_PARAM",
                              f"Aliases here must end with :{self.config.server_name}")
        if any(re.search(p, parsed.localpart) for p in self.config.forbidden_alias_names):
            raise MatrixError(403, "M_FORBIDDEN", "This room alias is not allowed")
        if self.aliases.resolve(alias) is not None:
            raise MatrixError(409, "M_ROOM_IN_USE", f"Room alias {alias} already exists")
        if self.events.room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        self.aliases.create(alias, room_id, user_id)

    async def delete_alias(self, alias: str, user_id: str) -> None:
        """By the alias creator, a server admin, or who may set the room's canonical alias.

        The alias is also dropped from the room's ``m.room.canonical_alias`` when the
        user may change it (the spec's recommendation); the deletion stands either way.
        """
        _parse_alias(alias)
        room_id = self.aliases.resolve(alias)
        if room_id is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found")
        if not (self.aliases.creator(alias) == user_id or self.users.is_admin(user_id)
                or self.can_send_state(room_id, user_id, CANONICAL_ALIAS[0])):
            raise MatrixError(403, "M_FORBIDDEN", "You may not remove this room alias")
        self.aliases.delete(alias)
        await self._drop_from_canonical(room_id, alias, user_id)

    def room_aliases(self, room_id: str, user_id: str) -> list[str]:
        if self.events.room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        if not (self.visibility.can_see_state(room_id, user_id) or self.users.is_admin(user_id)):
            raise MatrixError(403, "M_FORBIDDEN", "You are not a member of the room")
        return sorted(self.aliases.of_room(room_id))

    def check_canonical_alias(self, room_id: str, content: Mapping[str, Any]) -> None:
        """``m.room.canonical_alias`` content: every alias must exist and lead here."""
        alias = content.get("alias")
        if alias is not None and not isinstance(alias, str):
            raise MatrixError(400, "M_BAD_JSON", "alias must be a string")
        alt = content.get("alt_aliases")
        if alt is not None and (not isinstance(alt, list)
                                or not all(isinstance(a, str) for a in alt)):
            raise MatrixError(400, "M_BAD_JSON", "alt_aliases must be a list of strings")
        named = ([alias] if alias else []) + list(alt or [])
        for name in named:
            if RoomAlias.try_parse(name) is None:
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid room alias {name!r}")
            if self.aliases.resolve(name) != room_id:
                why = "does not point to this room" \
                    if name.endswith(f":{self.config.server_name}") \
                    else "is another server's alias and cannot be checked without federation"
                raise MatrixError(400, "M_BAD_ALIAS", f"Room alias {name} {why}")

    async def _drop_from_canonical(self, room_id: str, alias: str, user_id: str) -> None:
        content = dict(self.state.content(room_id, CANONICAL_ALIAS))
        alt = content.get("alt_aliases")
        in_alt = isinstance(alt, list) and alias in alt
        if content.get("alias") != alias and not in_alt:
            return
        if content.get("alias") == alias:
            content.pop("alias")
        if isinstance(alt, list) and in_alt:
            content["alt_aliases"] = [a for a in alt if a != alias]
        try:
            await self.timeline.send(room_id, Draft(user_id, CANONICAL_ALIAS[0], content, ""))
        except MatrixError as refused:
            log.info("alias %s deleted; canonical alias of %s left as is: %s", alias, room_id,
                     refused.error)

    # --- publishing ----------------------------------------------------------------

    def is_published(self, room_id: str) -> bool:
        if self.events.room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Room not found")
        return self.directory.is_public(room_id)

    def set_published(self, room_id: str, user_id: str, visibility: object) -> None:
        """``PUT /directory/list/room``: room moderators (who may set the canonical alias)
        and server admins; with ``lockdown_public_room_directory`` only admins publish."""
        if visibility is None:
            visibility = "public"  # the spec's default
        if visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
        if self.events.room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Room not found")
        admin = self.users.is_admin(user_id)
        if not admin:
            if not self.membership.is_joined(room_id, user_id):
                raise MatrixError(403, "M_FORBIDDEN", "You are not in this room")
            if not self.can_send_state(room_id, user_id, CANONICAL_ALIAS[0]):
                raise MatrixError(403, "M_FORBIDDEN",
                                  "You need the power to change the room's canonical alias to "
                                  "change its directory listing")
        public = visibility == "public"
        if public and self.config.lockdown_public_room_directory and not admin:
            log.warning("%s tried to publish %s while lockdown_public_room_directory is on",
                        user_id, room_id)
            raise MatrixError(403, "M_FORBIDDEN",
                              "Only server admins may publish rooms to the room directory")
        self.directory.publish(room_id, public)
        if public:
            log.info("%s published %s in the room directory", user_id, room_id)

    def can_send_state(self, room_id: str, user_id: str, event_type: str) -> bool:
        version = self.events.room_version(room_id)
        if version is None:
            return False
        power = PowerLevels.from_state(self.state.get(room_id, POWER_LEVELS),
                                       self.state.get(room_id, CREATE), version)
        return power.user_level(user_id) >= power.event_level(event_type, True)

    # --- listing -------------------------------------------------------------------

    def is_remote(self, server: str | None) -> bool:
        """Whether a directory request names another server; refuses banned servers."""
        if server is None or server == self.config.server_name:
            return False
        if not is_valid_server_name(server):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid server name")
        patterns = [*self.config.forbidden_remote_room_directory_server_names,
                    *self.config.forbidden_remote_server_names]
        if any(re.search(p, server) for p in patterns):
            raise MatrixError(403, "M_FORBIDDEN", "That server is banned on this homeserver")
        if not self.config.allow_federation:
            raise MatrixError(403, "M_FORBIDDEN", "Federation is disabled on this server")
        return True

    def public_rooms(self, query: PublicRoomsQuery) -> dict[str, Any]:
        limit = DEFAULT_PUBLIC_ROOMS_LIMIT if query.limit is None \
            else max(0, min(MAX_PUBLIC_ROOMS_LIMIT, query.limit))
        offset = _parse_since(query.since, limit)
        term = query.search.lower() if query.search else None
        chunks = []
        listed = self.directory.public_rooms() if query.room_ids is None else query.room_ids
        for room_id in listed:
            if self.events.room_version(room_id) is None:
                continue
            chunk = self.summaries.chunk(room_id)
            if query.room_types is not None and chunk.get("room_type") not in query.room_types:
                continue
            if term is not None and not any(
                    term in str(chunk.get(key, "")).lower()
                    for key in ("name", "topic", "canonical_alias")):
                continue
            chunks.append(chunk)
        chunks.sort(key=lambda c: (-int(c["num_joined_members"]), str(c["room_id"])))
        page = chunks[offset:offset + limit]
        body: dict[str, Any] = {"chunk": page, "total_room_count_estimate": len(chunks)}
        if offset + limit < len(chunks) and limit > 0:
            body["next_batch"] = f"n{offset + limit}"
        if offset > 0:
            body["prev_batch"] = f"p{offset}"
        return body


def _parse_alias(alias: str) -> RoomAlias:
    parsed = RoomAlias.try_parse(alias)
    if parsed is None:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid room alias {alias!r}")
    return parsed


def _parse_since(since: str | None, limit: int) -> int:
    """``n<offset>`` continues forwards; ``p<offset>`` goes back one page from there."""
    if not since:
        return 0
    kind, digits = since[:1], since[1:]
    if kind not in ("n", "p") or not digits.isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid since token")
    offset = int(digits)
    return max(0, offset - limit) if kind == "p" else offset
