"""Short ids: u64 stand-ins for room ids, event ids and (type, state_key) pairs.

State snapshots and indexes store these 8-byte numbers instead of long
strings. A short id never changes once given, so lookups are cached freely.
"""

from __future__ import annotations

import attrs

from conduwuit.services.cache import LruCache
from conduwuit.store import SEP, Store, from_u64_be, join, u64_be

StateKey = tuple[str, str]


def _decode_pair(raw: bytes) -> StateKey:
    event_type, _, state_key = raw.partition(SEP)
    return event_type.decode(), state_key.decode()


@attrs.define
class ShortIds:
    store: Store
    _rooms: LruCache[str, int] = attrs.field(factory=lambda: LruCache(10_000))
    _events: LruCache[str, int] = attrs.field(factory=lambda: LruCache(100_000))
    _event_ids: LruCache[int, str] = attrs.field(factory=lambda: LruCache(100_000))
    _statekeys: LruCache[StateKey, int] = attrs.field(factory=lambda: LruCache(100_000))
    _pairs: LruCache[int, StateKey] = attrs.field(factory=lambda: LruCache(100_000))

    def room(self, room_id: str, *, create: bool = False) -> int | None:
        return self._get(room_id.encode(), room_id, self._rooms, "roomid_shortroomid",
                         "shortroomid_roomid", create)

    def room_id(self, short: int) -> str:
        raw = self.store.tree("shortroomid_roomid").get(u64_be(short))
        assert raw is not None, f"unknown shortroomid {short}"
        return raw.decode()

    def event(self, event_id: str, *, create: bool = False) -> int | None:
        return self._get(event_id.encode(), event_id, self._events, "eventid_shorteventid",
                         "shorteventid_eventid", create)

    def event_id(self, short: int) -> str:
        cached = self._event_ids.get(short)
        if cached is not None:
            return cached
        raw = self.store.tree("shorteventid_eventid").get(u64_be(short))
        assert raw is not None, f"unknown shorteventid {short}"
        self._event_ids.put(short, raw.decode())
        return raw.decode()

    def statekey(self, pair: StateKey, *, create: bool = False) -> int | None:
        return self._get(join(*pair), pair, self._statekeys, "statekey_shortstatekey",
                         "shortstatekey_statekey", create)

    def pair(self, short: int) -> StateKey:
        cached = self._pairs.get(short)
        if cached is not None:
            return cached
        raw = self.store.tree("shortstatekey_statekey").get(u64_be(short))
        assert raw is not None, f"unknown shortstatekey {short}"
        pair = _decode_pair(raw)
        self._pairs.put(short, pair)
        return pair

    def _get(self, key: bytes, cache_key: object, cache: LruCache, forward: str,  # type: ignore[type-arg]
             backward: str, create: bool) -> int | None:
        cached = cache.get(cache_key)
        if cached is not None:
            return int(cached)
        raw = self.store.tree(forward).get(key)
        if raw is not None:
            short = from_u64_be(raw)
        elif not create:
            return None
        else:
            # No await between the read above and this write: no other task can race us.
            short = self.store.next_count()
            with self.store.batch() as batch:
                batch.put(forward, key, u64_be(short))
                batch.put(backward, u64_be(short), key)
        cache.put(cache_key, short)
        return short
