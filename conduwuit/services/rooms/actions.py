"""Membership actions of local users: join, leave, invite, kick, ban, unban, knock, forget."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from conduwuit.config import Config
from conduwuit.errors import MatrixError
from conduwuit.protocol.ids import UserId
from conduwuit.protocol.power_levels import PowerLevels
from conduwuit.services.profile import Profile
from conduwuit.services.users import Users

from .aliases import Aliases
from .membership import BAN, INVITE, JOIN, KNOCK, LEAVE, Membership
from .moderation import RoomModeration
from .state import CREATE, GUEST_ACCESS, JOIN_RULES, POWER_LEVELS, RoomState
from .timeline import Countersign, Draft, Timeline

log = logging.getLogger(__name__)

_AUTHORISER = "join_authorised_via_users_server"


class RemoteRooms(Protocol):
    """Membership in rooms that live on other servers (over federation).

    Implemented by services/federation/membership.py and handed in by
    services/__init__.py, so that rooms never imports federation.
    """

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        """A remote alias: (room id, servers that may be in the room)."""

    def candidates(self, room_id: str, user_id: str, servers: Sequence[str]) -> list[str]:
        """Other servers that may be in the room: ``servers`` (via, the alias's), the
        inviter's, the room id's; never this one."""

    async def join(self, room_id: str, user_id: str, content: dict[str, Any],
                   servers: Sequence[str]) -> None:
        """make_join/send_join through one of ``servers`` (from :meth:`candidates`)."""

    async def leave(self, room_id: str, user_id: str, content: dict[str, Any]) -> None:
        """Leave (reject an invite, retract a knock) a room we are not resident in:
        make_leave/send_leave through the inviter's server or another candidate."""

    async def knock(self, room_id: str, user_id: str, content: dict[str, Any],
                    servers: Sequence[str]) -> None:
        """make_knock/send_knock through one of ``servers`` (from :meth:`candidates`)."""

    def invite_countersign(self, room_id: str, target: str) -> Countersign:
        """Sends an invite of a remote user to their server before it is persisted."""


@attrs.define
class MembershipActions:
    config: Config
    users: Users
    profile: Profile
    aliases: Aliases
    state: RoomState
    membership: Membership
    timeline: Timeline
    remote: RemoteRooms | None = None
    moderation: RoomModeration | None = None  # rooms banned by the admins

    def is_resident(self, room_id: str) -> bool:
        """Whether this server is in the room (has its state and a joined member)."""
        return (self.timeline.events.room_version(room_id) is not None
                and self.config.server_name in self.membership.servers(room_id))

    async def locate(self, room_id_or_alias: str,
                     servers: Sequence[str] = ()) -> tuple[str, list[str]]:
        """A room id or alias -> (room id, servers to ask if the room is not here)."""
        via = [s for s in servers if s]
        if room_id_or_alias.startswith("#") and self.remote is not None:
            server = room_id_or_alias.split(":", 1)[1] if ":" in room_id_or_alias else ""
            if server != self.config.server_name:
                room_id, alias_servers = await self.remote.resolve_alias(room_id_or_alias)
                return room_id, via + [s for s in alias_servers if s not in via]
        if room_id_or_alias.startswith("#"):
            # An unknown alias in an application service's namespace: the AS may create it.
            await self.aliases.resolve_asking(room_id_or_alias)
        return self.resolve_room(room_id_or_alias), via

    def resolve_room(self, room_id_or_alias: str) -> str:
        if room_id_or_alias.startswith("#"):
            room_id = self.aliases.resolve(room_id_or_alias)
            if room_id is None:
                raise MatrixError(404, "M_NOT_FOUND", "Unknown room alias")
            return room_id
        if not room_id_or_alias.startswith("!"):
            raise MatrixError(400, "M_INVALID_PARAM", "Expected a room id or alias")
        return room_id_or_alias

    async def join(self, room_id: str, user_id: str, reason: str | None = None,
                   servers: Sequence[str] = ()) -> str:
        if self.moderation is not None:
            await self.moderation.check_not_banned(room_id, user_id)
        remote = self._remote_servers(room_id, user_id, servers)
        if remote is not None and self.remote is not None:
            if self.users.is_guest(user_id):
                raise MatrixError(403, "M_FORBIDDEN",
                                  "Guests may not join rooms of other servers")
            await self.remote.join(room_id, user_id,
                                   self._profile_content(user_id, JOIN, reason), remote)
            return room_id
        if self.timeline.events.room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "This server does not know the room")
        if self.users.is_guest(user_id) and \
                self.state.content(room_id, GUEST_ACCESS).get("guest_access") != "can_join":
            raise MatrixError(403, "M_FORBIDDEN", "Guests may not join this room")
        content = self._profile_content(user_id, JOIN, reason)
        if self.membership.membership(room_id, user_id) != INVITE:
            authoriser = self._authoriser_for(room_id, user_id)
            if authoriser is not None:
                content[_AUTHORISER] = authoriser
        await self._send(room_id, user_id, user_id, content)
        return room_id

    async def leave(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        if self.membership.membership(room_id, user_id) in (None, LEAVE, BAN):
            raise MatrixError(403, "M_FORBIDDEN", "You are not in this room")
        await self._leave(room_id, user_id, reason)
        if self.config.forget_forced_upon_leave:
            self.membership.forget(user_id, room_id)

    async def invite(self, room_id: str, sender: str, target: str, reason: str | None = None,
                     is_direct: bool = False) -> None:
        _check_user_id(target)
        if self.moderation is not None:
            await self.moderation.check_not_banned(room_id)
        if self.config.block_non_admin_invites and not self.users.is_admin(sender):
            raise MatrixError(403, "M_FORBIDDEN", "Only server admins may send invites here")
        remote_target = not self.users.is_local(target)
        if remote_target and self.remote is None:
            raise MatrixError(403, "M_FORBIDDEN", "Inviting users of other servers is not "
                              "possible on this server")
        if not remote_target and not self.users.is_active(target):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown user")
        if self.membership.membership(room_id, target) == JOIN:
            raise MatrixError(403, "M_FORBIDDEN", "That user is already in the room")
        content = self._profile_content(target, INVITE, reason)
        if is_direct:
            content["is_direct"] = True
        if remote_target:
            assert self.remote is not None
            if not self.is_resident(room_id):
                raise MatrixError(403, "M_FORBIDDEN", "You are not in this room")
            await self.timeline.send(room_id, Draft(sender, "m.room.member", content, target),
                                     countersign=self.remote.invite_countersign(room_id, target))
            return
        await self._send(room_id, sender, target, content)

    async def kick(self, room_id: str, sender: str, target: str, reason: str | None) -> None:
        _check_user_id(target)
        if self.membership.membership(room_id, target) in (None, LEAVE, BAN):
            raise MatrixError(403, "M_FORBIDDEN", "That user is not in the room")
        await self._send(room_id, sender, target, _content(LEAVE, reason))

    async def ban(self, room_id: str, sender: str, target: str, reason: str | None) -> None:
        _check_user_id(target)
        await self._send(room_id, sender, target, _content(BAN, reason))

    async def unban(self, room_id: str, sender: str, target: str, reason: str | None) -> None:
        _check_user_id(target)
        if self.membership.membership(room_id, target) != BAN:
            raise MatrixError(403, "M_FORBIDDEN", "That user is not banned")
        await self._send(room_id, sender, target, _content(LEAVE, reason))

    async def knock(self, room_id: str, user_id: str, reason: str | None,
                    servers: Sequence[str] = ()) -> None:
        if self.moderation is not None:
            await self.moderation.check_not_banned(room_id, user_id)
        remote = self._remote_servers(room_id, user_id, servers)
        if remote is not None and self.remote is not None:
            await self.remote.knock(room_id, user_id,
                                    self._profile_content(user_id, KNOCK, reason), remote)
            return
        if self.timeline.events.room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        await self._send(room_id, user_id, user_id,
                         self._profile_content(user_id, KNOCK, reason))

    async def enforce_guest_access(self, room_id: str) -> None:
        """Spec (guest access): once guests may no longer join, local guests leave."""
        if self.state.content(room_id, GUEST_ACCESS).get("guest_access") == "can_join":
            return
        for member in self.membership.joined_members(room_id):
            if self.users.is_local(member) and self.users.is_guest(member):
                await self._send(room_id, member, member, _content(LEAVE, None))

    def forget(self, room_id: str, user_id: str) -> None:
        if self.membership.membership(room_id, user_id) in (JOIN, INVITE, KNOCK):
            raise MatrixError(400, "M_UNKNOWN", "Leave the room before forgetting it")
        self.membership.forget(user_id, room_id)

    async def leave_all(self, user_id: str) -> None:
        """Deactivation hook: leave every joined room and decline every invite."""
        for room_id, change in list(self.membership.rooms_of(user_id)):
            if change.membership in (JOIN, INVITE, KNOCK):
                try:
                    await self._leave(room_id, user_id, None)
                except MatrixError as refused:
                    log.warning("could not leave %s for deactivated %s: %s", room_id,
                                user_id, refused.error)

    async def auto_join(self, user_id: str, _display_name: str) -> None:
        """Registration hook: join ``auto_join_rooms`` (guests only if allowed)."""
        if self.users.is_guest(user_id) and not self.config.allow_guests_auto_join_rooms:
            return
        for room in self.config.auto_join_rooms:
            try:
                room_id, servers = await self.locate(room)
                await self.join(room_id, user_id, servers=servers)
            except MatrixError as refused:
                log.warning("auto-join of %s into %s failed: %s", user_id, room, refused.error)

    # --- helpers -------------------------------------------------------------------

    async def _leave(self, room_id: str, user_id: str, reason: str | None) -> None:
        """A local leave event where we are resident; else over federation (an invite
        or knock to a room of another server)."""
        remote = self._remote_servers(room_id, user_id, ())
        if remote is not None and self.remote is not None:
            await self.remote.leave(room_id, user_id, _content(LEAVE, reason))
            return
        await self._send(room_id, user_id, user_id, _content(LEAVE, reason))

    def _remote_servers(self, room_id: str, user_id: str,
                        servers: Sequence[str]) -> list[str] | None:
        """The servers to join or knock through, or None to act locally: we are in the
        room, or we know it and there is no other server to ask (as conduwuit does,
        e.g. rejoining a room of ours that every member left)."""
        if self.remote is None or self.is_resident(room_id):
            return None
        candidates = self.remote.candidates(room_id, user_id, servers)
        if not candidates and self.timeline.events.room_version(room_id) is not None:
            return None
        return candidates

    async def _send(self, room_id: str, sender: str, target: str,
                    content: dict[str, Any]) -> None:
        await self.timeline.send(room_id, Draft(sender, "m.room.member", content, target))

    def _profile_content(self, user_id: str, membership: str,
                         reason: str | None) -> dict[str, Any]:
        content = _content(membership, reason)
        if self.users.is_local(user_id):
            name, avatar = self.profile.displayname(user_id), self.profile.avatar_url(user_id)
            if name:
                content["displayname"] = name
            if avatar:
                content["avatar_url"] = avatar
        return content

    def _authoriser_for(self, room_id: str, user_id: str) -> str | None:
        """For a restricted join: a local member able to invite, if the user qualifies."""
        rule = self.state.content(room_id, JOIN_RULES)
        if rule.get("join_rule") not in ("restricted", "knock_restricted"):
            return None
        allow = rule.get("allow")
        allowed_rooms = [entry.get("room_id") for entry in allow if isinstance(entry, dict)] \
            if isinstance(allow, list) else []
        if not any(isinstance(r, str) and self.membership.is_joined(r, user_id)
                   for r in allowed_rooms):
            return None
        version = self.timeline.events.room_version(room_id)
        assert version is not None
        power = PowerLevels.from_state(self.state.get(room_id, POWER_LEVELS),
                                       self.state.get(room_id, CREATE), version)
        for member in self.membership.joined_members(room_id):
            if self.users.is_local(member) and power.user_level(member) >= power.invite:
                return member
        return None


def _content(membership: str, reason: str | None) -> dict[str, Any]:
    content: dict[str, Any] = {"membership": membership}
    if reason:
        content["reason"] = reason
    return content


def _check_user_id(user_id: str) -> None:
    if UserId.try_parse(user_id) is None:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user id {user_id!r}")
