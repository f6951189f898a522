"""Room state: the current state of each room and the state after any event."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from conduwuit.protocol.events import Event
from conduwuit.services.cache import LruCache
from conduwuit.store import Store, WriteBatch, from_u64_be, u64_be

from .events_db import EventStore
from .short import ShortIds, StateKey
from .state_store import StateIds, StateStore

CREATE: StateKey = ("m.room.create", "")
POWER_LEVELS: StateKey = ("m.room.power_levels", "")
JOIN_RULES: StateKey = ("m.room.join_rules", "")
HISTORY_VISIBILITY: StateKey = ("m.room.history_visibility", "")
NAME: StateKey = ("m.room.name", "")
TOPIC: StateKey = ("m.room.topic", "")
AVATAR: StateKey = ("m.room.avatar", "")
CANONICAL_ALIAS: StateKey = ("m.room.canonical_alias", "")
ENCRYPTION: StateKey = ("m.room.encryption", "")
GUEST_ACCESS: StateKey = ("m.room.guest_access", "")


def member_key(user_id: str) -> StateKey:
    return ("m.room.member", user_id)


StateMap = dict[StateKey, str]  # (type, state_key) -> event id


@attrs.define
class RoomState:
    store: Store
    short: ShortIds
    snapshots: StateStore
    events: EventStore
    _expansions: LruCache[int, StateMap] = attrs.field(factory=lambda: LruCache(256))

    def current_hash(self, room_id: str) -> int | None:
        raw = self.store.tree("roomid_shortstatehash").get(room_id.encode())
        return from_u64_be(raw) if raw is not None else None

    def current_ids(self, room_id: str) -> StateIds:
        short = self.current_hash(room_id)
        return self.snapshots.load(short) if short else {}

    def current(self, room_id: str) -> StateMap:
        """The room's current state; shared with other callers, so never mutate it."""
        short = self.current_hash(room_id)
        return self._expanded(short) if short else {}

    def event_id(self, room_id: str, pair: StateKey) -> str | None:
        key = self.short.statekey(pair)
        if key is None:
            return None
        short_event = self.current_ids(room_id).get(key)
        return self.short.event_id(short_event) if short_event is not None else None

    def get(self, room_id: str, pair: StateKey) -> Event | None:
        event_id = self.event_id(room_id, pair)
        return self.events.get(event_id) if event_id is not None else None

    def content(self, room_id: str, pair: StateKey) -> Mapping[str, object]:
        event = self.get(room_id, pair)
        return event.content if event is not None else {}

    def hash_after(self, event_id: str) -> int | None:
        short_event = self.short.event(event_id)
        if short_event is None:
            return None
        raw = self.store.tree("shorteventid_shortstatehash").get(u64_be(short_event))
        return from_u64_be(raw) if raw is not None else None

    def after(self, event_id: str) -> StateMap | None:
        """The room state once ``event_id`` is applied (shared: never mutate); None if unknown."""
        short = self.hash_after(event_id)
        return self._expanded(short) if short else None

    def _expanded(self, short: int) -> StateMap:
        # Snapshots never change, so their expanded maps are cached: every send and
        # every sync of a big room would otherwise expand the same map again.
        cached = self._expansions.get(short)
        if cached is None:
            cached = self.expand(self.snapshots.load(short))
            self._expansions.put(short, cached)
        return cached

    def events_of(self, state: StateMap) -> dict[StateKey, Event]:
        loaded = {pair: self.events.get(event_id) for pair, event_id in state.items()}
        return {pair: event for pair, event in loaded.items() if event is not None}

    def expand(self, ids: StateIds) -> StateMap:
        return {self.short.pair(k): self.short.event_id(v) for k, v in ids.items()}

    def compress(self, state: Mapping[StateKey, str]) -> StateIds:
        compressed: StateIds = {}
        for pair, event_id in state.items():
            key = self.short.statekey(pair, create=True)
            value = self.short.event(event_id, create=True)
            assert key is not None and value is not None
            compressed[key] = value
        return compressed

    def stage_after(self, batch: WriteBatch, event_id: str, state_hash: int) -> None:
        short_event = self.short.event(event_id, create=True)
        assert short_event is not None
        batch.put("shorteventid_shortstatehash", u64_be(short_event), u64_be(state_hash))

    def stage_current(self, batch: WriteBatch, room_id: str, state_hash: int) -> None:
        batch.put("roomid_shortstatehash", room_id.encode(), u64_be(state_hash))
