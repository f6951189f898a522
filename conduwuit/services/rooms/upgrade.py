"""Room upgrades (``POST /rooms/{roomId}/upgrade``), in the spec's order:

1. the user must be able to send ``m.room.tombstone`` in the old room;
2. a new room is created whose ``m.room.create`` names the old one as ``predecessor``
   and keeps its ``type`` (and ``m.federate: false``);
3. transferable state is copied: the spec's list, plus ``m.space.*`` state and the
   canonical alias (once the aliases have moved);
4. local aliases move to the new room, and so does a directory listing;
5. ``m.room.tombstone`` goes into the old room;
6. the old room's ``events_default`` and ``invite`` are raised to
   max(50, users_default + 1) so that it goes quiet.

Power levels are copied with their values normalised to integers (older versions
accepted strings). In a version with privileged creators (v12) the upgrader and the
``additional_creators`` are the new creators and may not be listed in ``users``; old
creators who are not new creators keep a level of 100. If the upgrader's copied
level is too low to send the copied state, the first power-levels event lifts it and
the copied levels are restored once the state is in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs

from conduwuit.errors import MatrixError
from conduwuit.protocol.ids import UserId
from conduwuit.protocol.power_levels import (
    NAMED_LEVELS,
    PowerLevels,
    read_power_level_content,
    room_creators,
)
from conduwuit.protocol.room_versions import ROOM_VERSIONS, RoomVersion
from conduwuit.services.profile import Profile

from .aliases import Aliases
from .directory import Directory
from .events_db import EventStore
from .membership import Membership
from .short import StateKey
from .state import CANONICAL_ALIAS, CREATE, POWER_LEVELS, RoomState
from .timeline import Draft, Timeline

log = logging.getLogger(__name__)

TOMBSTONE = "m.room.tombstone"
# The spec's recommended transferable state, power levels apart (they go first).
TRANSFERABLE = ("m.room.server_acl", "m.room.encryption", "m.room.name", "m.room.avatar",
                "m.room.topic", "m.room.guest_access", "m.room.history_visibility",
                "m.room.join_rules")
TRANSFERABLE_PREFIXES = ("m.space.",)  # any state key: children and parents of spaces
OLD_CREATOR_LEVEL = 100


@attrs.define
class RoomUpgrade:
    profile: Profile
    events: EventStore
    state: RoomState
    membership: Membership
    timeline: Timeline
    aliases: Aliases
    directory: Directory

    async def upgrade(self, room_id: str, user_id: str, new_version: object,
                      additional_creators: object = None) -> str:
        version = self._version(new_version)
        old_version = self.events.room_version(room_id)
        if old_version is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        extra = _additional_creators(additional_creators, user_id)
        if not self.membership.is_joined(room_id, user_id):
            raise MatrixError(403, "M_FORBIDDEN", "You are not in this room")
        old_state = self.state.current(room_id)
        old_create = self._event(old_state, CREATE)
        old_power = PowerLevels.from_state(self._event(old_state, POWER_LEVELS), old_create,
                                           old_version)
        if old_power.user_level(user_id) < old_power.event_level(TOMBSTONE, True):
            raise MatrixError(403, "M_FORBIDDEN", "You need the power to send "
                              "m.room.tombstone events to upgrade this room")

        new_room = await self.timeline.create(
            version, user_id, self._create_content(room_id, old_create, version, extra))
        await self._send(new_room, user_id, "m.room.member", self._join_content(user_id),
                         user_id)
        creators = frozenset({user_id, *extra}) if version.privileged_creators else frozenset()
        old_creators = room_creators(old_create, old_version) \
            if old_version.privileged_creators else frozenset()
        levels = self._levels(old_state, old_version, version, creators, old_creators)
        copied = self._copied_state(old_state)
        if levels is not None:
            await self._send_levels(new_room, user_id, levels, version, copied)
        for (event_type, state_key), content in copied:
            try:
                await self._send(new_room, user_id, event_type, content, state_key)
            except MatrixError as refused:
                log.warning("upgrade of %s: %s %r not copied: %s", room_id, event_type,
                            state_key, refused.error)
        if levels is not None and levels.lifted:
            await self._send(new_room, user_id, POWER_LEVELS[0], levels.content)

        moved = self._move_aliases(room_id, new_room, user_id)
        await self._move_canonical_alias(room_id, new_room, user_id, moved)
        if self.directory.is_public(room_id):
            self.directory.publish(new_room, True)
            self.directory.publish(room_id, False)
        await self._send(room_id, user_id, TOMBSTONE,
                         {"body": "This room has been replaced", "replacement_room": new_room})
        await self._quieten(room_id, user_id, old_version)
        log.info("%s upgraded %s to %s (version %s)", user_id, room_id, new_room,
                 version.identifier)
        return new_room

    # --- the new room ----------------------------------------------------------------

    @staticmethod
    def _version(new_version: object) -> RoomVersion:
        if not isinstance(new_version, str):
            raise MatrixError(400, "M_MISSING_PARAM" if new_version is None else "M_BAD_JSON",
                              "'new_version' must be given as a string")
        version = ROOM_VERSIONS.get(new_version)
        if version is None:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                              f"Room version {new_version!r} is not supported here")
        return version

    def _create_content(self, room_id: str, old_create: Any, version: RoomVersion,
                        extra: list[str]) -> dict[str, Any]:
        old = old_create.content if old_create is not None else {}
        predecessor: dict[str, Any] = {"room_id": room_id}
        last = self.timeline.leaves(room_id)
        if last:
            predecessor["event_id"] = last[0]  # the last known event (optional from v12)
        content: dict[str, Any] = {"predecessor": predecessor}
        if isinstance(old.get("type"), str):
            content["type"] = old["type"]
        if old.get("m.federate") is False:
            content["m.federate"] = False
        if version.privileged_creators and extra:
            content["additional_creators"] = extra
        return content

    def _join_content(self, user_id: str) -> dict[str, Any]:
        content: dict[str, Any] = {"membership": "join"}
        name, avatar = self.profile.displayname(user_id), self.profile.avatar_url(user_id)
        if name:
            content["displayname"] = name
        if avatar:
            content["avatar_url"] = avatar
        return content

    def _levels(self, old_state: dict[StateKey, str], old_version: RoomVersion,
                version: RoomVersion, creators: frozenset[str],
                old_creators: frozenset[str]) -> _Levels | None:
        event = self._event(old_state, POWER_LEVELS)
        if event is None and not old_creators:
            return None
        content = _normalised(event.content if event is not None else {}, old_version)
        users: dict[str, int] = dict(content.get("users", {}))
        for creator in old_creators - creators:
            users.setdefault(creator, OLD_CREATOR_LEVEL)
        for creator in creators:
            users.pop(creator, None)
        content["users"] = users
        return _Levels(content)

    async def _send_levels(self, room: str, user_id: str, levels: _Levels,
                           version: RoomVersion, copied: list[tuple[StateKey, Any]]) -> None:
        content = levels.content
        if not version.privileged_creators:
            power = PowerLevels.from_state(None, None, version)
            stated = read_power_level_content(content, version)
            events = stated.events
            state_default = stated.named.get("state_default", power.state_default)
            needed = max([events.get(POWER_LEVELS[0], state_default),
                          events.get(CANONICAL_ALIAS[0], state_default),
                          *(events.get(t, state_default) for (t, _), _ in copied),
                          *stated.users.values()])
            users = stated.users
            own = users.get(user_id, stated.named.get("users_default", 0))
            if own < needed:
                levels.lifted = True
                content = {**content, "users": {**users, user_id: needed}}
        await self._send(room, user_id, POWER_LEVELS[0], content)

    def _copied_state(self, old_state: dict[StateKey, str]) -> list[tuple[StateKey, Any]]:
        copied: list[tuple[StateKey, Any]] = []
        for pair, event_id in sorted(old_state.items()):
            event_type, state_key = pair
            wanted = (event_type in TRANSFERABLE and state_key == "") or \
                event_type.startswith(TRANSFERABLE_PREFIXES)
            event = self.events.get(event_id) if wanted else None
            if event is not None:
                copied.append((pair, dict(event.content)))
        order = {t: i for i, t in enumerate(TRANSFERABLE)}
        # The spec's list in its order, then the m.space.* state.
        copied.sort(key=lambda item: order.get(item[0][0], len(order)))
        return copied

    # --- aliases ---------------------------------------------------------------------

    def _move_aliases(self, room_id: str, new_room: str, user_id: str) -> list[str]:
        moved = []
        for alias in self.aliases.of_room(room_id):
            creator = self.aliases.creator(alias) or user_id
            self.aliases.delete(alias)
            self.aliases.create(alias, new_room, creator)
            moved.append(alias)
        return moved

    async def _move_canonical_alias(self, room_id: str, new_room: str, user_id: str,
                                    moved: list[str]) -> None:
        old = dict(self.state.content(room_id, CANONICAL_ALIAS))
        if not old:
            return
        alias = old.get("alias")
        alt = old.get("alt_aliases")
        alt_list = [a for a in alt if isinstance(a, str)] if isinstance(alt, list) else []
        new: dict[str, Any] = {}
        if isinstance(alias, str) and alias in moved:
            new["alias"] = alias
        if alt_list:
            new["alt_aliases"] = [a for a in alt_list if a in moved]
        if new.get("alias") or new.get("alt_aliases"):
            await self._try_send(new_room, user_id, CANONICAL_ALIAS[0], new)
        # The old room no longer owns the moved aliases.
        remaining: dict[str, Any] = {}
        if isinstance(alias, str) and alias not in moved:
            remaining["alias"] = alias
        if alt_list:
            remaining["alt_aliases"] = [a for a in alt_list if a not in moved]
        if remaining != old:
            await self._try_send(room_id, user_id, CANONICAL_ALIAS[0], remaining)

    # --- the old room ----------------------------------------------------------------

    async def _quieten(self, room_id: str, user_id: str, old_version: RoomVersion) -> None:
        event = self.state.get(room_id, POWER_LEVELS)
        if event is None:
            return
        content = _normalised(event.content, old_version)
        users_default = content.get("users_default", 0)
        level = max(50, int(users_default) + 1)
        if content.get("events_default") == level and content.get("invite") == level:
            return
        await self._try_send(room_id, user_id, POWER_LEVELS[0],
                             {**content, "events_default": level, "invite": level})

    # --- helpers ---------------------------------------------------------------------

    def _event(self, state: dict[StateKey, str], pair: StateKey) -> Any:
        return self.events.get(state[pair]) if pair in state else None

    async def _send(self, room: str, user_id: str, event_type: str, content: Mapping[str, Any],
                    state_key: str = "") -> None:
        await self.timeline.send(room, Draft(user_id, event_type, dict(content), state_key))

    async def _try_send(self, room: str, user_id: str, event_type: str,
                        content: Mapping[str, Any]) -> None:
        try:
            await self._send(room, user_id, event_type, content)
        except MatrixError as refused:
            log.warning("upgrade: %s in %s not sent: %s", event_type, room, refused.error)


@attrs.define
class _Levels:
    content: dict[str, Any]
    lifted: bool = False


def _normalised(content: Mapping[str, Any], version: RoomVersion) -> dict[str, Any]:
    """Power-levels content with every level an integer (v1-v9 allowed strings)."""
    stated = read_power_level_content(content, version)
    levelled = ("events", "notifications", "users", *NAMED_LEVELS)
    body: dict[str, Any] = {k: v for k, v in content.items() if k not in levelled}
    body.update(stated.named)
    body["events"] = dict(stated.events)
    body["users"] = dict(stated.users)
    if stated.notifications or "notifications" in content:
        body["notifications"] = dict(stated.notifications)
    return body


def _additional_creators(value: object, user_id: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise MatrixError(400, "M_BAD_JSON", "additional_creators must be a list of user ids")
    for user in value:
        if UserId.try_parse(user) is None:
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user id {user!r}")
    return sorted(set(value) - {user_id})
