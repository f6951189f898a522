"""History visibility: which events of a room a user may see, and which state.

The spec's rules ("Room History Visibility", server behaviour) are applied with the
room state *at* the event, that is before it:

1. ``world_readable`` at the event: allow.
2. The user's membership at the event was ``join``: allow.
3. ``shared``, and the user joined the room at any point after the event: allow.
4. ``invited``, and the user's membership at the event was ``invite``: allow.
5. Otherwise deny.

An ``m.room.history_visibility`` event is visible if the visibility before *or* after it
allows it; likewise a user's own ``m.room.member`` events with their membership before or
after. A missing or unknown visibility counts as ``shared``.

Only the event's own state pair differs between the state before and after a state
event, so everything is read from the snapshot after the event (which the store keeps
for every event) plus, for the event's own pair, the snapshot after its prev event.
Lookups are cached per snapshot (``shortstatehash``), so filtering a page of a
timeline costs a few dictionary reads per event.
"""

from __future__ import annotations

import attrs

from conduwuit.errors import MatrixError
from conduwuit.protocol.events import Event
from conduwuit.services.cache import LruCache

from .events_db import EventStore
from .membership import BAN, INVITE, JOIN, LEAVE, Membership
from .short import ShortIds, StateKey
from .state import GUEST_ACCESS, HISTORY_VISIBILITY, RoomState, member_key
from .state_store import StateStore

WORLD_READABLE, SHARED, INVITED, JOINED = "world_readable", "shared", "invited", "joined"
_KNOWN = (WORLD_READABLE, SHARED, INVITED, JOINED)
_NEVER = -1
_ALWAYS = 2**64
_MAX_WALK = 64  # membership changes walked back to find the user's last join
_NONE = ""  # cached "no membership" (LruCache cannot hold None)


@attrs.frozen
class ReadAccess:
    """How a user may read a room's history and state right now.

    ``until``: the stream count of the user's leave (or ban); reads stop there.
    ``state_at``: the event whose state the user sees (their leave); None = current.
    """

    joined: bool
    until: int | None = None
    state_at: str | None = None


@attrs.define
class Visibility:
    short: ShortIds
    snapshots: StateStore
    state: RoomState
    events: EventStore
    membership: Membership
    _visibility: LruCache[int, str] = attrs.field(factory=lambda: LruCache(4096))
    _members: LruCache[tuple[int, str], str] = attrs.field(factory=lambda: LruCache(50_000))
    _replaced: LruCache[str, str] = attrs.field(factory=lambda: LruCache(20_000))
    _until: LruCache[tuple[str, str], tuple[str, int]] = attrs.field(
        factory=lambda: LruCache(10_000))

    # --- access to a room as a whole -------------------------------------------------

    def access(self, room_id: str, user_id: str) -> ReadAccess:
        """Raise unless the user may read the room: joined, departed, or world-readable."""
        if self.events.room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        if self.membership.is_joined(room_id, user_id):
            return ReadAccess(joined=True)
        world = self.current_visibility(room_id) == WORLD_READABLE
        change = self.membership.change(user_id, room_id)
        if change is not None and change.membership in (LEAVE, BAN) and not world:
            # After leaving, the history up to the leave stays readable (not once forgotten).
            left = self.state.event_id(room_id, member_key(user_id))
            return ReadAccess(joined=False, until=change.count, state_at=left)
        if world:
            return ReadAccess(joined=False)
        raise MatrixError(403, "M_FORBIDDEN", "You are not in this room")

    def can_see_state(self, room_id: str, user_id: str) -> bool:
        """Joined members see the current state; anyone does in a world-readable room."""
        return (self.membership.is_joined(room_id, user_id)
                or self.current_visibility(room_id) == WORLD_READABLE)

    def current_visibility(self, room_id: str) -> str:
        value = self.state.content(room_id, HISTORY_VISIBILITY).get("history_visibility")
        return value if isinstance(value, str) and value in _KNOWN else SHARED

    def guest_can_join(self, room_id: str) -> bool:
        return self.state.content(room_id, GUEST_ACCESS).get("guest_access") == "can_join"

    # --- single events -------------------------------------------------------------

    def can_see(self, user_id: str, event: Event, count: int | None = None) -> bool:
        """Whether ``user_id`` may see ``event`` (an event of a room's timeline)."""
        after = self.state.hash_after(event.event_id)
        if after is None or event.room_id is None:
            return False
        visibility = self._visibility_at(after)
        member = self._membership_at(after, user_id)
        own_member = event.type == "m.room.member" and event.state_key == user_id
        is_visibility = event.is_state and event.state_pair == HISTORY_VISIBILITY
        # "At the event" is before it: only the event's own pair differs from ``after``.
        visibility_before = self._visibility_of(self._before(event)) if is_visibility \
            else visibility
        member_before = self._membership_of(self._before(event)) if own_member else member
        position = count if count is not None else self.events.count_of(event.event_id)
        room_id = event.room_id

        def allowed(visibility: str, member: str) -> bool:
            if visibility == WORLD_READABLE or member == JOIN:
                return True
            if visibility == SHARED and position is not None:
                return position < self._joined_until(room_id, user_id)
            return visibility == INVITED and member == INVITE

        if allowed(visibility_before, member_before):
            return True
        if is_visibility and allowed(visibility, member_before):
            return True
        return own_member and allowed(visibility_before, member)

    def filter(self, user_id: str, events: list[Event]) -> list[Event]:
        return [event for event in events if self.can_see(user_id, event)]

    def server_can_see(self, members: list[str], event: Event) -> bool:
        """Whether a server whose users are ``members`` may see ``event`` (federation).

        Synapse's rule for servers: ``world_readable`` and ``shared`` are visible (the
        caller checks that the server is in the room now); ``joined`` needs one of its
        users joined at the event, ``invited`` joined or invited. ``members`` are the
        server's users that have membership in the room. As for users, the state before
        *or* after the event counts, so a server sees its own users' membership changes
        and visibility changes. Events without stored state (outliers) are visible.
        """
        after = self.state.hash_after(event.event_id)
        if after is None:
            return True

        def allowed(visibility: str, memberships: set[str]) -> bool:
            if visibility in (WORLD_READABLE, SHARED) or JOIN in memberships:
                return True
            return visibility == INVITED and INVITE in memberships

        visibility = self._visibility_at(after)
        memberships = {self._membership_at(after, member) for member in members}
        if allowed(visibility, memberships):
            return True
        if not event.is_state:
            return False
        if event.state_pair == HISTORY_VISIBILITY:
            return allowed(self._visibility_of(self._before(event)), memberships)
        if event.type == "m.room.member" and event.state_key in members:
            before = {self._membership_at(after, member) for member in members
                      if member != event.state_key}
            before.add(self._membership_of(self._before(event)))
            return allowed(visibility, before)
        return False

    # --- cached reads of a snapshot ------------------------------------------------

    def _lookup(self, state_hash: int, pair: StateKey) -> str | None:
        key = self.short.statekey(pair)
        if key is None:
            return None
        short_event = self.snapshots.load(state_hash).get(key)
        return self.short.event_id(short_event) if short_event is not None else None

    def _visibility_at(self, state_hash: int) -> str:
        cached = self._visibility.get(state_hash)
        if cached is None:
            cached = self._visibility_of(self._lookup(state_hash, HISTORY_VISIBILITY))
            self._visibility.put(state_hash, cached)
        return cached

    def _membership_at(self, state_hash: int, user_id: str) -> str:
        cached = self._members.get((state_hash, user_id))
        if cached is None:
            cached = self._membership_of(self._lookup(state_hash, member_key(user_id)))
            self._members.put((state_hash, user_id), cached)
        return cached

    def _visibility_of(self, event_id: str | None) -> str:
        event = self.events.get(event_id) if event_id is not None else None
        value = event.content.get("history_visibility") if event is not None else None
        return value if isinstance(value, str) and value in _KNOWN else SHARED

    def _membership_of(self, event_id: str | None) -> str:
        event = self.events.get(event_id) if event_id is not None else None
        return (event.membership or _NONE) if event is not None else _NONE

    def _before(self, event: Event) -> str | None:
        """The event holding ``event``'s own state pair just before it, if any."""
        cached = self._replaced.get(event.event_id)
        if cached is not None:
            return cached or None
        found: str | None = None
        for prev in event.prev_event_ids:
            state_hash = self.state.hash_after(prev)
            if state_hash is not None:
                found = self._lookup(state_hash, event.state_pair)
                break
        self._replaced.put(event.event_id, found or "")
        return found

    def _joined_until(self, room_id: str, user_id: str) -> int:
        """Stream count at which the user's last stay in the room ended.

        ``_ALWAYS`` while joined, ``_NEVER`` if they never joined: "joined at any point
        after event E" is then ``count(E) < _joined_until``.
        """
        current = self.state.event_id(room_id, member_key(user_id))
        if current is None:
            return _NEVER
        cached = self._until.get((room_id, user_id))
        if cached is not None and cached[0] == current:
            return cached[1]
        value = self._walk_back(current)
        self._until.put((room_id, user_id), (current, value))
        return value

    def _walk_back(self, member_event_id: str) -> int:
        event = self.events.get(member_event_id)
        if event is None:
            return _NEVER
        if event.membership == JOIN:
            return _ALWAYS
        for _ in range(_MAX_WALK):
            previous_id = self._before(event)
            previous = self.events.get(previous_id) if previous_id is not None else None
            if previous is None:
                return _NEVER
            if previous.membership == JOIN:
                ended = self.events.count_of(event.event_id)
                return ended if ended is not None else _NEVER
            event = previous
        return _NEVER
