"""Building, authorizing and persisting local events: the one write path of rooms.

Every local event is built as a full federation PDU (prev_events, auth_events,
depth, content hash, our signature, the version's event id), checked against
the room's auth rules with the current state, and persisted in ONE write
batch together with every index it changes. A crash mid-write leaves either
the whole event or nothing. Events of a room are built one at a time under
the room's lock, so prev_events and state never race.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from conduwuit.errors import MatrixError
from conduwuit.protocol import hashes, redaction, signing
from conduwuit.protocol.auth import AuthError, auth_types_for_event, can_redact, check_auth
from conduwuit.protocol.events import Event
from conduwuit.protocol.power_levels import PowerLevels
from conduwuit.protocol.room_versions import EventFormat, RoomVersion
from conduwuit.services.cache import LruCache
from conduwuit.services.server_keys import ServerKeys
from conduwuit.store import Store, WriteBatch, join, u64_be

from .events_db import EventStore, encode_stored, pdu_id
from .format import stripped_state
from .membership import INVITE, KNOCK, Membership
from .short import ShortIds
from .state import (
    AVATAR,
    CANONICAL_ALIAS,
    CREATE,
    ENCRYPTION,
    JOIN_RULES,
    NAME,
    POWER_LEVELS,
    RoomState,
    StateMap,
)
from .state_store import StateStore

log = logging.getLogger(__name__)

MAX_PREV_EVENTS = 20
# State shown to invited and knocking users before they join.
STRIPPED_STATE = (CREATE, JOIN_RULES, NAME, AVATAR, CANONICAL_ALIAS, ENCRYPTION)

# Called after an event is persisted, with the event and its stream count:
# the sync notifier, the federation sender, push.
NewEvent = Callable[[Event, int], None]
# Called while an event is persisted, to add derived index writes (relations,
# search, receipts...) to the event's own batch: they land with it or not at all.
IndexWriter = Callable[[WriteBatch, Event, int], None]
# Given a checked local event, returns the copy to persist (see Timeline.send).
Countersign = Callable[[Event], Awaitable[Event]]


@attrs.frozen
class Draft:
    """What a client asks to send; the timeline fills in the rest of the PDU."""

    sender: str
    type: str
    content: Mapping[str, Any]
    state_key: str | None = None
    redacts: str | None = None
    txn: tuple[str, str] | None = None  # (device_id, txn_id) for idempotent sends


@attrs.define
class Timeline:
    store: Store
    server_name: str
    keys: ServerKeys
    short: ShortIds
    events: EventStore
    state: RoomState
    snapshots: StateStore
    membership: Membership
    on_event: list[NewEvent] = attrs.field(factory=list)
    index_writers: list[IndexWriter] = attrs.field(factory=list)
    _locks: dict[str, trio.Lock] = attrs.field(factory=dict)
    # room_id -> forward extremities, as committed: read on every send, and a prefix scan
    # of roomid_pduleaves wades through the tombstones of every leaf ever replaced.
    _leaves: LruCache[str, list[str]] = attrs.field(factory=lambda: LruCache(10_000))

    def lock(self, room_id: str) -> trio.Lock:
        return self._locks.setdefault(room_id, trio.Lock())

    # --- creating a room -----------------------------------------------------------

    async def create(self, version: RoomVersion, sender: str,
                     content: Mapping[str, Any], room_id: str | None = None) -> str:
        """Persist a new room's create event; returns the new room's id."""
        content = {**content, "room_version": version.identifier}
        if not version.creator_is_sender:
            content["creator"] = sender
        pdu: dict[str, Any] = self._skeleton(version, sender, "m.room.create", content, "")
        pdu.update(prev_events=[], auth_events=[], depth=1)
        if not version.room_id_is_create_hash:
            pdu["room_id"] = room_id or f"!{secrets.token_urlsafe(12)}:{self.server_name}"
        event = self._seal(pdu, version)
        room = event.room_id or hashes.room_id_from_create(event.pdu, version)
        async with self.lock(room):
            if self.events.room_version(room) is not None:
                raise MatrixError(400, "M_ROOM_IN_USE", "A room with this id already exists")
            self._authorize(event, {}, None)
            self._persist(room, event, {}, None)
        return room

    # --- sending into an existing room ---------------------------------------------

    async def send(self, room_id: str, draft: Draft,
                   countersign: Countersign | None = None) -> Event:
        """Build, check and persist a local event.

        ``countersign``, if given, is awaited with the checked event before it is
        persisted and returns the copy to persist: an invite of a remote user goes to
        the invitee's server first, which adds its signature (the room stays locked
        meanwhile, so nothing else enters the timeline in between).
        """
        async with self.lock(room_id):
            if draft.txn is not None:
                known = self.txn_event(room_id, draft)
                if known is not None:
                    return known
            version = self.events.room_version(room_id)
            if version is None:
                raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
            state = self.state.current(room_id)
            create = self.events.get(state[CREATE]) if CREATE in state else None
            pdu = self.template(room_id, version, state, draft)
            event = self._seal(pdu, version)
            self._authorize(event, state, create)
            if countersign is not None:
                event = await countersign(event)
            self._persist(room_id, event, state, draft)
            return event

    def template(self, room_id: str, version: RoomVersion, state: StateMap,
                 draft: Draft) -> dict[str, Any]:
        """The unsigned PDU of a new event on top of the room's forward extremities:
        what ``make_join``/``make_leave``/``make_knock`` hand to another server."""
        pdu = self._skeleton(version, draft.sender, draft.type, dict(draft.content),
                             draft.state_key)
        pdu["room_id"] = room_id
        if draft.redacts is not None:
            if version.redacts_in_content:
                pdu["content"] = {**pdu["content"], "redacts": draft.redacts}
            else:
                pdu["redacts"] = draft.redacts
        self._link(pdu, room_id, version, state, draft)
        return pdu

    def txn_event(self, room_id: str, draft: Draft) -> Event | None:
        """The event already sent for this request, if the client is retrying it."""
        raw = self.store.tree("userdevicetxnid_eventid").get(_txn_key(room_id, draft))
        return self.events.get(raw.decode()) if raw is not None else None

    # --- building ------------------------------------------------------------------

    def _skeleton(self, version: RoomVersion, sender: str, event_type: str,
                  content: dict[str, Any], state_key: str | None) -> dict[str, Any]:
        pdu: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": content,
            "origin_server_ts": int(time.time() * 1000),
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if not version.updated_redaction_rules:
            pdu["origin"] = self.server_name  # still read by older servers
        if version.event_format is EventFormat.V1:
            pdu["event_id"] = f"${secrets.token_urlsafe(18)}:{self.server_name}"
        return pdu

    def _link(self, pdu: dict[str, Any], room_id: str, version: RoomVersion,
              state: StateMap, draft: Draft) -> None:
        """prev_events from the forward extremities, auth_events from the current state."""
        prev_ids = self.leaves(room_id)[:MAX_PREV_EVENTS]
        prevs = [e for e in (self.events.get(i) for i in prev_ids) if e is not None]
        pdu["depth"] = min(2**53 - 1, max((e.depth for e in prevs), default=0) + 1)
        wanted = auth_types_for_event(draft.type, draft.state_key, draft.sender,
                                      pdu["content"], version)
        auth_ids = sorted(state[pair] for pair in wanted if pair in state)
        pdu["prev_events"] = self._references(prev_ids, version)
        pdu["auth_events"] = self._references(auth_ids, version)

    def _references(self, event_ids: list[str], version: RoomVersion) -> list[Any]:
        if version.event_format is not EventFormat.V1:
            return list(event_ids)
        # v1/v2 cite [event_id, {"sha256": content hash}] pairs.
        refs: list[Any] = []
        for event_id in event_ids:
            event = self.events.get(event_id)
            digest = event.pdu.get("hashes", {}) if event is not None else {}
            refs.append([event_id, dict(digest)])
        return refs

    def _seal(self, pdu: dict[str, Any], version: RoomVersion) -> Event:
        hashed = hashes.with_content_hash(pdu)
        signed = signing.sign_event(hashed, self.server_name, self.keys.key, version)
        return Event(hashes.event_id_for(signed, version), signed, version)

    def _authorize(self, event: Event, state: StateMap, create: Event | None) -> None:
        pairs = auth_types_for_event(event.type, event.state_key, event.sender, event.content,
                                     event.room_version)
        auth_state = self.state.events_of({p: state[p] for p in pairs if p in state})
        try:
            check_auth(event, auth_state, create=create)
        except AuthError as refused:
            raise MatrixError(403, "M_FORBIDDEN", f"Not allowed: {refused}") from None

    # --- persisting ----------------------------------------------------------------

    def _persist(self, room_id: str, event: Event, before: StateMap,
                 draft: Draft | None) -> None:
        count = self.store.next_count()
        shortroomid = self.short.room(room_id, create=True)
        assert shortroomid is not None
        state_hash = self._state_after(room_id, event, before)
        with self.store.batch(sync=True) as batch:
            key = pdu_id(shortroomid, count)
            batch.put("pduid_pdu", key, encode_stored(event.event_id, dict(event.pdu)))
            batch.put("eventid_pduid", event.event_id.encode(), key)
            self.state.stage_after(batch, event.event_id, state_hash)
            if event.is_state:
                self.state.stage_current(batch, room_id, state_hash)
            if event.type == "m.room.create" and event.state_key == "":
                self.events.set_room_version(batch, room_id, event.room_version)
            self._stage_leaves(batch, shortroomid, event)
            if event.type == "m.room.member" and event.state_key is not None:
                self._stage_membership(batch, room_id, event, before, count)
            if draft is not None and draft.txn is not None:
                batch.put("userdevicetxnid_eventid", _txn_key(room_id, draft),
                          event.event_id.encode())
                batch.put("eventid_txnid", event.event_id.encode(), join(*draft.txn))
            if event.redacts is not None:
                self._stage_redaction(batch, room_id, event, before)
            for writer in self.index_writers:
                writer(batch, event, count)
        self._leaves_committed(room_id, event)
        for callback in self.on_event:
            callback(event, count)

    # --- events from other servers --------------------------------------------------
    #
    # services/federation/ingest.py decides whether a remote event is accepted; these
    # methods only store the outcome, each in one batch like the local write path.

    def store_outlier(self, event: Event, *, rejected: bool = False,
                      soft_failed: bool = False, state_before: StateMap | None = None) -> None:
        """Keep an event we hold but do not show: auth chains, a joined room's state,
        invites to rooms we are not in, soft-failed and rejected events.

        ``state_before`` (for soft-failed events) records the state at the event so
        that later events citing it as a prev_event can be checked.
        """
        if self.events.count_of(event.event_id) is not None:
            return  # already in the timeline
        with self.store.batch() as batch:
            batch.put("eventid_outlierpdu", event.event_id.encode(),
                      encode_stored(event.event_id, dict(event.pdu), event.room_version))
            if rejected:
                batch.put("rejectedeventids", event.event_id.encode(), b"")
            if soft_failed:
                batch.put("softfailedeventids", event.event_id.encode(), b"")
            if state_before is not None:
                after = dict(state_before)
                if event.is_state and not rejected:
                    after[event.state_pair] = event.event_id
                self.state.stage_after(batch, event.event_id,
                                       self.snapshots.save(self.state.compress(after)))

    def is_rejected(self, event_id: str) -> bool:
        return event_id.encode() in self.store.tree("rejectedeventids")

    def is_soft_failed(self, event_id: str) -> bool:
        return event_id.encode() in self.store.tree("softfailedeventids")

    def append_remote(self, event: Event, state_before: StateMap,
                      current_after: StateMap, *, sync: bool = True) -> int:
        """Put an accepted remote event at the end of its room's timeline.

        ``state_before`` is the state at the event (resolved over its prev_events);
        ``current_after`` is the room's new current state, which the caller resolved
        from the forward extremities. Call with ``lock(room_id)`` held, right after
        the checks, so that nothing changes the room in between. Returns the event's
        stream count. ``sync=False`` leaves the fsync to the caller (``Store.flush``).
        """
        room_id = event.room_id or hashes.room_id_from_create(event.pdu, event.room_version)
        count = self.store.next_count()
        shortroomid = self.short.room(room_id, create=True)
        assert shortroomid is not None
        after = dict(state_before)
        if event.is_state:
            after[event.state_pair] = event.event_id
        current_hash = self.state.current_hash(room_id)
        after_hash = self.snapshots.save(self.state.compress(after), current_hash)
        old_current = self.state.current(room_id)
        new_hash = (after_hash if current_after == after
                    else self.snapshots.save(self.state.compress(current_after), current_hash))
        with self.store.batch(sync=sync) as batch:
            key = pdu_id(shortroomid, count)
            batch.put("pduid_pdu", key, encode_stored(event.event_id, dict(event.pdu)))
            batch.put("eventid_pduid", event.event_id.encode(), key)
            batch.delete("eventid_outlierpdu", event.event_id.encode())
            self.state.stage_after(batch, event.event_id, after_hash)
            if new_hash != current_hash:
                self.state.stage_current(batch, room_id, new_hash)
            if self.events.room_version(room_id) is None:
                self.events.set_room_version(batch, room_id, event.room_version)
            self._stage_leaves(batch, shortroomid, event)
            for member_event_id in _member_changes(old_current, current_after):
                member = self.events.get(member_event_id) if member_event_id != event.event_id \
                    else event
                if member is None:
                    continue
                before_member = state_before if member is event else current_after
                self._stage_membership(batch, room_id, member, before_member, count)
            if event.redacts is not None:
                self._stage_redaction(batch, room_id, event, state_before)
            for writer in self.index_writers:
                writer(batch, event, count)
        self._leaves_committed(room_id, event)
        self.events.forget(event.event_id)
        for callback in self.on_event:
            callback(event, count)
        return count

    def _state_after(self, room_id: str, event: Event, before: StateMap) -> int:
        current = self.state.current_hash(room_id)
        if not event.is_state:
            assert current is not None
            return current
        after = dict(before)
        after[event.state_pair] = event.event_id
        return self.snapshots.save(self.state.compress(after), current)

    def leaves(self, room_id: str) -> list[str]:
        cached = self._leaves.get(room_id)
        if cached is not None:
            return list(cached)
        short = self.short.room(room_id)
        if short is None:
            return []
        prefix = u64_be(short)
        found = [k[8:].decode() for k in self.store.tree("roomid_pduleaves").keys(prefix)]
        self._leaves.put(room_id, found)
        return list(found)

    def _leaves_committed(self, room_id: str, event: Event) -> None:
        """After the batch that made ``event`` a forward extremity was written."""
        cached = self._leaves.get(room_id)
        if cached is None:
            return
        replaced = set(event.prev_event_ids)
        self._leaves.put(room_id, sorted([leaf for leaf in cached if leaf not in replaced]
                                         + [event.event_id]))

    def _stage_leaves(self, batch: WriteBatch, shortroomid: int, event: Event) -> None:
        prefix = u64_be(shortroomid)
        for prev in event.prev_event_ids:
            batch.delete("roomid_pduleaves", prefix + prev.encode())
        batch.put("roomid_pduleaves", prefix + event.event_id.encode(), b"")

    def _stage_membership(self, batch: WriteBatch, room_id: str, event: Event,
                          before: StateMap, count: int) -> None:
        membership = event.membership or "leave"
        stripped = None
        if membership in (INVITE, KNOCK):
            shown = self.state.events_of({p: before[p] for p in STRIPPED_STATE if p in before})
            stripped = [stripped_state(e) for e in shown.values()] + [stripped_state(event)]
        assert event.state_key is not None
        self.membership.stage(batch, room_id, event.state_key, membership, count, stripped)

    def _stage_redaction(self, batch: WriteBatch, room_id: str, event: Event,
                         before: StateMap) -> None:
        """Apply an accepted redaction: the target is stored redacted from now on."""
        target_id = event.redacts
        assert target_id is not None
        target = self.events.get(target_id)
        if target is None or target.room_id != room_id:
            return
        power = PowerLevels.from_state(
            self.events.get(before[POWER_LEVELS]) if POWER_LEVELS in before else None,
            self.events.get(before[CREATE]) if CREATE in before else None, event.room_version)
        if not can_redact(event, power, target.sender):
            return
        redacted = redaction.redact(target.pdu, target.room_version)
        redacted.setdefault("unsigned", {})["redacted_because"] = event.event_id
        target_key = self.store.tree("eventid_pduid").get(target_id.encode())
        if target_key is not None:
            batch.put("pduid_pdu", target_key, encode_stored(target_id, redacted))
        batch.put("redactedby_eventid", target_id.encode(), event.event_id.encode())
        self.events.forget(target_id)


def _member_changes(before: StateMap, after: StateMap) -> list[str]:
    """Event ids of the member entries of ``after`` that differ from ``before``."""
    return [event_id for pair, event_id in after.items()
            if pair[0] == "m.room.member" and before.get(pair) != event_id]


def _txn_key(room_id: str, draft: Draft) -> bytes:
    # Transaction ids are scoped to the device and the request (room, event type).
    assert draft.txn is not None
    device_id, txn_id = draft.txn
    return join(draft.sender, device_id, room_id, draft.type, txn_id)
