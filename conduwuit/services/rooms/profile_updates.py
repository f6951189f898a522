"""Profile changes shown in rooms: a new display name or avatar becomes a member event.

Clients (and other servers) read names and avatars from ``m.room.member`` state, so
when a local user changes theirs, each room they are joined to gets a fresh join
event carrying the new value, as Synapse and conduwuit do. A room that refuses the
event (power levels, a ban racing the change) is skipped, not fatal.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from conduwuit.errors import MatrixError

from .membership import Membership
from .state import RoomState, member_key
from .timeline import Draft, Timeline

log = logging.getLogger(__name__)

SHOWN_IN_ROOMS = {"displayname": "displayname", "avatar_url": "avatar_url"}


@attrs.define
class ProfileUpdates:
    membership: Membership
    state: RoomState
    timeline: Timeline

    async def on_profile_change(self, user_id: str, key: str, value: Any) -> None:
        field = SHOWN_IN_ROOMS.get(key)
        if field is None:
            return
        for room_id in self.membership.joined_rooms(user_id):
            member = self.state.get(room_id, member_key(user_id))
            if member is None or member.membership != "join":
                continue
            content = dict(member.content)
            if content.get(field) == value or (value is None and field not in content):
                continue
            if value is None:
                content.pop(field, None)
            else:
                content[field] = value
            try:
                await self.timeline.send(room_id, Draft(user_id, "m.room.member", content,
                                                        user_id))
            except MatrixError as refused:
                log.info("profile change of %s not shown in %s: %s", user_id, room_id,
                         refused.error)
