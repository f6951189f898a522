"""The user's room list: which rooms it holds, the filters, and the recency order.

Rooms are ordered by ``bump_stamp``, newest first: the stream position of the room's
latest event of a type that counts as activity (Synapse's default bump types), or, when
the user's own membership is newer (a room just joined), that membership change. Rooms
the user is not joined to are ordered by their membership change. Element X sorts its
room list by the same ``bump_stamp`` we return, so the server's windows and the client's
order agree. (Synapse orders by the latest event of any type; MSC4186 leaves it to the
server.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from conduwuit.protocol.events import Event

from ..rooms import Rooms
from ..rooms.membership import BAN, INVITE, JOIN, KNOCK, LEAVE
from ..rooms.state import CREATE, ENCRYPTION, NAME, member_key
from .request import Filters

# The event types that move a room up the list (Synapse's DEFAULT_BUMP_EVENT_TYPES).
BUMP_EVENT_TYPES = frozenset({
    "m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite",
    "m.poll.start", "m.beacon_info",
})


@attrs.define
class BumpStamps:
    """The latest bump event position of each room, learnt once and kept by a hook."""

    rooms: Rooms
    _latest: dict[str, int] = attrs.field(factory=dict)

    def on_event(self, event: Event, count: int) -> None:
        room_id = event.room_id
        if room_id is not None and event.type in BUMP_EVENT_TYPES \
                and count > self._latest.get(room_id, 0):
            self._latest[room_id] = count

    def latest(self, room_id: str, upto: int) -> int:
        known = self._latest.get(room_id)
        if known is not None and known <= upto:
            return known
        found = 0
        for count, event in self.rooms.events.timeline(room_id, before=upto + 1, reverse=True):
            if event.type in BUMP_EVENT_TYPES:
                found = count
                break
        if known is None:
            self._latest[room_id] = found
        return found


@attrs.frozen
class Candidate:
    room_id: str
    membership: str
    changed_at: int  # stream position of the user's latest membership change
    bump: int


@attrs.define
class RoomFacts:
    """Per-request lookups of what filters need, from state or from invite state."""

    rooms: Rooms
    user_id: str
    _stripped: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)

    def stripped(self, room_id: str) -> list[dict[str, Any]]:
        if room_id not in self._stripped:
            self._stripped[room_id] = self.rooms.membership.stripped_state(self.user_id, room_id)
        return self._stripped[room_id]

    def _content(self, candidate: Candidate, pair: tuple[str, str]) -> Mapping[str, Any] | None:
        if candidate.membership in (INVITE, KNOCK):
            for stripped in self.stripped(candidate.room_id):
                if stripped.get("type") == pair[0] and stripped.get("state_key") == pair[1]:
                    content = stripped.get("content")
                    return content if isinstance(content, dict) else {}
            return None
        event = self.rooms.state.get(candidate.room_id, pair)
        return event.content if event is not None else None

    def encrypted(self, candidate: Candidate) -> bool:
        return self._content(candidate, ENCRYPTION) is not None

    def room_type(self, candidate: Candidate) -> str | None:
        value = (self._content(candidate, CREATE) or {}).get("type")
        return value if isinstance(value, str) else None

    def name(self, candidate: Candidate) -> str:
        value = (self._content(candidate, NAME) or {}).get("name")
        return value if isinstance(value, str) else ""


def candidates(rooms: Rooms, bumps: BumpStamps, user_id: str, upto: int,
               sent: Mapping[str, int]) -> list[Candidate]:
    """The rooms of the user's server-side list, newest activity first.

    Joined, invited, knocked and banned rooms; rooms the user was kicked from; rooms the
    user left themselves only while this connection has not yet been sent the leave.
    """
    out: list[Candidate] = []
    for room_id, change in rooms.membership.rooms_of(user_id):
        if change.count > upto:
            continue  # changed after this response's position: the next one shows it
        membership = change.membership
        if membership == LEAVE:
            member = rooms.state.get(room_id, member_key(user_id))
            kicked = member is not None and member.membership == LEAVE \
                and member.sender != user_id
            unseen_leave = room_id in sent and sent[room_id] < change.count
            if not (kicked or unseen_leave):
                continue
        elif membership not in (JOIN, INVITE, KNOCK, BAN):
            continue
        bump = change.count
        if membership == JOIN:
            bump = max(bump, bumps.latest(room_id, upto))
        out.append(Candidate(room_id, membership, change.count, bump))
    out.sort(key=lambda c: (-c.bump, c.room_id))
    return out


def apply_filters(candidates: Iterable[Candidate], filters: Filters, facts: RoomFacts,
                  dm_rooms: set[str], space_children: set[str] | None,
                  tags_of: Mapping[str, set[str]]) -> list[Candidate]:
    out = []
    for c in candidates:
        if filters.is_dm is not None and (c.room_id in dm_rooms) != filters.is_dm:
            continue
        if filters.is_invite is not None and (c.membership == INVITE) != filters.is_invite:
            continue
        if space_children is not None and c.room_id not in space_children:
            continue
        if filters.is_encrypted is not None and facts.encrypted(c) != filters.is_encrypted:
            continue
        if filters.room_types is not None or filters.not_room_types is not None:
            room_type = facts.room_type(c)
            if filters.not_room_types is not None and room_type in filters.not_room_types:
                continue
            if filters.room_types is not None and room_type not in filters.room_types:
                continue
        if filters.room_name_like is not None and \
                filters.room_name_like.casefold() not in facts.name(c).casefold():
            continue
        tags = tags_of.get(c.room_id, set())
        if filters.not_tags is not None and tags & set(filters.not_tags):
            continue
        if filters.tags is not None and not tags & set(filters.tags):
            continue
        out.append(c)
    return out


def dm_rooms(direct: Mapping[str, Any] | None) -> set[str]:
    """Room ids named in ``m.direct`` account data (user id -> [room ids])."""
    out: set[str] = set()
    for room_ids in (direct or {}).values():
        if isinstance(room_ids, list):
            out.update(r for r in room_ids if isinstance(r, str))
    return out


def space_children(rooms: Rooms, user_id: str, spaces: Iterable[str]) -> set[str]:
    """Rooms named by ``m.space.child`` in the given spaces the user is joined to
    (one level only: MSC4186 says servers must not walk subspaces)."""
    out: set[str] = set()
    for space_id in spaces:
        if not rooms.membership.is_joined(space_id, user_id):
            continue
        for (event_type, state_key), event_id in rooms.state.current(space_id).items():
            if event_type != "m.space.child":
                continue
            event = rooms.events.get(event_id)
            via = event.content.get("via") if event is not None else None
            if isinstance(via, list) and via:
                out.add(state_key)
    return out
