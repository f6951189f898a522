"""``POST /user_directory/search`` over this server's users.

A user is found if the search term occurs (case-insensitively) in their user id or
display name, and the searcher may know of them (the spec's minimum, as conduwuit
does it): they share a joined room, or the user is joined to a room that is public
(``public`` join rule or listed in the room directory) or world-readable. Deactivated
accounts are never listed. Users of other servers need federation and are not
searched yet.

Results are ranked: a display name or localpart that starts with the term first, then
users with a display name, then by user id.
"""

from __future__ import annotations

from typing import Any

import attrs

from conduwuit.errors import MatrixError

from .profile import Profile
from .rooms import Rooms
from .rooms.visibility import WORLD_READABLE
from .users import Users

DEFAULT_LIMIT = 10
MAX_LIMIT = 500


@attrs.define
class UserDirectory:
    users: Users
    profile: Profile
    rooms: Rooms

    def search(self, searcher: str, term: object, limit: object = None) -> dict[str, Any]:
        if not isinstance(term, str):
            raise MatrixError(400, "M_MISSING_PARAM" if term is None else "M_BAD_JSON",
                              "'search_term' must be given as a string")
        if limit is None:
            limit = DEFAULT_LIMIT
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise MatrixError(400, "M_BAD_JSON", "'limit' must be an integer")
        limit = max(0, min(MAX_LIMIT, limit))
        needle = term.strip().lower()
        shared_rooms = set(self.rooms.membership.joined_rooms(searcher))
        public_cache: dict[str, bool] = {}
        matches: list[tuple[tuple[int, int, str], dict[str, Any]]] = []
        for user_id in self.users.local_user_ids():
            name = self.profile.displayname(user_id)
            if needle not in user_id.lower() and (name is None or needle not in name.lower()):
                continue
            if self.users.is_deactivated(user_id):
                continue
            if not self._visible(user_id, shared_rooms, public_cache):
                continue
            entry: dict[str, Any] = {"user_id": user_id}
            if name:
                entry["display_name"] = name
            avatar = self.profile.avatar_url(user_id)
            if avatar:
                entry["avatar_url"] = avatar
            localpart = user_id[1:].split(":", 1)[0].lower()
            prefix = localpart.startswith(needle) or bool(name and name.lower().startswith(needle))
            matches.append(((0 if prefix else 1, 0 if name else 1, user_id), entry))
        matches.sort(key=lambda item: item[0])
        return {"results": [entry for _, entry in matches[:limit]],
                "limited": len(matches) > limit}

    def _visible(self, user_id: str, shared_rooms: set[str],
                 public_cache: dict[str, bool]) -> bool:
        for room_id in self.rooms.membership.joined_rooms(user_id):
            if room_id in shared_rooms:
                return True
            public = public_cache.get(room_id)
            if public is None:
                public = self._public(room_id)
                public_cache[room_id] = public
            if public:
                return True
        return False

    def _public(self, room_id: str) -> bool:
        rooms = self.rooms
        return (rooms.directory.is_public(room_id)
                or rooms.summaries.join_rule(room_id) == "public"
                or rooms.visibility.current_visibility(room_id) == WORLD_READABLE)
