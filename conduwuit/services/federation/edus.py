"""EDUs from other servers: typing, receipts, presence, device lists, to-device messages.

An EDU carries no signature of its own: the only proof of where it comes from is the
authenticated origin of the transaction. So every EDU about a user is accepted only
when that user belongs to the origin server, room-scoped EDUs (typing, receipts) only
when the user is joined to the room and the room's ``m.room.server_acl`` admits the
origin. Typing, receipts and presence each obey their ``allow_incoming_*`` switch.
A malformed or refused EDU is dropped quietly: the sender learns nothing from a
transaction's answer about its EDUs (the spec's ``/send`` reports on PDUs only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from conduwuit.config import Config
from conduwuit.errors import MatrixError
from conduwuit.protocol.acl import server_allowed
from conduwuit.protocol.ids import server_name_of

if TYPE_CHECKING:
    from conduwuit.services.e2ee import E2ee
    from conduwuit.services.presence import Presence
    from conduwuit.services.receipts import Receipts
    from conduwuit.services.rooms import Rooms
    from conduwuit.services.typing import Typing
    from conduwuit.services.users import Users

log = logging.getLogger(__name__)

SERVER_ACL = ("m.room.server_acl", "")
PRESENCE_STATES = ("online", "unavailable", "offline")
# Receipt types other servers may tell us about (private receipts never leave a server).
FEDERATED_RECEIPTS = ("m.read",)


class EduDropped(Exception):
    """This EDU (or one entry of it) is not applied; the message says why (for the log)."""


def server_of(user_id: object) -> str | None:
    """The server of a user id, None when it is not one."""
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return None
    try:
        return server_name_of(user_id)
    except ValueError:
        return None


def acl_allows(rooms: Rooms, room_id: str, server: str) -> bool:
    """Whether the room's ``m.room.server_acl`` (if any) admits ``server``."""
    event = rooms.state.get(room_id, SERVER_ACL)
    return server_allowed(event.content if event is not None else None, server)


@attrs.define
class Edus:
    config: Config
    users: Users
    rooms: Rooms
    typing: Typing
    receipts: Receipts
    presence: Presence
    e2ee: E2ee
    _handlers: dict[str, Callable[[str, Mapping[str, Any]], None]] = attrs.field(
        init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._handlers.update({
            "m.typing": self._typing,
            "m.receipt": self._receipt,
            "m.presence": self._presence,
            "m.device_list_update": self._device_list_update,
            "m.signing_key_update": self._signing_key_update,
            "m.direct_to_device": self._direct_to_device,
        })

    def apply(self, origin: str, edu: object) -> bool:
        """Apply one EDU of a transaction from ``origin``; False if it was dropped."""
        if not isinstance(edu, Mapping):
            return False
        edu_type, content = edu.get("edu_type"), edu.get("content")
        handler = self._handlers.get(edu_type) if isinstance(edu_type, str) else None
        if handler is None or not isinstance(content, Mapping):
            log.debug("EDU %r from %s ignored", edu_type, origin)
            return False
        try:
            handler(origin, content)
        except EduDropped as dropped:
            log.debug("%s from %s dropped: %s", edu_type, origin, dropped)
            return False
        return True

    # --- checks ----------------------------------------------------------------------

    def _user_of(self, origin: str, user_id: object) -> str:
        if server_of(user_id) != origin:
            raise EduDropped(f"{user_id!r} is not a user of {origin}")
        assert isinstance(user_id, str)
        return user_id

    def _member_of(self, origin: str, room_id: object, user_id: object) -> tuple[str, str]:
        """(room, user) for a room-scoped EDU: the user is the origin's and joined."""
        user = self._user_of(origin, user_id)
        if not isinstance(room_id, str) or not self.rooms.membership.is_joined(room_id, user):
            raise EduDropped(f"{user} is not joined to {room_id!r}")
        if not acl_allows(self.rooms, room_id, origin):
            raise EduDropped(f"{origin} is denied by the server ACL of {room_id}")
        return room_id, user

    # --- the EDU types --------------------------------------------------------------

    def _typing(self, origin: str, content: Mapping[str, Any]) -> None:
        if not self.config.allow_incoming_typing:
            raise EduDropped("allow_incoming_typing is off")
        room_id, user_id = self._member_of(origin, content.get("room_id"),
                                           content.get("user_id"))
        typing = content.get("typing")
        if not isinstance(typing, bool):
            raise EduDropped("typing must be a boolean")
        if typing:
            self.typing.start(room_id, user_id, float(self.config.typing_federation_timeout_s))
        else:
            self.typing.stop(room_id, user_id)

    def _receipt(self, origin: str, content: Mapping[str, Any]) -> None:
        """``{room_id: {receipt_type: {user_id: {event_ids, data: {ts, thread_id?}}}}}``."""
        if not self.config.allow_incoming_read_receipts:
            raise EduDropped("allow_incoming_read_receipts is off")
        for room_id, by_type in content.items():
            if not isinstance(by_type, Mapping):
                continue
            for receipt_type, by_user in by_type.items():
                if receipt_type not in FEDERATED_RECEIPTS or not isinstance(by_user, Mapping):
                    continue
                for user_id, receipt in by_user.items():
                    try:
                        self._one_receipt(origin, room_id, receipt_type, user_id, receipt)
                    except EduDropped as dropped:
                        log.debug("receipt from %s dropped: %s", origin, dropped)

    def _one_receipt(self, origin: str, room_id: str, receipt_type: str, user_id: object,
                     receipt: object) -> None:
        room_id, user = self._member_of(origin, room_id, user_id)
        if not isinstance(receipt, Mapping):
            raise EduDropped("a receipt must be an object")
        event_ids = receipt.get("event_ids")
        data = receipt.get("data")
        data = data if isinstance(data, Mapping) else {}
        ts = data.get("ts")
        thread_id = data.get("thread_id")
        if not isinstance(event_ids, list) or not event_ids \
                or not all(isinstance(e, str) for e in event_ids):
            raise EduDropped("event_ids must be a non-empty list of event ids")
        if not isinstance(ts, int) or isinstance(ts, bool):
            ts = None
        if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
            raise EduDropped("thread_id must be a non-empty string")
        for event_id in event_ids:
            try:
                self.receipts.set_remote_receipt(user, room_id, receipt_type, event_id,
                                                 thread_id, ts)
            except MatrixError:
                log.debug("receipt of %s for unknown event %s ignored", user, event_id)

    def _presence(self, origin: str, content: Mapping[str, Any]) -> None:
        if not self.config.allow_incoming_presence:
            raise EduDropped("allow_incoming_presence is off")
        push = content.get("push")
        if not isinstance(push, list):
            raise EduDropped("push must be a list")
        for update in push:
            try:
                self._one_presence(origin, update)
            except EduDropped as dropped:
                log.debug("presence from %s dropped: %s", origin, dropped)

    def _one_presence(self, origin: str, update: object) -> None:
        if not isinstance(update, Mapping):
            raise EduDropped("a presence update must be an object")
        user_id = self._user_of(origin, update.get("user_id"))
        state = update.get("presence")
        if state not in PRESENCE_STATES:
            raise EduDropped(f"unknown presence {state!r}")
        ago = update.get("last_active_ago", 0)
        if not isinstance(ago, int) or isinstance(ago, bool):
            ago = 0
        status_msg = update.get("status_msg")
        if not isinstance(status_msg, str):
            status_msg = None
        self.presence.set_remote(user_id, str(state), ago,
                                 update.get("currently_active") is True, status_msg)

    def _device_list_update(self, origin: str, content: Mapping[str, Any]) -> None:
        self._keys_changed(origin, content.get("user_id"))

    def _signing_key_update(self, origin: str, content: Mapping[str, Any]) -> None:
        self._keys_changed(origin, content.get("user_id"))

    def _keys_changed(self, origin: str, user_id: object) -> None:
        """Local users sharing a room with the user re-fetch their keys (we cache none)."""
        user = self._user_of(origin, user_id)
        if not self.rooms.membership.joined_rooms(user):
            raise EduDropped(f"{user} shares no room with us")
        self.e2ee.device_lists.keys_changed(user)

    def _direct_to_device(self, origin: str, content: Mapping[str, Any]) -> None:
        sender = self._user_of(origin, content.get("sender"))
        event_type, message_id = content.get("type"), content.get("message_id")
        messages = content.get("messages")
        if not isinstance(event_type, str) or not event_type:
            raise EduDropped("type must be a non-empty string")
        if not isinstance(message_id, str) or not message_id:
            raise EduDropped("message_id must be a non-empty string")
        if not isinstance(messages, Mapping):
            raise EduDropped("messages must be an object")
        # Only our users: we never relay another server's messages onwards.
        local = {user_id: by_device for user_id, by_device in messages.items()
                 if isinstance(user_id, str) and self.users.is_local(user_id)}
        try:
            # (sender, no device, message_id) is the dedupe key: a resent EDU is ignored.
            self.e2ee.to_device.send(sender, None, event_type, message_id, local)
        except MatrixError as refused:
            raise EduDropped(refused.error) from None
