"""Serving our rooms to other servers: events, state, auth chains, history, spaces.

The read endpoints of the server-server API (``/event``, ``/state``, ``/state_ids``,
``/event_auth``, ``/backfill``, ``/get_missing_events``, ``/timestamp_to_event``,
``/hierarchy``) all come here. Who may read a room:

* the room must be known here (else 404 ``M_NOT_FOUND``);
* the room's current ``m.room.server_acl`` must allow the server (else 403);
* the server must have a joined user in the room now (else 403), as Synapse's
  ``assert_host_in_room`` requires; ``/hierarchy`` instead follows the room summary
  rules (public, knockable or world-readable rooms, or a user of the server in it or
  in a room a restricted join rule names).

Which events a server sees is ``Visibility.server_can_see``: events it may not see go
out in their redacted form rather than not at all (Synapse does the same), so that the
other server can still link the room's graph.

Events go out in their federation form: the stored PDU without ``unsigned`` (that is
where we keep what we add for clients, e.g. ``redacted_because``).

Walks over the graph (auth chains, backfill, missing events) check in with Trio every
few hundred events, so a big room's answer does not stall the event loop.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable
from typing import Any

import attrs
import trio

from conduwuit.errors import MatrixError
from conduwuit.protocol import redaction
from conduwuit.protocol.acl import EVENT_TYPE as SERVER_ACL
from conduwuit.protocol.acl import server_allowed
from conduwuit.protocol.events import Event
from conduwuit.services.cache import LruCache
from conduwuit.services.rooms import Rooms
from conduwuit.services.rooms.hierarchy import SPACE
from conduwuit.services.rooms.membership import INVITE
from conduwuit.services.rooms.state import StateMap
from conduwuit.services.rooms.summary import KNOCK, KNOCK_RESTRICTED, PUBLIC, RESTRICTED
from conduwuit.services.rooms.visibility import WORLD_READABLE

BACKFILL_MAX = 100  # Synapse asks for 100 and serves no more
MISSING_EVENTS_DEFAULT = 10  # the spec's default
MISSING_EVENTS_MAX = 50  # conduwuit's cap (Synapse: 20)
HIERARCHY_MAX_CHILDREN = 50  # children summarised per space, as Synapse
_CHECKPOINT_EVERY = 256


def federation_pdu(event: Event) -> dict[str, Any]:
    """The PDU as other servers get it: everything but our ``unsigned`` additions."""
    return {key: value for key, value in event.pdu.items() if key != "unsigned"}


def _forbidden(reason: str) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", reason)


def _not_found(reason: str) -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", reason)


class _Pacer:
    """Checks in with Trio every few hundred steps of a long synchronous walk."""

    def __init__(self) -> None:
        self.steps = 0

    async def step(self) -> None:
        self.steps += 1
        if self.steps % _CHECKPOINT_EVERY == 0:
            await trio.lowlevel.checkpoint()


@attrs.define
class FederationServing:
    server_name: str
    rooms: Rooms
    # State before an event and its auth chain never change: cache /state_ids answers.
    _state_answers: LruCache[str, tuple[list[str], list[str]]] = attrs.field(
        factory=lambda: LruCache(64))

    # --- who may read a room ---------------------------------------------------------

    def acl_allows(self, room_id: str, server_name: str) -> bool:
        """Whether the room's current server ACL lets ``server_name`` take part."""
        acl = self.rooms.state.get(room_id, (SERVER_ACL, ""))
        return server_allowed(acl.content if acl is not None else None, server_name)

    def server_in_room(self, room_id: str, server_name: str) -> bool:
        """Whether ``server_name`` has a joined user in the room now."""
        return server_name in self.rooms.membership.servers(room_id)

    def check_access(self, room_id: str, origin: str) -> None:
        """404 for a room we do not know, 403 for a denied server or one not in the room."""
        if self.rooms.events.room_version(room_id) is None:
            raise _not_found("Unknown room")
        if not self.acl_allows(room_id, origin):
            raise _forbidden("Server is denied by the room's server ACL")
        if not self.server_in_room(room_id, origin):
            raise _forbidden("Server is not in the room")

    def members_of(self, room_id: str, server_name: str) -> list[str]:
        """The users of ``server_name`` with a membership event in the room's state."""
        suffix = ":" + server_name
        return [state_key for (event_type, state_key) in self.rooms.state.current(room_id)
                if event_type == "m.room.member" and state_key.endswith(suffix)]

    def _event_in(self, room_id: str, event_id: str) -> Event:
        event = self.rooms.events.get(event_id)
        if event is None or event.room_id != room_id:
            raise _not_found("Unknown event")
        return event

    def served(self, event: Event, members: list[str]) -> dict[str, Any]:
        """The event for a server whose users are ``members``: redacted if hidden."""
        if self.rooms.visibility.server_can_see(members, event):
            return federation_pdu(event)
        return redaction.redact(event.pdu, event.room_version)

    # --- /event ----------------------------------------------------------------------

    def event(self, origin: str, event_id: str) -> dict[str, Any]:
        event = self.rooms.events.get(event_id)
        if event is None or event.room_id is None:
            raise _not_found("Unknown event")
        self.check_access(event.room_id, origin)
        return self.transaction([self.served(event, self.members_of(event.room_id, origin))])

    def transaction(self, pdus: list[dict[str, Any]]) -> dict[str, Any]:
        return {"origin": self.server_name, "origin_server_ts": int(time.time() * 1000),
                "pdus": pdus}

    # --- state and auth chains -------------------------------------------------------

    def state_before(self, event: Event) -> StateMap | None:
        """The room state just before ``event``; None when we hold no state for it.

        The store keeps the state *after* each event. For a message that is also the
        state before it. For a state event only its own (type, state_key) differs: its
        value before is read from the state after the first prev_event whose state we
        hold. That is exact for a linear room and wherever the prev_events agree on that
        one pair (only a fork that conflicts on the very pair the event replaces makes
        the resolved value differ). A rejected state event never entered the state, so
        the state after it already is the state before it.
        """
        after = self.rooms.state.after(event.event_id)
        if after is None:
            return None
        if not event.is_state or after.get(event.state_pair) != event.event_id:
            return dict(after)
        before = dict(after)
        prior: str | None = None
        for prev in event.prev_event_ids:
            prev_state = self.rooms.state.after(prev)
            if prev_state is not None:
                prior = prev_state.get(event.state_pair)
                break
        if prior is None:
            before.pop(event.state_pair, None)
        else:
            before[event.state_pair] = prior
        return before

    async def auth_chain_ids(self, start: Iterable[str], *,
                             include_start: bool = False) -> list[str]:
        """Every event reachable from ``start`` along auth_events (the spec's auth chain).

        The starting events are in the result only with ``include_start`` or when
        another starting event reaches them. Events we do not hold are skipped.
        """
        pacer = _Pacer()
        seen: set[str] = set()
        order: list[str] = []
        stack: list[str] = []
        for event_id in start:
            if include_start and event_id not in seen:
                seen.add(event_id)
                order.append(event_id)
            event = self.rooms.events.get(event_id)
            if event is not None:
                stack.extend(event.auth_event_ids)
        while stack:
            await pacer.step()
            event_id = stack.pop()
            if event_id in seen:
                continue
            event = self.rooms.events.get(event_id)
            if event is None:
                continue
            seen.add(event_id)
            order.append(event_id)
            stack.extend(event.auth_event_ids)
        return order

    async def state_ids(self, origin: str, room_id: str,
                        event_id: str) -> tuple[list[str], list[str]]:
        """``/state_ids``: the state before the event and the auth chain of that state.

        No history-visibility check, as in Synapse: a server in the room may need the
        state at any event to fill a gap, and the auth chain already names the members.
        """
        self.check_access(room_id, origin)
        event = self._event_in(room_id, event_id)
        cached = self._state_answers.get(event_id)
        if cached is not None:
            return cached
        state = self.state_before(event)
        if state is None:
            raise _not_found("The state at this event is not known here")
        state_ids = sorted(state.values())
        chain = sorted(await self.auth_chain_ids(state_ids))
        answer = (state_ids, chain)
        self._state_answers.put(event_id, answer)
        return answer

    async def state(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """``/state``: the same as ``/state_ids`` with whole PDUs."""
        state_ids, chain = await self.state_ids(origin, room_id, event_id)
        return {"pdus": await self._pdus(state_ids), "auth_chain": await self._pdus(chain)}

    async def event_auth(self, origin: str, room_id: str, event_id: str) -> list[dict[str, Any]]:
        """``/event_auth``: the auth chain of one event (without the event itself)."""
        self.check_access(room_id, origin)
        event = self._event_in(room_id, event_id)
        return await self._pdus(await self.auth_chain_ids([event.event_id]))

    async def _pdus(self, event_ids: list[str]) -> list[dict[str, Any]]:
        pacer = _Pacer()
        pdus = []
        for event_id in event_ids:
            await pacer.step()
            event = self.rooms.events.get(event_id)
            if event is not None:
                pdus.append(federation_pdu(event))
        return pdus

    # --- history -----------------------------------------------------------------------

    def _order(self, event: Event) -> tuple[int, int]:
        return event.depth, self.rooms.events.count_of(event.event_id) or 0

    async def backfill(self, origin: str, room_id: str, from_ids: list[str],
                       limit: int) -> list[dict[str, Any]]:
        """``/backfill``: the given events and those before them, newest first.

        Breadth first by depth: the deepest event not yet taken comes next (ties: the
        later in our timeline), so concurrent branches come back interleaved as they
        happened rather than one branch exhausted first. Rejected events are left out
        (their prev_events are still followed).
        """
        self.check_access(room_id, origin)
        limit = min(max(limit, 0), BACKFILL_MAX)
        members = self.members_of(room_id, origin)
        pacer = _Pacer()
        heap: list[tuple[int, int, str]] = []
        queued: set[str] = set()

        def push(event_id: str) -> None:
            if event_id in queued:
                return
            queued.add(event_id)
            event = self.rooms.events.get(event_id)
            if event is not None and event.room_id == room_id:
                depth, count = self._order(event)
                heapq.heappush(heap, (-depth, -count, event_id))

        for event_id in from_ids:
            await pacer.step()
            push(event_id)
        taken: list[Event] = []
        while heap and len(taken) < limit:
            await pacer.step()
            _, _, event_id = heapq.heappop(heap)
            event = self.rooms.events.get(event_id)
            if event is None:
                continue
            if not self.rooms.timeline.is_rejected(event_id):
                taken.append(event)
            for prev in event.prev_event_ids:
                push(prev)
        taken.sort(key=self._order, reverse=True)
        return [self.served(event, members) for event in taken]

    async def missing_events(self, origin: str, room_id: str, earliest: list[str],
                             latest: list[str], limit: int,
                             min_depth: int) -> list[dict[str, Any]]:
        """``/get_missing_events``: what precedes ``latest`` back to ``earliest``, oldest first.

        A breadth-first walk over prev_events from the ``latest_events`` (which the other
        server has, so they are not returned), never entering an ``earliest_events``
        event nor one shallower than ``min_depth``, stopping at ``limit`` events.
        Rejected events are not returned (the walk still goes through them).
        """
        self.check_access(room_id, origin)
        limit = min(max(limit, 0), MISSING_EVENTS_MAX)
        members = self.members_of(room_id, origin)
        pacer = _Pacer()
        seen = set(earliest) | set(latest)
        front: list[str] = []
        for event_id in latest:
            await pacer.step()
            event = self.rooms.events.get(event_id)
            if event is not None and event.room_id == room_id:
                front.extend(event.prev_event_ids)
        found: list[Event] = []
        while front and len(found) < limit:
            next_front: list[str] = []
            for event_id in front:
                await pacer.step()
                if event_id in seen:
                    continue
                seen.add(event_id)
                event = self.rooms.events.get(event_id)
                if event is None or event.room_id != room_id or event.depth < min_depth:
                    continue
                next_front.extend(event.prev_event_ids)
                if self.rooms.timeline.is_rejected(event_id):
                    continue
                found.append(event)
                if len(found) >= limit:
                    break
            front = next_front
        found.sort(key=self._order)
        return [self.served(event, members) for event in found]

    async def timestamp_to_event(self, origin: str, room_id: str, ts: int,
                                 forwards: bool) -> dict[str, Any]:
        """The first event at or after ``ts`` (forwards) or at or before it (backwards).

        Only events the server may see count; a redacted answer would point it at an
        event it cannot read.
        """
        self.check_access(room_id, origin)
        members = self.members_of(room_id, origin)
        pacer = _Pacer()
        for _, event in self.rooms.events.timeline(room_id, reverse=not forwards):
            await pacer.step()
            hit = event.origin_server_ts >= ts if forwards else event.origin_server_ts <= ts
            if hit and self.rooms.visibility.server_can_see(members, event):
                return {"event_id": event.event_id, "origin_server_ts": event.origin_server_ts}
        way = "forward" if forwards else "backward"
        raise _not_found(f"No event found from {ts} in the {way} direction")

    # --- spaces --------------------------------------------------------------------------

    def peekable(self, room_id: str, origin: str) -> bool:
        """Whether the server could peek or join: the summary rules, for a server.

        Public, knockable or world-readable rooms; rooms where it has a joined or
        invited user; restricted rooms naming a room it has a user in. Never a room
        whose server ACL denies it.
        """
        summaries = self.rooms.summaries
        if not summaries.known(room_id) or not self.acl_allows(room_id, origin):
            return False
        rule = summaries.join_rule(room_id)
        if rule in (PUBLIC, KNOCK, KNOCK_RESTRICTED):
            return True
        if self.rooms.visibility.current_visibility(room_id) == WORLD_READABLE:
            return True
        if self.server_in_room(room_id, origin) or any(
                self.rooms.membership.membership(room_id, user) == INVITE
                for user in self.members_of(room_id, origin)):
            return True
        if rule in (RESTRICTED, KNOCK_RESTRICTED):
            return any(self.server_in_room(allowed, origin)
                       for allowed in summaries.allowed_rooms(room_id))
        return False

    def _resident(self, room_id: str) -> bool:
        return self.server_in_room(room_id, self.server_name)

    def hierarchy(self, origin: str, room_id: str, suggested_only: bool) -> dict[str, Any]:
        """``/hierarchy``: the room's summary and its children's, not recursing further.

        Children we are not in are left out (we cannot describe them reliably); children
        the server may not peek at are listed in ``inaccessible_children``.
        """
        if not self.peekable(room_id, origin):
            raise _not_found("Room not found or not accessible to this server")
        room = self._summary(room_id, suggested_only)
        children: list[dict[str, Any]] = []
        inaccessible: list[str] = []
        for child, _ in self._children(room_id, suggested_only)[:HIERARCHY_MAX_CHILDREN]:
            if child == room_id or not self._resident(child):
                continue
            if self.peekable(child, origin):
                children.append(self._summary(child, suggested_only))
            else:
                inaccessible.append(child)
        return {"room": room, "children": children, "inaccessible_children": inaccessible}

    def _children(self, room_id: str,
                  suggested_only: bool) -> list[tuple[str, dict[str, Any]]]:
        if self.rooms.summaries.room_type(room_id) != SPACE:
            return []
        return self.rooms.hierarchy.children(room_id, suggested_only)

    def _summary(self, room_id: str, suggested_only: bool) -> dict[str, Any]:
        body = self.rooms.summaries.summary(room_id)
        body["children_state"] = [stripped for _, stripped in
                                  self._children(room_id, suggested_only)]
        return body

