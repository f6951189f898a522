"""Reading stored events: by id, by timeline position, with their room version."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import orjson

from conduwuit.protocol.events import Event
from conduwuit.protocol.room_versions import ROOM_VERSIONS, RoomVersion
from conduwuit.services.cache import LruCache
from conduwuit.store import Store, WriteBatch, from_u64_be, u64_be

from .short import ShortIds


def pdu_id(shortroomid: int, count: int) -> bytes:
    return u64_be(shortroomid) + u64_be(count)


@attrs.define
class EventStore:
    store: Store
    short: ShortIds
    _versions: dict[str, RoomVersion] = attrs.field(factory=dict)
    _events: LruCache[str, Event] = attrs.field(factory=lambda: LruCache(20_000))

    # --- room versions -------------------------------------------------------------

    def set_room_version(self, batch: WriteBatch, room_id: str, version: RoomVersion) -> None:
        batch.put("roomid_roomversion", room_id.encode(), version.identifier.encode())
        self._versions[room_id] = version

    def room_version(self, room_id: str) -> RoomVersion | None:
        """The version from the room's create event; None for rooms we know nothing of."""
        known = self._versions.get(room_id)
        if known is not None:
            return known
        raw = self.store.tree("roomid_roomversion").get(room_id.encode())
        version = ROOM_VERSIONS.get(raw.decode()) if raw is not None else None
        if version is not None:
            self._versions[room_id] = version
        return version

    # --- events --------------------------------------------------------------------

    def get(self, event_id: str) -> Event | None:
        cached = self._events.get(event_id)
        if cached is not None:
            return cached
        pdu = self._raw_pdu(event_id)
        if pdu is None:
            return None
        room_id = pdu.get("room_id")
        version = self._version_of(pdu, room_id if isinstance(room_id, str) else event_id)
        event = Event(event_id, pdu, version)
        self._events.put(event_id, event)
        return event

    def forget(self, event_id: str) -> None:
        """Drop a cached event whose stored form changed (it was redacted)."""
        self._events.pop(event_id)

    def count_of(self, event_id: str) -> int | None:
        """The timeline position (stream count) of an event, None for outliers."""
        raw = self.store.tree("eventid_pduid").get(event_id.encode())
        return from_u64_be(raw[8:16]) if raw is not None else None

    def timeline(self, room_id: str, *, before: int | None = None, after: int | None = None,
                 reverse: bool = False) -> Iterator[tuple[int, Event]]:
        """The room's timeline events as (count, event), oldest first or newest first."""
        short = self.short.room(room_id)
        if short is None:
            return
        prefix = u64_be(short)
        tree = self.store.tree("pduid_pdu")
        if reverse:
            start = prefix + u64_be((before if before is not None else 2**64) - 1)
            items = tree.iter(prefix, reverse=True, start=start)
        else:
            items = tree.iter(prefix, start=prefix + u64_be((after or 0) + 1))
        for key, raw in items:
            count = from_u64_be(key[8:16])
            if (after is not None and count <= after) or (before is not None and count >= before):
                break
            event = self._event_from(raw)
            if event is not None:
                yield count, event

    def backfilled(self, room_id: str, *, after: int = 0, until: int | None = None,
                   newer_than: int | None = None) -> Iterator[tuple[int, Event]]:
        """Events fetched by backfill (older than the whole timeline) as (seq, event).

        Backfill sequence numbers grow going back in history. By default: going back,
        seq > ``after`` (and <= ``until``). With ``newer_than``: going forward in time,
        seq < ``newer_than`` (and > ``after``). Events that later entered the timeline
        are skipped: they are shown there.
        """
        short = self.short.room(room_id)
        if short is None:
            return
        prefix = u64_be(short)
        tree = self.store.tree("backfillid_eventid")
        if newer_than is not None:
            if newer_than <= 1:
                return
            items = tree.iter(prefix, reverse=True, start=prefix + u64_be(newer_than - 1))
        else:
            items = tree.iter(prefix, start=prefix + u64_be(after + 1))
        timeline = self.store.tree("eventid_pduid")
        for key, raw in items:
            seq = from_u64_be(key[8:16])
            if seq <= after or (until is not None and seq > until):
                break
            if raw in timeline:
                continue
            event = self.get(raw.decode())
            if event is not None:
                yield seq, event

    def rooms(self) -> list[str]:
        """Every room this server holds events of (a scan: the admin room lists them)."""
        return [key.decode() for key in self.store.tree("roomid_roomversion").keys(b"")]

    def known(self, event_id: str) -> bool:
        return (event_id.encode() in self.store.tree("eventid_pduid")
                or event_id.encode() in self.store.tree("eventid_outlierpdu"))

    def _event_from(self, raw: bytes) -> Event | None:
        pdu: dict[str, Any] = orjson.loads(raw)
        event_id = pdu.pop("_event_id", None)
        if not isinstance(event_id, str):
            return None
        cached = self._events.get(event_id)
        if cached is not None:
            return cached
        room_id = pdu.get("room_id")
        event = Event(event_id, pdu, self._version_of(pdu, room_id if isinstance(room_id, str)
                                                      else event_id))
        self._events.put(event_id, event)
        return event

    def _raw_pdu(self, event_id: str) -> dict[str, Any] | None:
        pid = self.store.tree("eventid_pduid").get(event_id.encode())
        raw = (self.store.tree("pduid_pdu").get(pid) if pid is not None
               else self.store.tree("eventid_outlierpdu").get(event_id.encode()))
        if raw is None:
            return None
        pdu: dict[str, Any] = orjson.loads(raw)
        pdu.pop("_event_id", None)
        return pdu

    def _version_of(self, pdu: dict[str, Any], room_id: str) -> RoomVersion:
        stored = pdu.pop("_room_version", None)
        if isinstance(stored, str) and stored in ROOM_VERSIONS:
            return ROOM_VERSIONS[stored]
        if pdu.get("type") == "m.room.create" and pdu.get("state_key") == "":
            content = pdu.get("content", {})
            version = ROOM_VERSIONS.get(str(content.get("room_version", "1")))
            if version is not None:
                return version
        return self.room_version(room_id) or ROOM_VERSIONS["1"]


def encode_stored(event_id: str, pdu: dict[str, Any],
                  version: RoomVersion | None = None) -> bytes:
    """Stored form: the PDU plus our private ``_event_id`` (v3+ PDUs carry no id).

    Outliers may belong to rooms whose version we have not recorded (an invite to a
    room we are not in), so they also keep ``_room_version``.
    """
    extra: dict[str, Any] = {"_event_id": event_id}
    if version is not None:
        extra["_room_version"] = version.identifier
    return orjson.dumps({**pdu, **extra})
