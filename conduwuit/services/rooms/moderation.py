"""Server-side room moderation decided by the admins: banned rooms and rooms whose
incoming federation is switched off.

A banned room can no longer be joined, knocked on or invited into by anyone of this
server, and invites to it from other servers are refused; the admin command that bans
it also makes every local member leave. Both lists are small and read on the hot paths
(joins, invites, inbound PDUs), so checks are point reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from conduwuit.errors import MatrixError
from conduwuit.store import Store

BANNED = "bannedroomids"
DISABLED = "disabledroomids"

# Called with the user id when a local user tries to join a banned room
# (auto_deactivate_banned_room_attempts wires account deactivation here).
BannedAttempt = Callable[[str], Awaitable[None]]


@attrs.define
class RoomModeration:
    store: Store
    on_banned_attempt: list[BannedAttempt] = attrs.field(factory=list)

    # --- banned rooms ------------------------------------------------------------------

    def is_banned(self, room_id: str) -> bool:
        return room_id.encode() in self.store.tree(BANNED)

    def set_banned(self, room_id: str, banned: bool) -> None:
        tree = self.store.tree(BANNED)
        if banned:
            tree.put(room_id.encode(), b"")
        else:
            tree.delete(room_id.encode())

    def banned_rooms(self) -> list[str]:
        return [key.decode() for key in self.store.tree(BANNED).keys(b"")]

    async def check_not_banned(self, room_id: str, user_id: str | None = None) -> None:
        """403 for a banned room; ``user_id`` is the local user who tried to join it."""
        if not self.is_banned(room_id):
            return
        if user_id is not None:
            for callback in self.on_banned_attempt:
                await callback(user_id)
        raise MatrixError(403, "M_FORBIDDEN", "This room is banned on this homeserver")

    # --- incoming federation ----------------------------------------------------------

    def federation_disabled(self, room_id: str) -> bool:
        return room_id.encode() in self.store.tree(DISABLED)

    def set_federation_disabled(self, room_id: str, disabled: bool) -> None:
        tree = self.store.tree(DISABLED)
        if disabled:
            tree.put(room_id.encode(), b"")
        else:
            tree.delete(room_id.encode())

    def disabled_rooms(self) -> list[str]:
        return [key.decode() for key in self.store.tree(DISABLED).keys(b"")]
