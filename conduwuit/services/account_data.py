"""Per-user account data, global and per room, and the room tags kept in ``m.tag``.

Owns ``roomuserdataid_accountdata`` and ``roomusertype_roomuserdataid``. Each write
takes a fresh stream position from the store's counter and replaces the user's previous
event of that type, so the data tree holds exactly the latest event of each type, in
stream order: ``changes_since`` is one prefix scan starting after the ``since`` position.
Global account data uses ``''`` as its room id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import orjson

from conduwuit.errors import MatrixError, bad_json, invalid_param
from conduwuit.store import SEP, Store, from_u64_be, join, u64_be
from conduwuit.store.keys import U64_MAX

_T_DATA = "roomuserdataid_accountdata"
_T_INDEX = "roomusertype_roomuserdataid"
GLOBAL = ""

TAG_TYPE = "m.tag"
# Kept up to date by the server itself; the spec has clients use other endpoints
# (read markers, push rules) and servers MUST refuse them here (405 M_BAD_JSON).
SERVER_MANAGED = frozenset({"m.fully_read", "m.push_rules"})
MAX_TYPE_BYTES = 255  # the spec's limit on event types
MAX_TAG_BYTES = 255
MAX_ROOM_ID_BYTES = 255

# Called after every write with (user_id, room_id or None, stream position); /sync
# registers its notifier here.
ChangeHook = Callable[[str, str | None, int], None]


@attrs.define
class AccountData:
    store: Store
    on_change: list[ChangeHook] = attrs.field(factory=list)

    # ------------------------------------------------------------------ reads

    def get(self, user_id: str, room_id: str | None, event_type: str) -> dict[str, Any] | None:
        """The content of the user's latest event of ``event_type``, or ``None``."""
        data_key = self.store.tree(_T_INDEX).get(join(room_id or GLOBAL, user_id, event_type))
        if data_key is None:
            return None
        raw = self.store.tree(_T_DATA).get(data_key)
        if raw is None:
            return None
        content: dict[str, Any] = orjson.loads(raw)["content"]
        return content

    def changes_since(
        self, user_id: str, since: int, room_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Events (``{"type", "content"}``) written after stream position ``since``.

        One per type (its latest), oldest first. ``room_id=None`` is global data;
        ``since=0`` gives everything.
        """
        if since >= U64_MAX:
            return []
        prefix = join(room_id or GLOBAL, user_id) + SEP
        start = prefix + u64_be(max(since, 0) + 1)
        return [orjson.loads(raw) for _, raw in self.store.tree(_T_DATA).iter(prefix, start=start)]

    def latest_position(self, user_id: str, room_id: str | None = None) -> int:
        """The stream position of the user's newest write here (0 if none)."""
        prefix = join(room_id or GLOBAL, user_id) + SEP
        for key in self.store.tree(_T_DATA).keys(prefix, reverse=True):
            return from_u64_be(key[len(prefix) : len(prefix) + 8])
        return 0

    # ----------------------------------------------------------------- writes

    def set(
        self, user_id: str, room_id: str | None, event_type: str, content: dict[str, Any]
    ) -> int:
        """Store an event of any type, server-managed ones included; returns its position."""
        room = room_id or GLOBAL
        position = self.store.next_count()
        data_key = join(room, user_id, position, event_type)
        index_key = join(room, user_id, event_type)
        previous = self.store.tree(_T_INDEX).get(index_key)
        event = orjson.dumps({"type": event_type, "content": content})
        with self.store.batch() as batch:
            if previous is not None:
                batch.delete(_T_DATA, previous)
            batch.put(_T_DATA, data_key, event)
            batch.put(_T_INDEX, index_key, data_key)
        for hook in self.on_change:
            hook(user_id, room_id or None, position)
        return position

    def set_by_client(
        self, user_id: str, room_id: str | None, event_type: str, content: dict[str, Any]
    ) -> int:
        """``PUT .../account_data/{type}``: :meth:`set` after the spec's checks."""
        if room_id is not None:
            check_room_id(room_id)
        check_type(event_type)
        if event_type in SERVER_MANAGED:
            raise MatrixError(
                405, "M_BAD_JSON", f"Cannot set {event_type} through this API; it is "
                "managed by the server"
            )
        return self.set(user_id, room_id, event_type, content)

    # ------------------------------------------------------------------- tags

    def tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        """The user's tags on ``room_id`` (``m.tag``'s ``tags``), ``{}`` when none."""
        content = self.get(user_id, room_id, TAG_TYPE) or {}
        tags = content.get("tags")
        return dict(tags) if isinstance(tags, dict) else {}

    def set_tag(self, user_id: str, room_id: str, tag: str, content: dict[str, Any]) -> int:
        check_room_id(room_id)
        check_tag(tag, content)
        tags = self.tags(user_id, room_id)
        tags[tag] = content
        return self.set(user_id, room_id, TAG_TYPE, {"tags": tags})

    def delete_tag(self, user_id: str, room_id: str, tag: str) -> int | None:
        """Remove ``tag``; ``None`` (and no new event) when it was not set."""
        check_room_id(room_id)
        tags = self.tags(user_id, room_id)
        if tag not in tags:
            return None
        del tags[tag]
        return self.set(user_id, room_id, TAG_TYPE, {"tags": tags})


# ------------------------------------------------------------------ validation


def is_valid_room_id(room_id: str) -> bool:
    """``!opaque:server`` (room versions 1-11) or ``!hash`` (v12): '!' then no spaces or
    control characters, at most 255 bytes.

    TODO: use a room id parser from conduwuit.protocol.ids once it has one.
    """
    if len(room_id.encode()) > MAX_ROOM_ID_BYTES or len(room_id) < 2:
        return False
    return room_id[0] == "!" and not any(c <= " " or c == "\x7f" for c in room_id[1:])


def check_room_id(room_id: str) -> None:
    if not is_valid_room_id(room_id):
        raise invalid_param(f"{room_id!r} is not a valid room ID")


def check_type(event_type: str) -> None:
    if not event_type or len(event_type.encode()) > MAX_TYPE_BYTES:
        raise invalid_param(f"Account data types must be 1 to {MAX_TYPE_BYTES} bytes long")


def check_tag(tag: str, content: dict[str, Any]) -> None:
    """Tag names up to 255 bytes; ``order``, when given, a number in [0, 1] (spec tag.yaml)."""
    if not tag or len(tag.encode()) > MAX_TAG_BYTES:
        raise invalid_param(f"Tag names must be 1 to {MAX_TAG_BYTES} bytes long")
    if "order" not in content:
        return
    order = content["order"]
    if isinstance(order, bool) or not isinstance(order, int | float):
        raise bad_json("Tag 'order' must be a number")
    if not 0 <= order <= 1:
        raise invalid_param("Tag 'order' must be between 0 and 1")
