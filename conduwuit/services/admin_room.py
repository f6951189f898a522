"""The admin room: ``#admins:<server_name>`` with the server's bot ``@conduit``.

This service decides everything about the room itself: it is created when the
first admin registers (or at startup when admins exist but the room does not),
admins are invited and joined, it may never become public or world-readable, and
messages addressed to the bot are picked up from the timeline. Picking up only
queues a command on a bounded channel: the ``admin/commands`` job (``conduwuit/admin``)
runs it, so no command ever runs inside the timeline's write path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from conduwuit.config import Config
from conduwuit.errors import MatrixError
from conduwuit.protocol.events import Event
from conduwuit.protocol.room_versions import ROOM_VERSIONS
from conduwuit.store import TREES, Store

from .account_data import AccountData
from .accounts import Accounts
from .profile import Profile
from .rooms import Rooms
from .rooms.membership import INVITE, JOIN
from .rooms.state import POWER_LEVELS
from .rooms.timeline import Draft
from .users import Users

log = logging.getLogger(__name__)

BOT_LOCALPART = "conduit"
BOT_DISPLAYNAME = "conduwuit"
COMMAND_PREFIX = "!admin"
_ROOM_KEY = b"admin_room_id"
# Commands waiting for the job; beyond this a command is dropped with a warning
# (a flood of commands must not grow memory nor block the sender's request).
QUEUE_SIZE = 64


@attrs.frozen
class AdminCommand:
    """A message addressed to the bot, as the job receives it."""

    room_id: str
    event_id: str
    sender: str
    text: str  # everything after the prefix: the command line, then any input lines
    allowed: bool  # the sender is a server admin


def _channel() -> tuple[trio.MemorySendChannel[AdminCommand],
                        trio.MemoryReceiveChannel[AdminCommand]]:
    return trio.open_memory_channel[AdminCommand](QUEUE_SIZE)


@attrs.define
class AdminRoom:
    config: Config
    store: Store
    users: Users
    profile: Profile
    rooms: Rooms
    account_data: AccountData
    accounts: Accounts
    _channel: tuple[trio.MemorySendChannel[AdminCommand],
                    trio.MemoryReceiveChannel[AdminCommand]] = attrs.field(factory=_channel)
    _lock: trio.Lock = attrs.field(factory=trio.Lock)

    @property
    def bot_id(self) -> str:
        return f"@{BOT_LOCALPART}:{self.config.server_name}"

    @property
    def alias(self) -> str:
        return f"#admins:{self.config.server_name}"

    def room_id(self) -> str | None:
        raw = self.store.tree("global").get(_ROOM_KEY)
        return raw.decode() if raw is not None else None

    def check_publish(self, room_id: str, visibility: object) -> None:
        """The admin room never enters a room directory."""
        if visibility == "public" and self.is_admin_room(room_id):
            raise MatrixError(403, "M_FORBIDDEN", "The admin room cannot be published")

    def is_admin_room(self, room_id: str) -> bool:
        return room_id == self.room_id()

    # --- creating the room ------------------------------------------------------------

    async def startup(self) -> None:
        """At startup: warn about aliases that are now forbidden, and create the room if
        admins exist from before it (the first registration normally creates it)."""
        for alias in self.rooms.aliases.violating():
            log.warning("existing room alias %s matches forbidden_alias_names", alias)
        if self.room_id() is not None:
            return
        admins = await trio.to_thread.run_sync(self.admins)
        if admins:
            room_id = await self.ensure_room()
            for user_id in admins:
                await self.make_admin(user_id)
            log.info("created the admin room %s for the existing admins", room_id)

    def admins(self) -> list[str]:
        """Local server admins (a scan of the accounts: call it in a thread)."""
        return [user_id for user_id in self.users.local_user_ids()
                if user_id != self.bot_id and self.users.is_admin(user_id)]

    async def ensure_room(self) -> str:
        """The admin room's id, creating the bot and the room the first time."""
        async with self._lock:
            existing = self.room_id()
            if existing is not None:
                return existing
            bot = self.bot_id
            if not self.users.exists(bot):
                self.users.create(bot, "")  # no password: nobody logs in as the bot
                await self.profile.set_displayname(bot, BOT_DISPLAYNAME)
            version = ROOM_VERSIONS[self.config.default_room_version]
            timeline = self.rooms.timeline
            room_id = await timeline.create(version, bot, {})
            await self._send(room_id, "m.room.member", {
                "membership": JOIN, "displayname": BOT_DISPLAYNAME}, bot)
            users = {} if version.privileged_creators else {bot: 100}
            await self._send(room_id, "m.room.power_levels", {
                "users": users, "users_default": 0, "events": {
                    "m.room.power_levels": 100, "m.room.history_visibility": 100,
                    "m.room.join_rules": 100, "m.room.encryption": 100,
                    "m.room.server_acl": 100, "m.room.tombstone": 100,
                    "m.room.name": 50, "m.room.canonical_alias": 50, "m.room.avatar": 50},
                "events_default": 0, "state_default": 50, "ban": 50, "kick": 50,
                "redact": 50, "invite": 50, "notifications": {"room": 50}})
            await self._send(room_id, "m.room.join_rules", {"join_rule": "invite"})
            await self._send(room_id, "m.room.history_visibility",
                             {"history_visibility": "shared"})
            await self._send(room_id, "m.room.guest_access", {"guest_access": "forbidden"})
            await self._send(room_id, "m.room.name",
                             {"name": f"{self.config.server_name} Admin Room"})
            await self._send(room_id, "m.room.topic", {"topic": (
                f"Manage {self.config.server_name} | Run commands prefixed with "
                f"`{COMMAND_PREFIX}` | Run `{COMMAND_PREFIX} --help` for help")})
            try:
                self.rooms.aliases.create(self.alias, room_id, bot)
                await self._send(room_id, "m.room.canonical_alias", {"alias": self.alias})
            except MatrixError as refused:
                log.warning("admin room %s has no alias %s: %s", room_id, self.alias,
                            refused.error)
            self.store.tree("global").put(_ROOM_KEY, room_id.encode())
            self.store.flush()
            log.info("created the admin room %s (%s)", room_id, self.alias)
            return room_id

    async def on_registered(self, user_id: str, _display_name: str) -> None:
        """Registration hook: the first account (made admin by registration) gets the room.

        Guests never do (conduwuit: the first non-guest account is the admin); a failure
        here is logged and does not fail the registration itself.
        """
        if not self.users.is_admin(user_id) or self.users.is_guest(user_id):
            return
        try:
            await self.ensure_room()
            await self.make_admin(user_id)
        except MatrixError as refused:
            log.error("could not put the new admin %s in the admin room: %s", user_id,
                      refused.error)

    # --- admins -------------------------------------------------------------------------

    async def make_admin(self, user_id: str) -> None:
        """Server admin: flagged, given power 100 in the admin room, invited and joined
        (local users) or invited (remote users), and the room tagged for them."""
        room_id = await self.ensure_room()
        local = self.users.is_local(user_id)
        if local:
            if not self.users.is_active(user_id):
                raise MatrixError(404, "M_NOT_FOUND", f"{user_id} is not an active local user")
            self.users.set_admin(user_id, True)
        await self._set_power(room_id, user_id, 100)
        membership = self.rooms.membership.membership(room_id, user_id)
        if membership != JOIN:
            if membership != INVITE and local:
                # Directly, not through actions.invite: block_non_admin_invites must not
                # stop the bot.
                await self._send(room_id, "m.room.member", {"membership": INVITE}, user_id)
            elif membership != INVITE:
                await self.rooms.actions.invite(room_id, self.bot_id, user_id)
            if local:
                await self.rooms.actions.join(room_id, user_id)
        if local and self.config.admin_room_tag:
            self.account_data.set_tag(user_id, room_id, self.config.admin_room_tag, {})

    async def revoke_admin(self, user_id: str) -> None:
        """No longer an admin: flag removed, power dropped, removed from the room."""
        room_id = self.room_id()
        self.users.set_admin(user_id, False)
        if room_id is None:
            return
        await self._set_power(room_id, user_id, None)
        if self.rooms.membership.membership(room_id, user_id) in (JOIN, INVITE):
            await self.rooms.actions.kick(room_id, self.bot_id, user_id,
                                          "no longer a server admin")

    async def deactivate_banned_attempt(self, user_id: str) -> None:
        """``auto_deactivate_banned_room_attempts``: a local non-admin who tries to join a
        banned room loses the account."""
        if not self.users.is_local(user_id) or self.users.is_admin(user_id) \
                or user_id == self.bot_id or not self.users.is_active(user_id):
            return
        log.warning("deactivating %s: tried to join a banned room", user_id)
        await self.accounts.deactivate(user_id)
        await self.notice(f"Automatically deactivated {user_id} for trying to join a "
                          "banned room.")

    # --- rules of the room --------------------------------------------------------------

    def check_state(self, room_id: str, event_type: str, content: Mapping[str, Any]) -> None:
        """Refuse state that would open the admin room (or hide it from the bot)."""
        if not self.is_admin_room(room_id):
            return
        if event_type == "m.room.join_rules" and content.get("join_rule") not in ("invite",):
            raise MatrixError(403, "M_FORBIDDEN", "The admin room must stay invite-only")
        if event_type == "m.room.history_visibility" \
                and content.get("history_visibility") == "world_readable":
            raise MatrixError(403, "M_FORBIDDEN", "The admin room may not be world-readable")
        if event_type == "m.room.guest_access" and content.get("guest_access") == "can_join":
            raise MatrixError(403, "M_FORBIDDEN", "Guests may not join the admin room")
        if event_type == "m.room.encryption":
            raise MatrixError(403, "M_FORBIDDEN", "The admin room may not be encrypted: "
                              "the bot could not read commands")

    # --- commands -----------------------------------------------------------------------

    def on_event(self, event: Event, _count: int) -> None:
        """Timeline callback: queue messages addressed to the bot (never run them here)."""
        if event.type != "m.room.message" or event.sender == self.bot_id \
                or event.room_id is None or not self.is_admin_room(event.room_id):
            return
        content = event.content
        body = content.get("body")
        if not isinstance(body, str) or content.get("msgtype") != "m.text" \
                or "m.new_content" in content:
            return
        text = self._command_text(body)
        if text is None:
            return
        command = AdminCommand(event.room_id, event.event_id, event.sender, text,
                               self.users.is_admin(event.sender))
        try:
            self._channel[0].send_nowait(command)
        except trio.WouldBlock:
            log.warning("admin command from %s dropped: %d commands already waiting",
                        event.sender, QUEUE_SIZE)

    def _command_text(self, body: str) -> str | None:
        stripped = body.lstrip()
        lowered = stripped.lower()
        prefixes = [COMMAND_PREFIX, self.bot_id]
        name = self.profile.displayname(self.bot_id)
        if name:
            prefixes.append(name)
        for prefix in prefixes:
            if not lowered.startswith(prefix.lower()):
                continue
            rest = stripped[len(prefix):]
            if prefix != COMMAND_PREFIX:
                if not rest.startswith(":"):
                    continue
                rest = rest[1:]
            if rest and not rest[0].isspace():
                continue  # "!administrator", not a command
            return rest.strip()
        return None

    async def next_command(self) -> AdminCommand:
        return await self._channel[1].receive()

    async def reply(self, command: AdminCommand, body: str, html: str) -> Event:
        """The bot's answer, as a reply to the command."""
        return await self.rooms.timeline.send(command.room_id, Draft(
            self.bot_id, "m.room.message", {
                "msgtype": "m.notice", "body": body,
                "format": "org.matrix.custom.html", "formatted_body": html,
                "m.relates_to": {"m.in_reply_to": {"event_id": command.event_id}}}))

    async def notice(self, body: str, html: str | None = None) -> Event | None:
        """A message of the bot in the admin room (admin notices); None without a room."""
        room_id = self.room_id()
        if room_id is None:
            return None
        content: dict[str, Any] = {"msgtype": "m.notice", "body": body}
        if html is not None:
            content.update(format="org.matrix.custom.html", formatted_body=html)
        return await self.rooms.timeline.send(room_id, Draft(self.bot_id, "m.room.message",
                                                             content))

    # --- read-only database inspection (debug database ...) ------------------------------

    def db_get(self, tree: str, key: bytes) -> bytes | None:
        return self.store.tree(_known_tree(tree)).get(key)

    def db_iter(self, tree: str, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """At most ``limit`` items under ``prefix`` (bounded: safe on the loop)."""
        items: list[tuple[bytes, bytes]] = []
        for item in self.store.tree(_known_tree(tree)).iter(prefix):
            if len(items) >= limit:
                break
            items.append(item)
        return items

    # --- helpers ------------------------------------------------------------------------

    async def _send(self, room_id: str, event_type: str, content: dict[str, Any],
                    state_key: str = "") -> None:
        await self.rooms.timeline.send(room_id, Draft(self.bot_id, event_type, content,
                                                      state_key))

    async def _set_power(self, room_id: str, user_id: str, level: int | None) -> None:
        version = self.rooms.events.room_version(room_id)
        if version is not None and version.privileged_creators and user_id == self.bot_id:
            return
        content = dict(self.rooms.state.content(room_id, POWER_LEVELS))
        raw_users = content.get("users")
        users: dict[str, Any] = dict(raw_users) if isinstance(raw_users, Mapping) else {}
        if users.get(user_id) == level or (level is None and user_id not in users):
            return
        if level is None:
            users.pop(user_id, None)
        else:
            users[user_id] = level
        content["users"] = users
        await self._send(room_id, "m.room.power_levels", content)


def _known_tree(name: str) -> str:
    if name not in TREES:
        raise MatrixError(404, "M_NOT_FOUND", f"There is no tree named {name!r}")
    return name
