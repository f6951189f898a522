"""Application services (spec: Application Service API).

Registrations come from two places: the store (``id_appserviceregistrations``, the
admin room's ``appservices register``) and the YAML files named by
``appservice_registration_files`` (read at startup, never written). Both share one
namespace of ids and as_tokens, which the spec requires to be unique.

This service answers who an ``as_token`` is (identity assertion with ``user_id`` and
``device_id``), which names are claimed exclusively (registration, aliases), which
application services an event or ephemeral change interests (the sender in
``sender.py`` queues them), and asks an AS about users and aliases it may create.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from conduwuit.config import Config
from conduwuit.errors import MatrixError
from conduwuit.protocol.events import Event
from conduwuit.protocol.ids import UserId
from conduwuit.services.cache import LruCache
from conduwuit.services.requester import Requester
from conduwuit.store import SEP, Store, join

from .client import AppserviceHttp, AppserviceUnreachable, segment
from .registration import (
    AppserviceRegistration,
    RegistrationError,
    check_sender,
    parse_registration,
)
from .sender import AppserviceSender

if TYPE_CHECKING:
    from conduwuit.services.devices import Devices
    from conduwuit.services.login import Login
    from conduwuit.services.presence import Presence, PresenceRecord
    from conduwuit.services.receipts import Receipt, Receipts
    from conduwuit.services.registration import Registration
    from conduwuit.services.rooms import Rooms
    from conduwuit.services.typing import Typing
    from conduwuit.services.users import Users

__all__ = ["AppserviceRegistration", "Appservices", "RegistrationError", "parse_registration"]

log = logging.getLogger(__name__)

REGISTRATIONS = "id_appserviceregistrations"
NETWORK_DIRECTORY = "appservice_roomdirectory"
MEMBER_CACHE_ROOMS = 10_000
READ_PRIVATE = "m.read.private"


def _exclusive(error: str) -> MatrixError:
    return MatrixError(400, "M_EXCLUSIVE", error)


@attrs.define
class Appservices:
    config: Config
    store: Store
    users: Users
    devices: Devices
    rooms: Rooms
    http: AppserviceHttp
    sender: AppserviceSender = attrs.field(init=False)
    typing: Typing | None = None
    _regs: dict[str, AppserviceRegistration] = attrs.field(factory=dict)
    _by_token: dict[str, str] = attrs.field(factory=dict)
    _from_files: dict[str, str] = attrs.field(factory=dict)  # id -> file path
    # room -> ids of the application services with a joined local member there
    _members: LruCache[str, frozenset[str]] = attrs.field(
        factory=lambda: LruCache(MEMBER_CACHE_ROOMS))

    def __attrs_post_init__(self) -> None:
        self.sender = AppserviceSender(self.store, self.http, self.rooms.events, self)

    @classmethod
    def build(cls, config: Config, store: Store, users: Users, devices: Devices,
              rooms: Rooms) -> Appservices:
        service = cls(config, store, users, devices, rooms, AppserviceHttp(config))
        service.load()
        return service

    def attach(self, *, typing: Typing, receipts: Receipts, presence: Presence,
               registration: Registration, login: Login) -> None:
        """Subscribe to the services whose changes application services hear of, and
        install the namespace checks where names are claimed."""
        timeline = self.rooms.timeline
        timeline.index_writers.append(self.sender.stage_event)
        timeline.on_event.append(self.sender.on_event)
        self.typing = typing
        typing.on_change.append(self.typing_changed)
        receipts.on_change.append(self.receipt_changed)
        presence.on_change.append(self.presence_changed)
        registration.appservices = self
        registration.on_registered.append(self._first_account_registered)
        login.appservices = self
        self.rooms.aliases.claim_check = self.check_alias_claim
        self.rooms.aliases.on_unknown = self.query_alias

    @property
    def server_name(self) -> str:
        return self.config.server_name

    # --- the registry ------------------------------------------------------------------

    def load(self) -> None:
        """At startup: stored registrations, then the configured registration files."""
        for key, raw in self.store.tree(REGISTRATIONS).iter(b""):
            try:
                reg = parse_registration(raw.decode())
                self._check_unique(reg)
            except RegistrationError as exc:
                log.error("stored appservice registration %r is unusable: %s",
                          key.decode(errors="replace"), exc)
                continue
            self._add(reg)
        for path in self.config.appservice_registration_files:
            try:
                reg = parse_registration(Path(path).read_text())
                check_sender(reg, self.server_name)
                self._check_unique(reg)
            except (OSError, UnicodeDecodeError, RegistrationError) as exc:
                log.error("appservice registration file %s is not loaded: %s", path, exc)
                continue
            self._add(reg)
            self._from_files[reg.id] = path
        if self._regs:
            log.info("%d application service(s) registered: %s", len(self._regs),
                     ", ".join(sorted(self._regs)))

    def register(self, yaml_text: str) -> str:
        """Store a new registration (the admin command); returns its id.

        Raises :class:`RegistrationError` (a ``ValueError``) on bad YAML, a missing or
        malformed field, or an id or as_token already in use.
        """
        reg = parse_registration(yaml_text)
        check_sender(reg, self.server_name)
        self._check_unique(reg)
        self.store.tree(REGISTRATIONS).put(reg.id.encode(), yaml_text.encode())
        self._add(reg)
        log.info("application service %s registered (%s)", reg.id, reg.url or "no URL")
        return reg.id

    def unregister(self, appservice_id: str) -> None:
        """Remove a stored registration, its queue and its room directory entries."""
        if appservice_id not in self._regs:
            raise RegistrationError(f"no application service with id {appservice_id!r}")
        if appservice_id in self._from_files:
            raise RegistrationError(
                f"{appservice_id!r} comes from the registration file "
                f"{self._from_files[appservice_id]}; remove it from "
                "appservice_registration_files instead")
        reg = self._regs.pop(appservice_id)
        self._by_token.pop(reg.as_token, None)
        self.store.tree(REGISTRATIONS).delete(appservice_id.encode())
        self.sender.forget(appservice_id)
        stale = [k for k, v in self.store.tree(NETWORK_DIRECTORY).iter(b"")
                 if v.decode() == appservice_id]
        with self.store.batch() as batch:
            for key in stale:
                batch.delete(NETWORK_DIRECTORY, key)
        self._members = LruCache(MEMBER_CACHE_ROOMS)
        log.info("application service %s unregistered", appservice_id)

    def list(self) -> builtins.list[str]:
        return sorted(self._regs)

    def show(self, appservice_id: str) -> str:
        """The registration as it was given (YAML)."""
        reg = self._regs.get(appservice_id)
        if reg is None:
            raise RegistrationError(f"no application service with id {appservice_id!r}")
        return reg.yaml_text

    def get(self, appservice_id: str) -> AppserviceRegistration | None:
        return self._regs.get(appservice_id)

    def all(self) -> builtins.list[AppserviceRegistration]:
        return list(self._regs.values())

    def by_token(self, token: str) -> AppserviceRegistration | None:
        appservice_id = self._by_token.get(token)
        return self._regs.get(appservice_id) if appservice_id is not None else None

    def _check_unique(self, reg: AppserviceRegistration) -> None:
        if reg.id in self._regs:
            raise RegistrationError(f"an application service with id {reg.id!r} already exists")
        if reg.as_token in self._by_token:
            raise RegistrationError(
                f"as_token already used by application service {self._by_token[reg.as_token]!r}")

    def _add(self, reg: AppserviceRegistration) -> None:
        self._regs[reg.id] = reg
        self._by_token[reg.as_token] = reg.id
        self._members = LruCache(MEMBER_CACHE_ROOMS)
        if self.users.has_any():
            self._ensure_sender(reg)

    def _ensure_sender(self, reg: AppserviceRegistration) -> None:
        """The AS's own user (no password), so that rooms can invite it. Made only once
        another account exists: the first human account must still become the admin."""
        sender = reg.sender(self.server_name)
        if not self.users.exists(sender):
            self.users.create(sender, "")
            log.info("created %s, the user of application service %s", sender, reg.id)

    async def _first_account_registered(self, user_id: str, _display_name: str) -> None:
        for reg in self._regs.values():
            self._ensure_sender(reg)

    # --- authentication and namespaces ------------------------------------------------

    def authenticate(self, token: str, user_id: str | None,
                     device_id: str | None) -> Requester | None:
        """Identity assertion: the AS's user, or ``user_id`` within its namespaces."""
        reg = self.by_token(token)
        if reg is None:
            return None
        sender = reg.sender(self.server_name)
        acting = user_id or sender
        if acting != sender:
            if UserId.try_parse(acting) is None:
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user_id {acting!r}")
            if not reg.is_user(acting, self.server_name):
                raise MatrixError(403, "M_EXCLUSIVE",
                                  f"{acting} is not in the application service's namespaces")
            if not self.users.exists(acting):
                raise MatrixError(403, "M_FORBIDDEN",
                                  "The application service has not registered this user")
        else:
            self._ensure_sender(reg)  # if no account existed when the AS was registered
        if self.users.is_deactivated(acting):
            raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        if device_id is not None and self.devices.get(acting, device_id) is None:
            raise MatrixError(400, "M_UNKNOWN_DEVICE",
                              f"{acting} has no device {device_id!r}")
        return Requester(acting, device_id, appservice_id=reg.id)

    def owns_user(self, appservice_id: str, user_id: str) -> bool:
        reg = self._regs.get(appservice_id)
        return reg is not None and reg.is_user(user_id, self.server_name)

    def exclusive_owner(self, user_id: str) -> str | None:
        """The AS holding ``user_id`` in an exclusive namespace (or as its sender)."""
        for reg in self._regs.values():
            if user_id == reg.sender(self.server_name) or reg.exclusive_user(user_id):
                return reg.id
        return None

    def check_user_claim(self, user_id: str, appservice_id: str | None = None) -> None:
        """Registration: 400 M_EXCLUSIVE for a name another AS holds exclusively, and for
        an AS registering outside its own namespaces."""
        if appservice_id is not None and not self.owns_user(appservice_id, user_id):
            raise _exclusive(f"{user_id} is not in the application service's namespaces")
        owner = self.exclusive_owner(user_id)
        if owner is not None and owner != appservice_id:
            raise _exclusive(f"{user_id} is reserved by an application service")

    def check_alias_claim(self, alias: str, user_id: str) -> None:
        """Aliases in an exclusive namespace belong to that AS's users only."""
        for reg in self._regs.values():
            if reg.exclusive_alias(alias) and not reg.is_user(user_id, self.server_name):
                raise _exclusive(f"{alias} is reserved by an application service")

    # --- queries: users and aliases the AS may create on demand -------------------------

    async def query_user(self, user_id: str) -> bool:
        """An unknown local user in a namespace: ask the AS (it may register the user).

        True when the user exists afterwards.
        """
        if not user_id.endswith(f":{self.server_name}") or self.users.exists(user_id):
            return self.users.exists(user_id)
        for reg in self._regs.values():
            if reg.url is None or not any(n.matches(user_id) for n in reg.users):
                continue
            await self._query(reg, "/users/" + segment(user_id))
            if self.users.exists(user_id):
                return True
        return False

    async def query_alias(self, alias: str) -> str | None:
        """An unknown local alias in a namespace: ask the AS; the room id if it made one."""
        aliases = self.rooms.aliases
        room_id = aliases.resolve(alias)
        if room_id is not None or not alias.endswith(f":{self.server_name}"):
            return room_id
        for reg in self._regs.values():
            if reg.url is None or not reg.is_alias(alias):
                continue
            await self._query(reg, "/rooms/" + segment(alias))
            room_id = aliases.resolve(alias)
            if room_id is not None:
                return room_id
        return None

    async def _query(self, reg: AppserviceRegistration, path: str) -> None:
        try:
            answer = await self.http.request(reg, "GET", path)
        except AppserviceUnreachable as exc:
            log.info("appservice %s query %s failed: %s", reg.id, path, exc)
            return
        if not answer.ok and answer.status != 404:
            log.info("appservice %s query %s answered %d", reg.id, path, answer.status)

    # --- ping --------------------------------------------------------------------------

    async def ping(self, appservice_id: str, who: Requester, transaction_id: object) -> int:
        """``POST /_matrix/client/v1/appservice/{id}/ping``: the AS's round trip in ms."""
        if who.appservice_id is None or who.appservice_id != appservice_id:
            raise MatrixError(403, "M_FORBIDDEN",
                              "Provided access token is not the appservice's as_token")
        if transaction_id is not None and not isinstance(transaction_id, str):
            raise MatrixError(400, "M_BAD_JSON", "'transaction_id' must be a string")
        reg = self._regs[appservice_id]
        if reg.url is None:
            raise MatrixError(400, "M_URL_NOT_SET",
                              "Application service doesn't have a URL configured")
        body: dict[str, Any] = {}
        if transaction_id is not None:
            body["transaction_id"] = transaction_id
        began = trio.current_time()
        try:
            answer = await self.http.request(reg, "POST", "/ping", body)
        except AppserviceUnreachable as exc:
            if exc.timeout:
                raise MatrixError(504, "M_CONNECTION_TIMEOUT",
                                  "Connection to application service timed out") from None
            raise MatrixError(502, "M_CONNECTION_FAILED",
                              f"Could not connect to the application service: {exc}") from None
        if not answer.ok:
            bad = MatrixError(502, "M_BAD_STATUS", f"Ping returned status {answer.status}")
            bad.extra.update(status=answer.status, body=answer.body.decode(errors="replace"))
            raise bad
        return int((trio.current_time() - began) * 1000)

    # --- third-party network room directories ------------------------------------------

    def set_network_listing(self, who: Requester, network_id: str, room_id: str,
                            visibility: object) -> None:
        """``PUT /directory/list/appservice/{networkId}/{roomId}``."""
        if who.appservice_id is None:
            raise MatrixError(403, "M_FORBIDDEN",
                              "Only application services may change their room directories")
        if visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
        if not network_id:
            raise MatrixError(400, "M_INVALID_PARAM", "Missing network id")
        if self.rooms.events.room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Room not found")
        key = join(network_id, room_id)
        if visibility == "public":
            self.store.tree(NETWORK_DIRECTORY).put(key, who.appservice_id.encode())
        else:
            self.store.tree(NETWORK_DIRECTORY).delete(key)

    def network_rooms(self, instance_id: str | None, all_networks: bool) -> builtins.list[str]:
        """Rooms listed in AS directories: of one network, or of all of them."""
        if instance_id is None and not all_networks:
            return []
        network = instance_id.split("|", 1)[-1] if instance_id else None
        prefix = join(network) + SEP if network is not None else b""
        rooms = []
        for key in self.store.tree(NETWORK_DIRECTORY).keys(prefix):
            rooms.append(key.rsplit(SEP, 1)[1].decode())
        return sorted(set(rooms))

    # --- interest ----------------------------------------------------------------------

    def _member_interest(self, room_id: str) -> frozenset[str]:
        cached = self._members.get(room_id)
        if cached is not None:
            return cached
        suffix = f":{self.server_name}"
        members = [m for m in self.rooms.membership.joined_members(room_id)
                   if m.endswith(suffix)]
        found = frozenset(reg.id for reg in self._regs.values()
                          if any(reg.is_user(m, self.server_name) for m in members))
        self._members.put(room_id, found)
        return found

    def _room_interest(self, reg: AppserviceRegistration, room_id: str,
                       aliases: builtins.list[str] | None) -> bool:
        if reg.is_room(room_id):
            return True
        if reg.aliases:
            names = aliases if aliases is not None else self.rooms.aliases.of_room(room_id)
            if any(reg.is_alias(a) for a in names):
                return True
        return reg.id in self._member_interest(room_id)

    def interested_in_event(self, event: Event) -> builtins.list[str]:
        """Application services (with a URL) to push ``event`` to."""
        regs = [r for r in self._regs.values() if r.url is not None]
        if not regs:
            return []
        room_id = event.room_id
        aliases = self.rooms.aliases.of_room(room_id) if room_id is not None and any(
            r.aliases for r in regs) else []
        targets = []
        for reg in regs:
            if reg.is_user(event.sender, self.server_name) or (
                    event.type == "m.room.member" and event.state_key is not None
                    and reg.is_user(event.state_key, self.server_name)) or (
                    room_id is not None and self._room_interest(reg, room_id, aliases)):
                targets.append(reg.id)
        return targets

    def event_committed(self, event: Event) -> None:
        """A membership change may change which AS has a member in the room."""
        if event.type == "m.room.member" and event.room_id is not None:
            self._members.pop(event.room_id)

    # --- ephemeral data (receive_ephemeral) ---------------------------------------------

    def _ephemeral_regs(self) -> builtins.list[AppserviceRegistration]:
        return [r for r in self._regs.values() if r.receive_ephemeral and r.url is not None]

    def _in_room(self, regs: Iterable[AppserviceRegistration], room_id: str) -> builtins.list[str]:
        return [r.id for r in regs if self._room_interest(r, room_id, None)]

    def typing_changed(self, room_id: str, user_id: str, typing: bool) -> None:
        regs = self._ephemeral_regs()
        if not regs or self.typing is None:
            return
        self.sender.enqueue_ephemeral(self._in_room(regs, room_id), {
            "type": "m.typing", "room_id": room_id,
            "content": {"user_ids": self.typing.typing_users(room_id)}})

    def receipt_changed(self, room_id: str, receipt: Receipt) -> None:
        regs = self._ephemeral_regs()
        if not regs:
            return
        targets = self._in_room(regs, room_id)
        if receipt.receipt_type == READ_PRIVATE:  # only to the AS of that user
            targets = [t for t in targets if self.owns_user(t, receipt.user_id)]
        data: dict[str, Any] = {"ts": receipt.ts}
        if receipt.thread_id is not None:
            data["thread_id"] = receipt.thread_id
        self.sender.enqueue_ephemeral(targets, {
            "type": "m.receipt", "room_id": room_id,
            "content": {receipt.event_id: {receipt.receipt_type: {receipt.user_id: data}}}})

    def presence_changed(self, user_id: str, record: PresenceRecord) -> None:
        regs = self._ephemeral_regs()
        if not regs:
            return
        rooms = self.rooms.membership.joined_rooms(user_id)
        targets = [r.id for r in regs if r.is_user(user_id, self.server_name)
                   or any(self._room_interest(r, room, None) for room in rooms)]
        content: dict[str, Any] = {
            "presence": record.state, "currently_active": record.currently_active,
            "last_active_ago": max(0, int(time.time() * 1000) - record.last_active_ts)}
        if record.status_msg:
            content["status_msg"] = record.status_msg
        self.sender.enqueue_ephemeral(targets, {"type": "m.presence", "sender": user_id,
                                                "content": content})

    # --- lifecycle ---------------------------------------------------------------------

    async def hold_connections(self) -> None:
        """A job that owns the HTTP pool to application services; closes it at shutdown."""
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self.http.aclose()
