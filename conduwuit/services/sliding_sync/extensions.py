"""Extensions: to-device (MSC3885), e2ee (MSC3884), account data (MSC3959),
receipts (MSC3960) and typing (MSC3961), each read from the same sources as /sync.

Account data and receipts of a room are tracked per connection like the room itself: a
room the connection never got them for gets all of it (room account data; for receipts,
those on the events of the timeline just sent plus the user's own), afterwards only what
changed after the position the connection holds it at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ..account_data import AccountData
from ..receipts import READ_PRIVATE, Receipts
from ..requester import Requester
from ..sync import Sync
from ..typing import Typing
from .connections import ConnState
from .request import Extensions, scoped_rooms


@attrs.frozen
class ExtensionInput:
    who: Requester
    config: Extensions
    since: int | None
    upto: int
    list_rooms: Mapping[str, list[str]]
    subscribed: Iterable[str]
    initial_rooms: set[str]  # rooms sent with ``initial`` in this response
    timeline_ids: Mapping[str, tuple[str, ...]]


@attrs.define
class ExtensionSources:
    sync: Sync
    account_data: AccountData
    receipts: Receipts
    typing: Typing

    def build(self, given: ExtensionInput, prev: ConnState,
              account_state: dict[str, int], receipt_state: dict[str, int]) -> dict[str, Any]:
        """The ``extensions`` object; updates the per-room account data/receipt maps."""
        out: dict[str, Any] = {}
        cfg = given.config
        if cfg.to_device.enabled:
            out["to_device"] = self._to_device(given)
        if cfg.e2ee:
            out["e2ee"] = self._e2ee(given)
        if cfg.account_data.enabled:
            rooms = scoped_rooms(cfg.account_data, given.list_rooms, given.subscribed)
            out["account_data"] = self._account_data(given, rooms, prev, account_state)
        if cfg.receipts.enabled:
            rooms = scoped_rooms(cfg.receipts, given.list_rooms, given.subscribed)
            out["receipts"] = {"rooms": self._receipts(given, rooms, prev, receipt_state)}
        if cfg.typing.enabled:
            rooms = scoped_rooms(cfg.typing, given.list_rooms, given.subscribed)
            out["typing"] = {"rooms": self._typing(given, rooms)}
        return out

    def _to_device(self, given: ExtensionInput) -> dict[str, Any]:
        who, upto = given.who, given.upto
        since = given.config.to_device.since or 0
        source = self.sync.to_device_source
        if since > upto:  # a token from the future: keep it, deliver nothing
            return {"next_batch": str(since), "events": []}
        if who.device_id is None or source is None:
            return {"next_batch": str(upto), "events": []}
        # Reading with ``since`` acknowledges (deletes) everything up to it.
        return {"next_batch": str(upto), "events": source(who.user_id, who.device_id, since,
                                                          upto)}

    def _e2ee(self, given: ExtensionInput) -> dict[str, Any]:
        sync, who = self.sync, given.who
        body: dict[str, Any] = {
            "device_one_time_keys_count": (sync.key_count_source(who.user_id, who.device_id)
                                           if sync.key_count_source is not None else {}),
            "device_unused_fallback_key_types": (
                sync.fallback_source(who.user_id, who.device_id)
                if sync.fallback_source is not None else []),
        }
        if given.since is not None and sync.device_list_source is not None:
            body["device_lists"] = sync.device_list_source(who.user_id, given.since,
                                                           given.upto)
        return body

    def _account_data(self, given: ExtensionInput, rooms: set[str], prev: ConnState,
                      state: dict[str, int]) -> dict[str, Any]:
        user_id = given.who.user_id
        by_room: dict[str, list[dict[str, Any]]] = {}
        for room_id in sorted(rooms):
            held = prev.account_data.get(room_id)
            start = 0 if held is None or room_id in given.initial_rooms else held
            events = self.account_data.changes_since(user_id, start, room_id)
            if events:
                by_room[room_id] = events
            state[room_id] = given.upto
        return {"global": self.account_data.changes_since(user_id, given.since or 0, None),
                "rooms": by_room}

    def _receipts(self, given: ExtensionInput, rooms: set[str], prev: ConnState,
                  state: dict[str, int]) -> dict[str, Any]:
        user_id = given.who.user_id
        out: dict[str, Any] = {}
        for room_id in sorted(rooms):
            held = prev.receipts.get(room_id)
            state[room_id] = given.upto
            if held is not None and room_id not in given.initial_rooms:
                events = self.receipts.ephemeral(room_id, user_id, held, given.upto)
                if events:
                    out[room_id] = events[0]
                continue
            wanted = set(given.timeline_ids.get(room_id, ()))
            content: dict[str, dict[str, dict[str, Any]]] = {}
            for _, receipt in self.receipts.receipts_since(room_id, 0, given.upto):
                if receipt.event_id not in wanted and receipt.user_id != user_id:
                    continue
                if receipt.receipt_type == READ_PRIVATE and receipt.user_id != user_id:
                    continue
                entry: dict[str, Any] = {"ts": receipt.ts}
                if receipt.thread_id is not None:
                    entry["thread_id"] = receipt.thread_id
                content.setdefault(receipt.event_id, {}).setdefault(
                    receipt.receipt_type, {})[receipt.user_id] = entry
            if content:
                out[room_id] = {"type": "m.receipt", "content": content}
        return out

    def _typing(self, given: ExtensionInput, rooms: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for room_id in sorted(rooms):
            since = 0 if given.since is None or room_id in given.initial_rooms else given.since
            events = self.typing.ephemeral(room_id, given.who.user_id, since, given.upto)
            if events:
                out[room_id] = events[0]
        return out


def has_news(extensions: Mapping[str, Any]) -> bool:
    """Whether the extensions carry anything a long-poll should return for."""
    if extensions.get("to_device", {}).get("events"):
        return True
    lists = extensions.get("e2ee", {}).get("device_lists", {})
    if lists.get("changed") or lists.get("left"):
        return True
    account = extensions.get("account_data", {})
    if account.get("global") or account.get("rooms"):
        return True
    return bool(extensions.get("receipts", {}).get("rooms")
                or extensions.get("typing", {}).get("rooms"))
