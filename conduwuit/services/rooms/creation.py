"""``createRoom``: the spec's sequence of initial events, with conduwuit's extras."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import attrs

from conduwuit.config import Config
from conduwuit.errors import MatrixError
from conduwuit.protocol.ids import UserId
from conduwuit.protocol.room_versions import ROOM_VERSIONS, RoomVersion
from conduwuit.services.profile import Profile
from conduwuit.services.users import Users

from .actions import MembershipActions
from .aliases import Aliases
from .directory import Directory
from .timeline import Draft, Timeline

PRESETS = ("private_chat", "public_chat", "trusted_private_chat")
# conduwuit: on new public rooms only moderators may start calls.
_CALL_EVENTS = ("m.call.invite", "org.matrix.msc3401.call", "org.matrix.msc3401.call.member")


@attrs.frozen
class CreateRequest:
    body: Mapping[str, Any]

    def get_str(self, key: str) -> str | None:
        value = self.body.get(key)
        if value is not None and not isinstance(value, str):
            raise MatrixError(400, "M_BAD_JSON", f"'{key}' must be a string")
        return value

    def get_obj(self, key: str) -> dict[str, Any]:
        value = self.body.get(key, {})
        if not isinstance(value, Mapping):
            raise MatrixError(400, "M_BAD_JSON", f"'{key}' must be an object")
        return dict(value)

    def get_list(self, key: str) -> list[Any]:
        value = self.body.get(key, [])
        if not isinstance(value, list):
            raise MatrixError(400, "M_BAD_JSON", f"'{key}' must be a list")
        return value


@attrs.define
class RoomCreation:
    config: Config
    users: Users
    profile: Profile
    timeline: Timeline
    aliases: Aliases
    directory: Directory
    actions: MembershipActions  # invites go through it: remote invitees need their server

    async def create(self, creator: str, body: Mapping[str, Any]) -> str:
        request = CreateRequest(body)
        if not self.config.allow_room_creation and not self.users.is_admin(creator):
            raise MatrixError(403, "M_FORBIDDEN", "Room creation is disabled on this server")
        version = self._version(request)
        preset = self._preset(request)
        alias = self._alias(request, creator)
        invites = self._invites(request)
        initial_state = self._initial_state(request)
        room_id = self._custom_room_id(request, version)
        creation = request.get_obj("creation_content")
        creation.pop("room_version", None)
        if preset == "trusted_private_chat" and version.privileged_creators:
            creation["additional_creators"] = sorted(set(invites))

        room = await self.timeline.create(version, creator, creation, room_id)
        await self._member(room, creator, creator, "join")
        await self._state(room, creator, "m.room.power_levels",
                          self._power_levels(request, creator, preset, invites, version))
        if alias is not None:
            self.aliases.create(alias, room, creator)
            await self._state(room, creator, "m.room.canonical_alias", {"alias": alias})
        await self._preset_state(room, creator, preset)
        for event_type, state_key, content in initial_state:
            await self._state(room, creator, event_type, content, state_key)
        for key, event_type in (("name", "m.room.name"), ("topic", "m.room.topic")):
            text = request.get_str(key)
            if text:
                await self._state(room, creator, event_type, {key: text})
        is_direct = request.body.get("is_direct") is True
        for invitee in invites:
            await self.actions.invite(room, creator, invitee, is_direct=is_direct)
        if request.get_str("visibility") == "public":
            self.directory.publish(room, True)
        return room

    # --- request checks ------------------------------------------------------------

    def _version(self, request: CreateRequest) -> RoomVersion:
        wanted = request.body.get("room_version", self.config.default_room_version)
        version = ROOM_VERSIONS.get(str(wanted)) if isinstance(wanted, (str, int)) else None
        if version is None:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                              f"Room version {wanted!r} is not supported here")
        return version

    def _preset(self, request: CreateRequest) -> str:
        visibility = request.get_str("visibility") or "private"
        if visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
        preset = request.get_str("preset") or (
            "public_chat" if visibility == "public" else "private_chat")
        if preset not in PRESETS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown preset {preset!r}")
        return preset

    def _alias(self, request: CreateRequest, creator: str) -> str | None:
        name = request.get_str("room_alias_name")
        if not name:
            return None
        alias = f"#{name}:{self.config.server_name}"
        self.aliases.check_new(alias, creator)  # exclusive appservice namespaces too
        return alias

    def _invites(self, request: CreateRequest) -> list[str]:
        invites = request.get_list("invite")
        for user_id in invites:
            if not isinstance(user_id, str) or UserId.try_parse(user_id) is None:
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user id to invite: {user_id}")
        return list(dict.fromkeys(invites))

    def _initial_state(self, request: CreateRequest) -> list[tuple[str, str, dict[str, Any]]]:
        events = []
        for item in request.get_list("initial_state"):
            if not isinstance(item, Mapping) or not isinstance(item.get("type"), str) \
                    or not isinstance(item.get("content"), Mapping) \
                    or not isinstance(item.get("state_key", ""), str):
                raise MatrixError(400, "M_BAD_JSON",
                                  "initial_state items need type, content and a string state_key")
            if item["type"] == "m.room.encryption" and not self.config.allow_encryption:
                raise MatrixError(403, "M_FORBIDDEN", "Encryption is disabled on this server")
            events.append((item["type"], item.get("state_key", ""), dict(item["content"])))
        return events

    def _custom_room_id(self, request: CreateRequest, version: RoomVersion) -> str | None:
        wanted = request.get_str("room_id")
        if wanted is None:
            return None
        if version.room_id_is_create_hash:
            raise MatrixError(400, "M_INVALID_PARAM", "Room version 12 room ids are derived")
        localpart = wanted[1:].split(":", 1)[0] if wanted.startswith("!") else wanted
        if not localpart or any(c in localpart for c in ": \t\n/"):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid custom room id")
        self.aliases.check_new(f"#{localpart}:{self.config.server_name}")  # forbidden names
        return f"!{localpart}:{self.config.server_name}"

    # --- events --------------------------------------------------------------------

    def _power_levels(self, request: CreateRequest, creator: str, preset: str,
                      invites: list[str], version: RoomVersion) -> dict[str, Any]:
        users: dict[str, int] = {}
        if not version.privileged_creators:
            users[creator] = 100
            if preset == "trusted_private_chat":
                users.update(dict.fromkeys(invites, 100))
        events = {"m.room.name": 50, "m.room.power_levels": 100,
                  "m.room.history_visibility": 100, "m.room.canonical_alias": 50,
                  "m.room.avatar": 50, "m.room.tombstone": 100, "m.room.server_acl": 100,
                  "m.room.encryption": 100}
        if preset == "public_chat":
            events.update(dict.fromkeys(_CALL_EVENTS, 50))
        content: dict[str, Any] = {
            "users": users, "users_default": 0, "events": events, "events_default": 0,
            "state_default": 50, "ban": 50, "kick": 50, "redact": 50,
            "invite": 50 if preset == "public_chat" else 0,
            "notifications": {"room": 50},
        }
        override = request.get_obj("power_level_content_override")
        for key, value in override.items():
            if isinstance(value, Mapping) and isinstance(content.get(key), dict):
                content[key] = {**content[key], **copy.deepcopy(dict(value))}
            else:
                content[key] = copy.deepcopy(value)
        return content

    async def _preset_state(self, room: str, creator: str, preset: str) -> None:
        public = preset == "public_chat"
        await self._state(room, creator, "m.room.join_rules",
                          {"join_rule": "public" if public else "invite"})
        await self._state(room, creator, "m.room.history_visibility",
                          {"history_visibility": "shared"})
        if not public:
            await self._state(room, creator, "m.room.guest_access",
                              {"guest_access": "can_join"})

    async def _state(self, room: str, sender: str, event_type: str, content: dict[str, Any],
                     state_key: str = "") -> None:
        await self.timeline.send(room, Draft(sender, event_type, content, state_key))

    async def _member(self, room: str, sender: str, target: str, membership: str, *,
                      is_direct: bool = False) -> None:
        content: dict[str, Any] = {"membership": membership}
        if self.users.is_local(target) and self.users.exists(target):
            name, avatar = self.profile.displayname(target), self.profile.avatar_url(target)
            if name:
                content["displayname"] = name
            if avatar:
                content["avatar_url"] = avatar
        if is_direct:
            content["is_direct"] = True
        await self.timeline.send(room, Draft(sender, "m.room.member", content, target))
