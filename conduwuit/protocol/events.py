"""A room event (PDU) as the rules see it: its JSON plus typed accessors.

The JSON is the federation form of the event for its room version. Auth rules
and state resolution read events only through this class, so the v1/v2
"[event_id, hashes]" pairs and the v11 move of ``redacts`` are handled once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .hashes import event_id_for
from .room_versions import EventFormat, RoomVersion

StateKey = tuple[str, str]  # (event type, state key)


@attrs.frozen(eq=False)
class Event:
    event_id: str
    pdu: Mapping[str, Any]
    room_version: RoomVersion

    @classmethod
    def from_pdu(cls, pdu: Mapping[str, Any], room_version: RoomVersion) -> Event:
        """Wrap a federation-form PDU, computing its event id per the room version.

        v1/v2 read ``event_id`` from the PDU; v3+ hash the redacted event, so the
        PDU must not carry an ``event_id`` key (see ``hashes.event_id_for``).
        """
        return cls(event_id_for(pdu, room_version), pdu, room_version)

    @property
    def type(self) -> str:
        return str(self.pdu["type"])

    @property
    def state_key(self) -> str | None:
        value = self.pdu.get("state_key")
        return value if isinstance(value, str) else None

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def state_pair(self) -> StateKey:
        """(type, state_key); only meaningful for state events."""
        return (self.type, self.state_key or "")

    @property
    def sender(self) -> str:
        return str(self.pdu["sender"])

    @property
    def room_id(self) -> str | None:
        value = self.pdu.get("room_id")
        if isinstance(value, str):
            return value
        if self.room_version.room_id_is_create_hash and self.type == "m.room.create":
            # v12: the create event carries no room_id; the room id is "!" + the same
            # reference hash that makes its event id "$" + hash.
            return "!" + self.event_id[1:]
        return None

    @property
    def content(self) -> Mapping[str, Any]:
        value = self.pdu.get("content")
        return value if isinstance(value, Mapping) else {}

    @property
    def origin_server_ts(self) -> int:
        value = self.pdu.get("origin_server_ts", 0)
        return value if isinstance(value, int) else 0

    @property
    def depth(self) -> int:
        value = self.pdu.get("depth", 0)
        return value if isinstance(value, int) else 0

    @property
    def prev_event_ids(self) -> list[str]:
        return _ids(self.pdu.get("prev_events"), self.room_version)

    @property
    def auth_event_ids(self) -> list[str]:
        return _ids(self.pdu.get("auth_events"), self.room_version)

    @property
    def redacts(self) -> str | None:
        """The event a redaction redacts: in content from v11, at the top level before."""
        if self.room_version.redacts_in_content:
            value = self.content.get("redacts")
        else:
            value = self.pdu.get("redacts")
        return value if isinstance(value, str) else None

    @property
    def membership(self) -> str | None:
        value = self.content.get("membership")
        return value if isinstance(value, str) else None


def _ids(value: object, version: RoomVersion) -> list[str]:
    if not isinstance(value, list):
        return []
    if version.event_format is EventFormat.V1:
        # [[event_id, {"sha256": ...}], ...]
        return [str(item[0]) for item in value if isinstance(item, list) and item]
    return [str(item) for item in value if isinstance(item, str)]
