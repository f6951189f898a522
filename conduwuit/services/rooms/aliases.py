"""Room aliases of this server: ``#name:server`` -> room id."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import attrs

from conduwuit.errors import MatrixError
from conduwuit.store import SEP, Store, join


@attrs.define
class Aliases:
    store: Store
    server_name: str
    forbidden_names: list[str] = attrs.field(factory=list)
    # Installed by the appservice service: raises M_EXCLUSIVE for (alias, user) when an
    # application service holds the alias exclusively; asks an AS about an unknown alias.
    claim_check: Callable[[str, str], None] | None = None
    on_unknown: Callable[[str], Awaitable[str | None]] | None = None

    def resolve(self, alias: str) -> str | None:
        raw = self.store.tree("alias_roomid").get(alias.encode())
        return raw.decode() if raw is not None else None

    async def resolve_asking(self, alias: str) -> str | None:
        """Like :meth:`resolve`, but an unknown alias in an application service's
        namespace is first asked of that AS (it may create the room)."""
        room_id = self.resolve(alias)
        if room_id is None and self.on_unknown is not None:
            room_id = await self.on_unknown(alias)
        return room_id

    def check_new(self, alias: str, user_id: str | None = None) -> None:
        """Raise unless ``alias`` is a free, allowed alias of this server (for
        ``user_id``: exclusive appservice namespaces)."""
        localpart, _, server = alias[1:].partition(":")
        if not alias.startswith("#") or not localpart or server != self.server_name:
            raise MatrixError(400, "M_INVALID_PARAM",
                              f"Room aliases here look like #name:{self.server_name}")
        if any(c in localpart for c in ": \t\n") or len(alias.encode()) > 255:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid room alias")
        if any(re.search(pattern, localpart) for pattern in self.forbidden_names):
            raise MatrixError(400, "M_FORBIDDEN", "This room alias is not allowed")
        if self.resolve(alias) is not None:
            raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")
        if user_id is not None and self.claim_check is not None:
            self.claim_check(alias, user_id)

    def create(self, alias: str, room_id: str, user_id: str) -> None:
        self.check_new(alias, user_id)
        with self.store.batch() as batch:
            batch.put("alias_roomid", alias.encode(), room_id.encode())
            batch.put("roomid_alias", join(room_id, alias), b"")
            batch.put("alias_userid", alias.encode(), user_id.encode())

    def delete(self, alias: str) -> None:
        room_id = self.resolve(alias)
        if room_id is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room alias")
        with self.store.batch() as batch:
            batch.delete("alias_roomid", alias.encode())
            batch.delete("roomid_alias", join(room_id, alias))
            batch.delete("alias_userid", alias.encode())

    def creator(self, alias: str) -> str | None:
        raw = self.store.tree("alias_userid").get(alias.encode())
        return raw.decode() if raw is not None else None

    def of_room(self, room_id: str) -> list[str]:
        prefix = join(room_id) + SEP
        return [k[len(prefix):].decode() for k in self.store.tree("roomid_alias").keys(prefix)]

    def all(self) -> list[tuple[str, str]]:
        """Every local alias with its room id (the admin room lists them)."""
        return [(key.decode(), value.decode())
                for key, value in self.store.tree("alias_roomid").iter()]

    def violating(self) -> list[str]:
        """Existing aliases that ``forbidden_alias_names`` now matches (startup warning)."""
        return [alias for alias, _ in self.all()
                if any(re.search(p, alias[1:].partition(":")[0]) for p in self.forbidden_names)]
