"""History from before we joined: fetching it with ``/backfill`` when clients page back.

A room joined through another server starts here with its state and our join; what came
before lives on the servers already in the room. When a client's ``/messages`` reaches
the start of what we hold, :meth:`Backfill.fetch` asks those servers (the ones with
joined members, in turn) for the events before the oldest ones we hold.

Stream counts only grow and backfilled events are older than the whole timeline, so
they get an order of their own: ``backfillid_eventid`` keys them by room and a backfill
sequence number that grows going back in history (``/messages`` tokens ``b<seq>`` point
into that region). The events themselves are kept as outliers: they never change the
current state or the forward extremities and are never sent on to anyone.

Each event passes the checks it can have here: format, signatures and content hash
(``Ingest.verify``) and the auth rules against its own auth events, fetched if missing
(``Ingest.check_own_auth``). There is no state before such an event to check it
against (we would need ``/state_ids`` per event), so checks 5-6 are skipped: the other
server vouches for the history being its own, which is what Synapse's backfill trusts
too once the auth events pass. Events already held (timeline, backfilled, rejected or
soft-failed) are stored once.

Where to go on from is the "edge": held events at least one of whose prev_events we
miss. Each request sends the oldest of them as ``v`` (Synapse returns those events and
their ancestors; conduwuit the events before them), so both kinds of server work. The
room is fully backfilled once the create event arrives, once a server's answer holds
nothing new, or once the edge is empty; that is remembered and nobody is asked again.
If no server gives a usable answer, the room is not asked again for a minute. A
client's ``/messages`` waits for the fetch, so each server gets 20 s and a fetch 45 s.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, urlencode

import attrs
import orjson
import trio

from conduwuit.config import Config
from conduwuit.protocol.events import Event
from conduwuit.protocol.room_versions import RoomVersion
from conduwuit.services.rooms import Rooms
from conduwuit.services.rooms.visibility import SHARED, WORLD_READABLE
from conduwuit.store import Store, from_u64_be, u64_be

from .client import FederationClient, FederationError, RemoteError, path_segment
from .ingest import Ingest, PduRejected

log = logging.getLogger(__name__)

# Events asked for per request (Synapse serves at most 100).
MIN_LIMIT, MAX_LIMIT = 20, 100
# Edge events sent as ``v`` per request, and kept per room.
MAX_V, MAX_EDGE = 20, 100
# Servers tried per fetch before giving up for now.
MAX_SERVERS = 5
# After a fetch no server helped with, seconds before the room is asked about again.
RETRY_AFTER_FAILURE = 60.0
# A client's /messages waits on a fetch: seconds per server, and for a whole fetch.
ASK_TIMEOUT, FETCH_DEADLINE = 20.0, 45.0


@attrs.frozen
class _Progress:
    """What is stored about a room's backfill: where to go on from, or that it is over."""

    edge: tuple[str, ...]
    done: bool

    def encode(self) -> bytes:
        return orjson.dumps({"edge": list(self.edge), "done": self.done})


@attrs.define
class Backfill:
    config: Config
    store: Store
    rooms: Rooms
    ingest: Ingest
    client: FederationClient
    retry_after_failure: float = RETRY_AFTER_FAILURE
    _locks: dict[str, trio.Lock] = attrs.field(factory=dict)
    _failed_at: dict[str, float] = attrs.field(factory=dict)

    # --- reading ------------------------------------------------------------------------

    def shows_history(self, room_id: str) -> bool:
        """Whether our users see backfilled history, by the room's CURRENT visibility.

        Every backfilled event predates our server in the room, so none of our users
        was joined (or invited) at it: ``joined`` and ``invited`` hide it all, ``shared``
        and ``world_readable`` show it all. The visibility at each event would need the
        state at it, which backfill does not fetch.
        """
        return self.rooms.visibility.current_visibility(room_id) in (SHARED, WORLD_READABLE)

    def is_done(self, room_id: str) -> bool:
        """The room's history is fully here (or there is nobody to ask for it)."""
        return self._progress(room_id).done

    def last_seq(self, room_id: str) -> int:
        """The highest backfill sequence number of the room (0: nothing backfilled)."""
        short = self.rooms.short.room(room_id)
        if short is None:
            return 0
        prefix = u64_be(short)
        last = next(self.store.tree("backfillid_eventid").keys(prefix, reverse=True), None)
        return from_u64_be(last[8:16]) if last is not None else 0

    # --- fetching -----------------------------------------------------------------------

    async def fetch(self, room_id: str, wanted: int) -> bool:
        """Ask the room's servers for about ``wanted`` events older than what we hold.

        Returns whether new events were stored. Concurrent calls for one room wait for
        each other; a call that finds that another fetched meanwhile returns True at once.
        """
        if not self.config.allow_federation:
            return False
        seen = self.last_seq(room_id)
        lock = self._locks.setdefault(room_id, trio.Lock())
        async with lock:
            if self.last_seq(room_id) != seen:
                return True
            failed_at = self._failed_at.get(room_id)
            if failed_at is not None and trio.current_time() - failed_at < \
                    self.retry_after_failure:
                return False
            progress = self._progress(room_id)
            version = self.rooms.events.room_version(room_id)
            if progress.done or version is None:
                return False
            stored: bool | None = None
            with trio.move_on_after(FETCH_DEADLINE):
                stored = await self._fetch(room_id, version, progress, wanted)
            if stored is None:
                self._failed_at[room_id] = trio.current_time()
                return False
            self._failed_at.pop(room_id, None)
            return stored

    async def _fetch(self, room_id: str, version: RoomVersion, progress: _Progress,
                     wanted: int) -> bool | None:
        """One round over the servers; None if none of them gave a usable answer."""
        edge = [e for e in (self.rooms.events.get(i) for i in progress.edge) if e is not None]
        edge.sort(key=lambda e: (e.depth, e.event_id))
        from_ids = [e.event_id for e in edge[:MAX_V]]
        limit = min(MAX_LIMIT, max(MIN_LIMIT, wanted))
        servers = [s for s in self.rooms.membership.servers(room_id)
                   if s != self.config.server_name]
        for server in servers[:MAX_SERVERS]:
            accepted = await self._ask(server, room_id, version, from_ids, limit)
            if accepted is None:
                continue
            self._commit(room_id, progress, accepted)
            return bool(accepted)
        return None

    async def _ask(self, server: str, room_id: str, version: RoomVersion,
                   from_ids: list[str], limit: int) -> list[Event] | None:
        """The new events of one server's answer that passed the checks, stored as
        outliers; [] if it held nothing new; None if it was of no use."""
        query = urlencode([*(("v", i) for i in from_ids), ("limit", str(limit))],
                          quote_via=quote)
        path = f"/_matrix/federation/v1/backfill/{path_segment(room_id)}?{query}"
        try:
            answer = await self.client.request(
                "GET", server, path,
                timeout=min(ASK_TIMEOUT, float(self.config.federation_timeout)))
        except (FederationError, RemoteError) as failed:
            log.info("backfill of %s from %s: %s", room_id, server, failed)
            return None
        pdus: Any = answer.get("pdus") if isinstance(answer, dict) else None
        if not isinstance(pdus, list):
            log.info("backfill of %s from %s: the answer has no list of pdus", room_id, server)
            return None
        fresh: dict[str, Event] = {}
        dropped = 0
        for pdu in pdus[:MAX_LIMIT]:
            try:
                event = await self.ingest.verify(pdu, version)
            except PduRejected as bad:
                log.info("backfilled event from %s dropped: %s", server, bad.reason)
                dropped += 1
                continue
            if event.room_id != room_id:
                dropped += 1
            elif not self._held(event.event_id):
                fresh[event.event_id] = event
        if not fresh:
            return None if dropped else []
        accepted: list[Event] = []
        # Oldest first, so that auth events in the same answer are stored before use.
        for event in sorted(fresh.values(), key=lambda e: (e.depth, e.event_id)):
            if self.rooms.events.known(event.event_id):
                # Held as an outlier already (the state and auth chain of our join).
                if not self.rooms.timeline.is_rejected(event.event_id):
                    accepted.append(event)
                continue
            try:
                await self.ingest.check_own_auth(server, event)
            except PduRejected as rejected:
                log.info("backfilled event %s from %s rejected: %s", event.event_id, server,
                         rejected.reason)
                continue
            self.rooms.timeline.store_outlier(event)
            accepted.append(event)
        return accepted or None

    def _commit(self, room_id: str, progress: _Progress, accepted: list[Event]) -> None:
        """Index the accepted events, newest first, behind what the room already has."""
        short = self.rooms.short.room(room_id, create=True)
        assert short is not None
        prefix = u64_be(short)
        new_ids = {e.event_id for e in accepted}

        def held(event_id: str) -> bool:
            return event_id in new_ids or self._held(event_id)

        candidates = [e for e in (self.rooms.events.get(i) for i in progress.edge)
                      if e is not None] + accepted
        edge = sorted({e.event_id: e for e in candidates
                       if any(not held(p) for p in e.prev_event_ids)}.values(),
                      key=lambda e: (e.depth, e.event_id))[:MAX_EDGE]
        reached_create = any(e.type == "m.room.create" and e.state_key == "" for e in accepted)
        done = not accepted or reached_create or not edge
        seq = self.last_seq(room_id)
        with self.store.batch() as batch:
            for event in sorted(accepted, key=lambda e: (-e.depth, e.event_id)):
                seq += 1
                key = prefix + u64_be(seq)
                batch.put("backfillid_eventid", key, event.event_id.encode())
                batch.put("eventid_backfillid", event.event_id.encode(), key)
            batch.put("roomid_backfill", room_id.encode(),
                      _Progress(tuple(e.event_id for e in edge), done).encode())
        if done:
            log.info("history of %s fully backfilled", room_id)

    # --- stored progress ----------------------------------------------------------------

    def _progress(self, room_id: str) -> _Progress:
        raw = self.store.tree("roomid_backfill").get(room_id.encode())
        if raw is not None:
            stored = orjson.loads(raw)
            return _Progress(tuple(stored.get("edge", ())), bool(stored.get("done")))
        # Nothing backfilled yet: go on from the room's first timeline event.
        first = next(self.rooms.events.timeline(room_id), None)
        if first is None:
            return _Progress((), True)
        event = first[1]
        if all(self._held(p) for p in event.prev_event_ids):
            return _Progress((), True)  # a room created here, or all its history is here
        return _Progress((event.event_id,), False)

    def _held(self, event_id: str) -> bool:
        """Held for history's sake: in the timeline, backfilled, rejected or soft-failed."""
        key = event_id.encode()
        return (key in self.store.tree("eventid_pduid")
                or key in self.store.tree("eventid_backfillid")
                or self.rooms.timeline.is_rejected(event_id)
                or self.rooms.timeline.is_soft_failed(event_id))
