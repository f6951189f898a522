"""State snapshots: immutable maps (shortstatekey -> shorteventid) stored as diffs.

A room's state changes one event at a time, so each snapshot is stored as the
entries added and removed relative to a parent snapshot. Chains are kept
short (at most :data:`MAX_CHAIN` links, and a diff is never allowed to grow
past half the full map) so loading any snapshot touches a few records; loaded
maps are cached. Identical maps get the same id (keyed by their sha256).
"""

from __future__ import annotations

import hashlib
import struct

import attrs

from conduwuit.services.cache import LruCache
from conduwuit.store import Store, from_u64_be, u64_be

StateIds = dict[int, int]  # shortstatekey -> shorteventid

MAX_CHAIN = 12
_ENTRY = struct.Struct(">QQ")


def _encode(entries: dict[int, int]) -> bytes:
    return b"".join(_ENTRY.pack(k, v) for k, v in sorted(entries.items()))


def _decode(raw: bytes) -> dict[int, int]:
    return dict(_ENTRY.iter_unpack(raw))


def _digest(state: StateIds) -> bytes:
    return hashlib.sha256(_encode(state)).digest()


@attrs.frozen
class _Record:
    parent: int  # 0: a full snapshot
    depth: int
    added: dict[int, int]
    removed: dict[int, int]

    def encode(self) -> bytes:
        added, removed = _encode(self.added), _encode(self.removed)
        return u64_be(self.parent) + u64_be(self.depth) + u64_be(len(added)) + added + removed

    @classmethod
    def decode(cls, raw: bytes) -> _Record:
        parent, depth, size = from_u64_be(raw[:8]), from_u64_be(raw[8:16]), from_u64_be(raw[16:24])
        return cls(parent, depth, _decode(raw[24 : 24 + size]), _decode(raw[24 + size :]))


@attrs.define
class StateStore:
    store: Store
    _cache: LruCache[int, StateIds] = attrs.field(factory=lambda: LruCache(512))

    def save(self, state: StateIds, parent: int | None = None) -> int:
        """The id of a snapshot equal to ``state``, storing it (as a diff) if new."""
        digest = _digest(state)
        known = self.store.tree("statehash_shortstatehash").get(digest)
        if known is not None:
            return from_u64_be(known)
        record = self._record_for(state, parent)
        short = self.store.next_count()
        with self.store.batch() as batch:
            batch.put("statehash_shortstatehash", digest, u64_be(short))
            batch.put("shortstatehash_statediff", u64_be(short), record.encode())
        self._cache.put(short, dict(state))
        return short

    def load(self, short: int) -> StateIds:
        """The full map of a snapshot; callers must not mutate it."""
        cached = self._cache.get(short)
        if cached is not None:
            return cached
        chain: list[_Record] = []
        cursor = short
        base: StateIds = {}
        while cursor:
            cached = self._cache.get(cursor)
            if cached is not None:
                base = cached
                break
            record = self._read(cursor)
            chain.append(record)
            cursor = record.parent
        state = dict(base)
        for record in reversed(chain):
            for key in record.removed:
                state.pop(key, None)
            state.update(record.added)
        self._cache.put(short, state)
        return state

    def _record_for(self, state: StateIds, parent: int | None) -> _Record:
        if not parent:
            return _Record(0, 0, dict(state), {})
        parent_state = self.load(parent)
        parent_depth = self._read(parent).depth
        added = {k: v for k, v in state.items() if parent_state.get(k) != v}
        removed = {k: v for k, v in parent_state.items() if k not in state}
        too_deep = parent_depth + 1 > MAX_CHAIN
        too_big = len(added) + len(removed) > max(8, len(state) // 2)
        if too_deep or too_big:
            return _Record(0, 0, dict(state), {})
        return _Record(parent, parent_depth + 1, added, removed)

    def _read(self, short: int) -> _Record:
        raw = self.store.tree("shortstatehash_statediff").get(u64_be(short))
        if raw is None:
            raise KeyError(f"state snapshot {short} is missing from the store")
        return _Record.decode(raw)
