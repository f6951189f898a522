"""Membership indexes: the rooms of each user and the members of each room.

These are derived from ``m.room.member`` state and written in the same batch
as the event that changes them, so they never disagree with the timeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import orjson

from conduwuit.services.cache import LruCache
from conduwuit.store import SEP, Store, WriteBatch, from_u64_be, join, u64_be

JOIN, INVITE, LEAVE, BAN, KNOCK = "join", "invite", "leave", "ban", "knock"


def _server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1]


@attrs.frozen
class MembershipChange:
    count: int
    membership: str


@attrs.define
class Membership:
    store: Store
    # room_id -> servers with joined members: read on every local send (the federation
    # sender's destinations); dropped whenever a membership of the room is staged.
    _servers: LruCache[str, list[str]] = attrs.field(factory=lambda: LruCache(10_000))

    # --- writing (inside the event's batch) ----------------------------------------

    def stage(self, batch: WriteBatch, room_id: str, user_id: str, membership: str,
              count: int, stripped: list[dict[str, Any]] | None = None) -> None:
        user_room, room_user = join(user_id, room_id), join(room_id, user_id)
        # Readers while the batch is built still see the old servers; drop them again
        # once it is written.
        self._servers.pop(room_id)
        batch.on_commit(lambda: self._servers.pop(room_id))
        batch.put("userroomid_membership", user_room, u64_be(count) + membership.encode())
        batch.put("roomuserid_membership", room_user, membership.encode())
        if membership == JOIN:
            batch.put("userroomid_joined", user_room, b"")
            batch.put("roomuserid_joined", room_user, b"")
            batch.put("roomserverids", join(room_id, _server_of(user_id)), b"")
        else:
            batch.delete("userroomid_joined", user_room)
            batch.delete("roomuserid_joined", room_user)
            if self._last_joined_from_server(room_id, user_id):
                batch.delete("roomserverids", join(room_id, _server_of(user_id)))
        if membership in (INVITE, KNOCK) and stripped is not None:
            batch.put("userroomid_strippedstate", user_room, orjson.dumps(stripped))
        else:
            batch.delete("userroomid_strippedstate", user_room)

    def forget(self, user_id: str, room_id: str) -> None:
        """Drop a left room from the user's lists (``/forget``)."""
        with self.store.batch() as batch:
            batch.delete("userroomid_membership", join(user_id, room_id))
            batch.delete("userroomid_strippedstate", join(user_id, room_id))

    # --- reading -------------------------------------------------------------------

    def membership(self, room_id: str, user_id: str) -> str | None:
        raw = self.store.tree("roomuserid_membership").get(join(room_id, user_id))
        return raw.decode() if raw is not None else None

    def is_joined(self, room_id: str, user_id: str) -> bool:
        return join(room_id, user_id) in self.store.tree("roomuserid_joined")

    def joined_rooms(self, user_id: str) -> list[str]:
        prefix = join(user_id) + SEP
        return [k[len(prefix):].decode() for k in self.store.tree("userroomid_joined").keys(prefix)]

    def joined_members(self, room_id: str) -> list[str]:
        prefix = join(room_id) + SEP
        return [k[len(prefix):].decode() for k in self.store.tree("roomuserid_joined").keys(prefix)]

    def joined_count(self, room_id: str) -> int:
        return self.store.tree("roomuserid_joined").count(join(room_id) + SEP)

    def members(self, room_id: str) -> list[tuple[str, str]]:
        """Every (user id, membership) this server knows in the room, invites included."""
        prefix = join(room_id) + SEP
        return [(k[len(prefix):].decode(), v.decode())
                for k, v in self.store.tree("roomuserid_membership").iter(prefix)]

    def servers(self, room_id: str) -> list[str]:
        cached = self._servers.get(room_id)
        if cached is not None:
            return list(cached)
        prefix = join(room_id) + SEP
        found = [k[len(prefix):].decode() for k in self.store.tree("roomserverids").keys(prefix)]
        self._servers.put(room_id, found)
        return list(found)

    def rooms_of(self, user_id: str) -> Iterator[tuple[str, MembershipChange]]:
        """Every room the user has (not forgotten) membership in, with its latest change."""
        prefix = join(user_id) + SEP
        for key, raw in self.store.tree("userroomid_membership").iter(prefix):
            yield key[len(prefix):].decode(), MembershipChange(from_u64_be(raw[:8]),
                                                               raw[8:].decode())

    def change(self, user_id: str, room_id: str) -> MembershipChange | None:
        """The user's latest membership change in the room; None if none or forgotten."""
        raw = self.store.tree("userroomid_membership").get(join(user_id, room_id))
        return MembershipChange(from_u64_be(raw[:8]), raw[8:].decode()) if raw is not None \
            else None

    def stripped_state(self, user_id: str, room_id: str) -> list[dict[str, Any]]:
        raw = self.store.tree("userroomid_strippedstate").get(join(user_id, room_id))
        return orjson.loads(raw) if raw is not None else []

    def shares_room(self, user_a: str, user_b: str) -> bool:
        rooms_b = set(self.joined_rooms(user_b))
        return any(room in rooms_b for room in self.joined_rooms(user_a))

    def _last_joined_from_server(self, room_id: str, user_id: str) -> bool:
        server = _server_of(user_id)
        return not any(member != user_id and _server_of(member) == server
                       for member in self.joined_members(room_id))
