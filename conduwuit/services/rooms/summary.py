"""Room summaries: what the room directory, ``/room_summary`` and ``/hierarchy`` show.

The fields are the spec's ``PublishedRoomsChunk`` (``public_rooms_chunk.yaml``) and its
extension ``RoomSummary`` (``room_summary.yaml``), all read from the current state.
Absent values are left out rather than sent as ``null``.
"""

from __future__ import annotations

from typing import Any

import attrs

from conduwuit.errors import MatrixError

from .events_db import EventStore
from .membership import BAN, INVITE, JOIN, Membership
from .state import (
    AVATAR,
    CANONICAL_ALIAS,
    CREATE,
    ENCRYPTION,
    JOIN_RULES,
    NAME,
    TOPIC,
    RoomState,
    member_key,
)
from .visibility import WORLD_READABLE, Visibility

PUBLIC, KNOCK, KNOCK_RESTRICTED, RESTRICTED = "public", "knock", "knock_restricted", "restricted"


@attrs.define
class RoomSummaries:
    state: RoomState
    events: EventStore
    membership: Membership
    visibility: Visibility

    def known(self, room_id: str) -> bool:
        return self.events.room_version(room_id) is not None

    def chunk(self, room_id: str) -> dict[str, Any]:
        """The ``PublishedRoomsChunk`` of a room this server knows."""
        body: dict[str, Any] = {
            "room_id": room_id,
            "num_joined_members": self.membership.joined_count(room_id),
            "world_readable": self.visibility.current_visibility(room_id) == WORLD_READABLE,
            "guest_can_join": self.visibility.guest_can_join(room_id),
            "join_rule": self.join_rule(room_id),
        }
        for key, pair, field in (("name", NAME, "name"), ("topic", TOPIC, "topic"),
                                 ("avatar_url", AVATAR, "url"),
                                 ("canonical_alias", CANONICAL_ALIAS, "alias")):
            value = self.state.content(room_id, pair).get(field)
            if isinstance(value, str) and value:
                body[key] = value
        room_type = self.room_type(room_id)
        if room_type is not None:
            body["room_type"] = room_type
        return body

    def summary(self, room_id: str) -> dict[str, Any]:
        """The ``RoomSummary``: the chunk plus version, encryption and restricted rooms."""
        body = self.chunk(room_id)
        version = self.events.room_version(room_id)
        if version is not None:
            body["room_version"] = version.identifier
        algorithm = self.state.content(room_id, ENCRYPTION).get("algorithm")
        if isinstance(algorithm, str):
            body["encryption"] = algorithm
        allowed = self.allowed_rooms(room_id)
        if allowed:
            body["allowed_room_ids"] = allowed
        return body

    def join_rule(self, room_id: str) -> str:
        rule = self.state.content(room_id, JOIN_RULES).get("join_rule")
        # Without a join rules event nobody can join uninvited.
        return rule if isinstance(rule, str) else "invite"

    def room_type(self, room_id: str) -> str | None:
        value = self.state.content(room_id, CREATE).get("type")
        return value if isinstance(value, str) else None

    def allowed_rooms(self, room_id: str) -> list[str]:
        content = self.state.content(room_id, JOIN_RULES)
        if content.get("join_rule") not in (RESTRICTED, KNOCK_RESTRICTED):
            return []
        allow = content.get("allow")
        if not isinstance(allow, list):
            return []
        return [entry["room_id"] for entry in allow if isinstance(entry, dict)
                and entry.get("type") == "m.room_membership"
                and isinstance(entry.get("room_id"), str)]

    def membership_of(self, room_id: str, user_id: str) -> str | None:
        event = self.state.get(room_id, member_key(user_id))
        return event.membership if event is not None else None

    # --- who may see a summary -----------------------------------------------------

    def accessible(self, room_id: str, user_id: str | None, *, is_guest: bool = False) -> bool:
        """Whether a user (None: unauthenticated) may see the room's summary.

        The spec's list for ``/hierarchy``: members, invitees, anyone if the room is
        public, knockable or world-readable, and users in a room a restricted join rule
        allows; guests also where guests may join. Banned users see nothing.
        """
        rule = self.join_rule(room_id)
        world = self.visibility.current_visibility(room_id) == WORLD_READABLE
        if user_id is None:
            return rule in (PUBLIC, KNOCK, KNOCK_RESTRICTED) or world
        membership = self.membership.membership(room_id, user_id)
        if membership in (JOIN, INVITE):
            return True
        if membership == BAN:
            return False
        if rule in (PUBLIC, KNOCK, KNOCK_RESTRICTED) or world:
            return True
        if is_guest and self.visibility.guest_can_join(room_id):
            return True
        return any(self.membership.is_joined(room, user_id)
                   for room in self.allowed_rooms(room_id))

    def user_summary(self, room_id: str, user_id: str | None, *,
                     is_guest: bool = False) -> dict[str, Any]:
        """``GET /room_summary``: 404 for rooms we do not know or the user may not see."""
        if not self.known(room_id) or not self.accessible(room_id, user_id, is_guest=is_guest):
            # One answer for both, so that the endpoint does not reveal private rooms.
            raise MatrixError(404, "M_NOT_FOUND", "Room not found or not accessible to you")
        body = self.summary(room_id)
        if user_id is not None:
            body["membership"] = self.membership_of(room_id, user_id) or "leave"
        return body
