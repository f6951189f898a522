"""Accepting events from other servers: the spec's checks on every PDU, in order.

For each PDU (server-server API, "Checks performed on receipt of a PDU"):

1. it has the format of its room version, else it is dropped;
2. every server that must sign it did, else it is dropped;
3. its content hash matches, else it is kept redacted;
4. it passes the auth rules against the auth events it cites, else it is rejected;
5. it passes them against the state before it (resolved over its prev_events),
   else it is rejected;
6. it passes them against the room's current state, else it is soft-failed: stored,
   but neither shown to clients nor used as a forward extremity.

Missing auth events come from the sending server's ``/event_auth``; missing
prev_events from ``/get_missing_events`` (a bounded number), and if a gap remains,
the state at the missing event from ``/state_ids``. Accepted events go through
``Timeline.append_remote``, rejected and soft-failed ones through
``Timeline.store_outlier``. Events of one room are processed under that room's
lock, the same one local sends take.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio

from conduwuit.protocol import hashes, redaction, signing
from conduwuit.protocol.auth import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_events,
    required_signers,
)
from conduwuit.protocol.canonical import CanonicalJsonError, encode_canonical
from conduwuit.protocol.events import Event, StateKey
from conduwuit.protocol.ids import is_valid_event_id, is_valid_room_id, server_name_of
from conduwuit.protocol.room_versions import EventFormat, RoomVersion
from conduwuit.protocol.state_res import resolve
from conduwuit.services.rooms import Rooms
from conduwuit.services.rooms.state import CREATE

from .client import FederationClient, FederationError, RemoteError, path_segment
from .keys import ServerSigningKeys

log = logging.getLogger(__name__)

MAX_PDU_BYTES = 65_536
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
# How many events one gap fill may ask /get_missing_events for.
MISSING_EVENTS_LIMIT = 20
# Events fetched one by one (state at a gap, missing auth events) at once.
FETCH_CONCURRENCY = 10

StateMap = dict[StateKey, str]


class PduRejected(Exception):
    """The PDU was dropped or rejected; ``reason`` says why (it goes back to the sender)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise PduRejected(reason)


def _ids(value: object, version: RoomVersion) -> list[str] | None:
    """The event ids of a prev_events/auth_events list, None if malformed."""
    if not isinstance(value, list):
        return None
    ids: list[str] = []
    for item in value:
        if version.event_format is EventFormat.V1:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                return None
            ids.append(item[0])
        elif isinstance(item, str):
            ids.append(item)
        else:
            return None
    return ids


def parse_pdu(pdu: Mapping[str, Any], version: RoomVersion) -> Event:
    """Check 1: the PDU has the shape its room version requires. Raises PduRejected."""
    _require(isinstance(pdu, Mapping), "PDU is not a JSON object")
    pdu = dict(pdu)
    pdu.pop("unsigned", None)  # not covered by hashes or signatures: never trusted or kept
    if version.event_format is not EventFormat.V1:
        pdu.pop("event_id", None)  # v3+ ids are hashes, never carried
    try:
        encoded = encode_canonical(pdu, strict=version.strict_canonical_json)
    except CanonicalJsonError as bad:
        raise PduRejected(f"not canonical JSON for room version {version.identifier}: "
                          f"{bad}") from None
    _require(len(encoded) <= MAX_PDU_BYTES, "PDU is larger than 65536 bytes")
    for key, kind in (("type", str), ("sender", str), ("content", dict),
                      ("origin_server_ts", int), ("depth", int), ("hashes", dict),
                      ("signatures", dict)):
        _require(isinstance(pdu.get(key), kind) and not isinstance(pdu.get(key), bool),
                 f"PDU field {key!r} is missing or of the wrong type")
    _require(0 <= pdu["depth"] < 2**63, "depth out of range")
    _require(server_name_of(pdu["sender"]) is not None and pdu["sender"].startswith("@"),
             "sender is not a user id")
    if "state_key" in pdu:
        _require(isinstance(pdu["state_key"], str), "state_key is not a string")
    is_v12_create = (version.room_id_is_create_hash and pdu["type"] == "m.room.create"
                     and pdu.get("state_key") == "")
    if not is_v12_create:
        room_id = pdu.get("room_id")
        _require(isinstance(room_id, str) and is_valid_room_id(room_id, version),
                 "room_id is missing or invalid")
    prev = _ids(pdu.get("prev_events"), version)
    auth = _ids(pdu.get("auth_events"), version)
    _require(prev is not None, "prev_events is missing or malformed")
    _require(auth is not None, "auth_events is missing or malformed")
    assert prev is not None and auth is not None
    _require(len(prev) <= MAX_PREV_EVENTS, "too many prev_events")
    _require(len(auth) <= MAX_AUTH_EVENTS, "too many auth_events")
    _require(all(is_valid_event_id(i, version) for i in [*prev, *auth]),
             "prev_events or auth_events hold an invalid event id")
    if version.event_format is EventFormat.V1:
        _require(isinstance(pdu.get("event_id"), str)
                 and is_valid_event_id(pdu["event_id"], version), "event_id is missing")
    try:
        return Event.from_pdu(pdu, version)
    except (KeyError, TypeError, ValueError) as bad:
        raise PduRejected(f"malformed PDU: {bad}") from None


@attrs.define
class Ingest:
    server_name: str
    rooms: Rooms
    keys: ServerSigningKeys
    client: FederationClient

    # --- checks 1-3: format, signatures, content hash --------------------------------

    async def verify(self, pdu: Mapping[str, Any], version: RoomVersion) -> Event:
        """Checks 1-3. Returns the event (redacted if its content hash is wrong)."""
        event = parse_pdu(pdu, version)
        signatures = event.pdu["signatures"]
        for server in sorted(required_signers(event)):
            by_server = signatures.get(server)
            _require(isinstance(by_server, dict) and bool(by_server),
                     f"not signed by {server}")
            key_ids = [k for k in by_server if isinstance(k, str) and k.startswith("ed25519:")]
            _require(bool(key_ids), f"no ed25519 signature of {server}")
            at = event.origin_server_ts if version.enforce_key_validity else 0
            known = await self.keys.keys_for(server, key_ids, minimum_valid_until_ts=at)
            if not any(self._signature_ok(event, server, key_id, known.get(key_id), at)
                       for key_id in key_ids):
                raise PduRejected(f"signature of {server} does not verify")
        if not hashes.has_valid_content_hash(event.pdu):
            log.info("event %s has a wrong content hash: keeping it redacted", event.event_id)
            event = Event(event.event_id, redaction.redact(event.pdu, version), version)
        return event

    @staticmethod
    def _signature_ok(event: Event, server: str, key_id: str, key: Any, at: int) -> bool:
        if key is None or (at and not key.valid_at(at)):
            return False
        try:
            signing.verify_event(event.pdu, server, key_id, key.key, event.room_version)
        except signing.SignatureError:
            return False
        return True

    async def fetch_event(self, origin: str, event_id: str, version: RoomVersion) -> Event | None:
        """One event from ``origin``'s ``/event``, verified; None if it cannot be had."""
        try:
            answer = await self.client.request(
                "GET", origin, f"/_matrix/federation/v1/event/{path_segment(event_id)}")
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            if not isinstance(pdus, list) or not pdus:
                return None
            event = await self.verify(pdus[0], version)
        except (FederationError, RemoteError, PduRejected) as failed:
            log.info("fetching %s from %s: %s", event_id, origin, failed)
            return None
        return event if event.event_id == event_id else None

    # --- the full pipeline ------------------------------------------------------------

    async def receive(self, origin: str, pdu: Mapping[str, Any], *,
                      durable: bool = True) -> tuple[str | None, str | None]:
        """Run every check on one PDU of a room we are in; (event id, error or None).

        ``durable=False`` skips the fsync of the event's batch: a transaction's caller
        makes all its events durable at once (``Store.flush``) before it answers.
        """
        room_id = pdu.get("room_id") if isinstance(pdu, Mapping) else None
        if not isinstance(room_id, str):
            return None, "PDU without a room_id"
        version = self.rooms.events.room_version(room_id)
        if version is None or self.rooms.state.current_hash(room_id) is None:
            return None, f"this server is not in room {room_id}"
        try:
            event = await self.verify(pdu, version)
        except PduRejected as dropped:
            return _id_of(pdu, version), dropped.reason
        if event.room_id != room_id:
            return event.event_id, "room_id mismatch"
        async with self.rooms.timeline.lock(room_id):
            try:
                await self._process(origin, event, fill_gaps=True, durable=durable)
            except PduRejected as rejected:
                return event.event_id, rejected.reason
        return event.event_id, None

    async def _process(self, origin: str, event: Event, *, fill_gaps: bool,
                       durable: bool = True) -> None:
        """Checks 4-6 and storage, for an event that passed checks 1-3. Room locked."""
        timeline = self.rooms.timeline
        if self.rooms.events.count_of(event.event_id) is not None:
            return  # already accepted
        if timeline.is_rejected(event.event_id):
            raise PduRejected("event was rejected before")
        room_id = event.room_id
        assert room_id is not None
        await self._ensure_auth_events(origin, event)
        self._check_against_auth_events(event)  # check 4
        state_before = await self._state_before(origin, event, fill_gaps)
        create = self._create_event(room_id, state_before)
        try:
            check_auth(event, self._auth_state(event, state_before), create=create)  # check 5
        except AuthError as refused:
            timeline.store_outlier(event, rejected=True)
            raise PduRejected(f"not allowed by the state before it: {refused}") from None
        current = self.rooms.state.current(room_id)
        try:
            check_auth(event, self._auth_state(event, current), create=create)  # check 6
        except AuthError as refused:
            log.info("soft-failing %s from %s: %s", event.event_id, origin, refused)
            timeline.store_outlier(event, soft_failed=True, state_before=state_before)
            return
        current_after = self._resolve_current(room_id, event, state_before)
        timeline.append_remote(event, state_before, current_after, sync=durable)

    # --- check 4: the event's own auth events -----------------------------------------

    async def check_own_auth(self, origin: str, event: Event) -> None:
        """Check 4 alone, for history (backfill): there is no state before such an event
        here to run checks 5-6 against. Missing auth events come from ``origin``; an event
        that fails is stored as rejected. Raises PduRejected."""
        await self._ensure_auth_events(origin, event)
        self._check_against_auth_events(event)

    async def _ensure_auth_events(self, origin: str, event: Event) -> None:
        """Fetch the auth chain from ``origin`` if we miss any of the event's auth events."""
        events = self.rooms.events
        if all(events.known(i) for i in event.auth_event_ids):
            return
        assert event.room_id is not None
        path = (f"/_matrix/federation/v1/event_auth/{path_segment(event.room_id)}/"
                f"{path_segment(event.event_id)}")
        try:
            answer = await self.client.request("GET", origin, path)
        except (FederationError, RemoteError) as failed:
            raise PduRejected(f"could not fetch missing auth events: {failed}") from None
        chain = answer.get("auth_chain") if isinstance(answer, dict) else None
        if not isinstance(chain, list):
            raise PduRejected("could not fetch missing auth events: bad /event_auth answer")
        await self.store_auth_chain(chain, event.room_version)

    async def store_auth_chain(self, pdus: Iterable[Any], version: RoomVersion) -> set[str]:
        """Verify and keep auth-chain events as outliers, oldest first; rejected ones are
        marked. Returns the ids of the events that passed."""
        verified: list[Event] = []
        for pdu in pdus:
            try:
                verified.append(await self.verify(pdu, version))
            except PduRejected as dropped:
                log.info("auth chain event dropped: %s", dropped.reason)
        accepted: set[str] = set()
        for event in sorted(verified, key=lambda e: (e.depth, e.event_id)):
            if self.rooms.events.known(event.event_id):
                if not self.rooms.timeline.is_rejected(event.event_id):
                    accepted.add(event.event_id)
                continue
            try:
                self._check_against_auth_events(event)
            except PduRejected as rejected:
                log.info("auth chain event %s rejected: %s", event.event_id, rejected.reason)
                self.rooms.timeline.store_outlier(event, rejected=True)
                continue
            self.rooms.timeline.store_outlier(event)
            accepted.add(event.event_id)
        return accepted

    def _check_against_auth_events(self, event: Event) -> None:
        if event.type == "m.room.create" and event.state_key == "":
            try:
                check_auth(event, {})
            except AuthError as refused:
                raise PduRejected(f"invalid create event: {refused}") from None
            return
        timeline = self.rooms.timeline
        auth_events: list[Event] = []
        for auth_id in event.auth_event_ids:
            auth_event = self.rooms.events.get(auth_id)
            if auth_event is None:
                raise PduRejected(f"auth event {auth_id} is unknown")
            if timeline.is_rejected(auth_id):
                timeline.store_outlier(event, rejected=True)
                raise PduRejected(f"auth event {auth_id} was rejected")
            auth_events.append(auth_event)
        try:
            by_key = check_auth_events(event, auth_events)
            create = by_key.get(CREATE) or self._create_of(event)
            check_auth(event, by_key, create=create)
        except AuthError as refused:
            timeline.store_outlier(event, rejected=True)
            raise PduRejected(f"not allowed by its auth events: {refused}") from None

    def _create_of(self, event: Event) -> Event | None:
        """The create event of ``event``'s room (v12 events do not cite it)."""
        room_id = event.room_id
        if room_id is None:
            return None
        current = self.rooms.state.current(room_id)
        if CREATE in current:
            return self.rooms.events.get(current[CREATE])
        if event.room_version.room_id_is_create_hash:
            # v12: the room id is the create event's id with another sigil.
            return self.rooms.events.get("$" + room_id[1:])
        return None

    # --- check 5: the state before the event ------------------------------------------

    async def _state_before(self, origin: str, event: Event, fill_gaps: bool) -> StateMap:
        events = self.rooms.events
        missing = [p for p in event.prev_event_ids if not events.known(p)]
        if missing and fill_gaps:
            await self._fill_gap(origin, event)
            missing = [p for p in event.prev_event_ids if not events.known(p)]
        states: list[StateMap] = []
        for prev in event.prev_event_ids:
            if prev in missing:
                continue
            after = self._state_after(prev)
            if after is not None:
                states.append(after)
            else:
                missing.append(prev)
        for prev in missing:
            fetched = await self._remote_state_after(origin, event, prev)
            if fetched is not None:
                states.append(fetched)
        if not states:
            raise PduRejected("the state before the event could not be determined")
        return self._resolve(event.room_version, states)

    def _state_after(self, event_id: str) -> StateMap | None:
        if self.rooms.timeline.is_rejected(event_id):
            return None  # a rejected event changes nothing: its own state is not known here
        after = self.rooms.state.after(event_id)
        return dict(after) if after is not None else None

    async def _fill_gap(self, origin: str, event: Event) -> None:
        """Ask ``origin`` for the events between our extremities and ``event``."""
        room_id = event.room_id
        assert room_id is not None
        body = {"earliest_events": self.rooms.timeline.leaves(room_id),
                "latest_events": [event.event_id], "limit": MISSING_EVENTS_LIMIT,
                "min_depth": 0}
        try:
            answer = await self.client.request(
                "POST", origin,
                f"/_matrix/federation/v1/get_missing_events/{path_segment(room_id)}", body=body)
        except (FederationError, RemoteError) as failed:
            log.info("get_missing_events for %s from %s: %s", event.event_id, origin, failed)
            return
        found = answer.get("events") if isinstance(answer, dict) else None
        if not isinstance(found, list):
            return
        verified: list[Event] = []
        for pdu in found[:MISSING_EVENTS_LIMIT]:
            try:
                verified.append(await self.verify(pdu, event.room_version))
            except PduRejected as dropped:
                log.info("missing event from %s dropped: %s", origin, dropped.reason)
        for missing in sorted(verified, key=lambda e: (e.depth, e.event_id)):
            if missing.room_id != room_id or missing.event_id == event.event_id:
                continue
            try:
                await self._process(origin, missing, fill_gaps=False)
            except PduRejected as rejected:
                log.info("missing event %s rejected: %s", missing.event_id, rejected.reason)

    async def _remote_state_after(self, origin: str, event: Event, prev: str) -> StateMap | None:
        """The state after a prev_event we do not have, from ``origin``'s ``/state_ids``."""
        room_id = event.room_id
        assert room_id is not None
        try:
            answer = await self.client.request(
                "GET", origin, f"/_matrix/federation/v1/state_ids/{path_segment(room_id)}",
                query={"event_id": prev})
        except (FederationError, RemoteError) as failed:
            log.info("state_ids at %s from %s: %s", prev, origin, failed)
            return None
        pdu_ids = answer.get("pdu_ids") if isinstance(answer, dict) else None
        auth_ids = answer.get("auth_chain_ids") if isinstance(answer, dict) else None
        if not isinstance(pdu_ids, list) or not isinstance(auth_ids, list):
            return None
        wanted = [i for i in [*auth_ids, *pdu_ids, prev]
                  if isinstance(i, str) and not self.rooms.events.known(i)]
        fetched = await self._fetch_many(origin, wanted, event.room_version)
        await self.store_auth_chain([e.pdu for e in fetched if e.event_id != prev],
                                    event.room_version)
        state: StateMap = {}
        for state_id in pdu_ids:
            found = self.rooms.events.get(state_id) if isinstance(state_id, str) else None
            if found is not None and found.is_state and found.room_id == room_id \
                    and not self.rooms.timeline.is_rejected(state_id):
                state[found.state_pair] = found.event_id
        # /state_ids answers the state before ``prev``; add ``prev`` itself.
        prev_event = next((e for e in fetched if e.event_id == prev), None) \
            or self.rooms.events.get(prev)
        if prev_event is not None and prev_event.is_state:
            state[prev_event.state_pair] = prev_event.event_id
        return state

    async def _fetch_many(self, origin: str, event_ids: Sequence[str],
                          version: RoomVersion) -> list[Event]:
        found: list[Event] = []
        limiter = trio.CapacityLimiter(FETCH_CONCURRENCY)

        async def one(event_id: str) -> None:
            async with limiter:
                event = await self.fetch_event(origin, event_id, version)
            if event is not None:
                found.append(event)

        async with trio.open_nursery() as nursery:
            for event_id in dict.fromkeys(event_ids):
                nursery.start_soon(one, event_id)
        return found

    def _resolve(self, version: RoomVersion, states: list[StateMap]) -> StateMap:
        if len(states) == 1:
            return dict(states[0])
        distinct = {tuple(sorted(s.items())): s for s in states}
        if len(distinct) == 1:
            return dict(states[0])
        return resolve(version, list(distinct.values()), self.rooms.events.get,
                       is_rejected=self.rooms.timeline.is_rejected)

    def _auth_state(self, event: Event, state: Mapping[StateKey, str]) -> dict[StateKey, Event]:
        pairs = auth_types_for_event(event.type, event.state_key, event.sender, event.content,
                                     event.room_version)
        return self.rooms.state.events_of({p: state[p] for p in pairs if p in state})

    def _create_event(self, room_id: str, state: Mapping[StateKey, str]) -> Event | None:
        if CREATE in state:
            return self.rooms.events.get(state[CREATE])
        current = self.rooms.state.current(room_id)
        return self.rooms.events.get(current[CREATE]) if CREATE in current else None

    # --- the new current state --------------------------------------------------------

    def _resolve_current(self, room_id: str, event: Event, state_before: StateMap) -> StateMap:
        """Current state once ``event`` joins the forward extremities."""
        after = dict(state_before)
        if event.is_state:
            after[event.state_pair] = event.event_id
        leaves = set(self.rooms.timeline.leaves(room_id)) - set(event.prev_event_ids)
        if not leaves:
            return after
        states = [after]
        for leaf in sorted(leaves):
            leaf_state = self._state_after(leaf)
            if leaf_state is not None:
                states.append(leaf_state)
        return self._resolve(event.room_version, states)

    # --- joining a room that lives elsewhere ------------------------------------------

    async def import_join(self, origin: str, room_id: str, version: RoomVersion,
                          join_event: Event, state: Sequence[Mapping[str, Any]],
                          auth_chain: Sequence[Mapping[str, Any]]) -> None:
        """Take in a ``send_join`` answer and our join: afterwards the room is resident here.

        The state and auth chain are verified (signatures, hashes) and checked against
        their own auth events; the join must pass the auth rules against that state.
        """
        accepted = await self.store_auth_chain([*auth_chain, *state], version)
        resolved: StateMap = {}
        for pdu in state:
            event_id = _id_of(pdu, version)
            event = self.rooms.events.get(event_id) if event_id is not None else None
            if event is None or event_id not in accepted or not event.is_state:
                continue
            if event.room_id != room_id and not (
                    version.room_id_is_create_hash and event.type == "m.room.create"):
                continue
            resolved[event.state_pair] = event.event_id
        _require(CREATE in resolved, "the resident server's state has no create event")
        async with self.rooms.timeline.lock(room_id):
            if self.rooms.events.count_of(join_event.event_id) is not None:
                return
            create = self.rooms.events.get(resolved[CREATE])
            try:
                check_auth(join_event, self._auth_state(join_event, resolved), create=create)
            except AuthError as refused:
                raise PduRejected(f"our join is not allowed by the room's state: "
                                  f"{refused}") from None
            after = dict(resolved)
            after[join_event.state_pair] = join_event.event_id
            self.rooms.timeline.append_remote(join_event, resolved, after)


def _id_of(pdu: Mapping[str, Any], version: RoomVersion | None = None) -> str | None:
    """A PDU's event id without verifying it (for error answers and lookups)."""
    if not isinstance(pdu, Mapping):
        return None
    if isinstance(pdu.get("event_id"), str) and (
            version is None or version.event_format is EventFormat.V1):
        return str(pdu["event_id"])
    if version is None:
        return None
    try:
        cleaned = {k: v for k, v in pdu.items() if k != "event_id"}
        return hashes.event_id_for(cleaned, version)
    except (KeyError, TypeError, ValueError, CanonicalJsonError):
        return None
