"""One room's result: timeline, required state and metadata, full or as a delta.

A room never sent on the connection gets an ``initial`` result (everything its config
asks for). A room sent before gets only what changed after the position up to which the
connection holds it: new timeline events, state that changed (filtered by its
``required_state``), and name, avatar, heroes and counts only when they changed.
Timelines, state at a position, summaries and event serialisation are /sync's own
(``services/sync.py``), so both APIs agree on what a user may see.
"""

from __future__ import annotations

from typing import Any

import attrs

from conduwuit.protocol.events import Event

from ..requester import Requester
from ..rooms.membership import BAN, INVITE, JOIN, KNOCK, LEAVE
from ..rooms.state import AVATAR, NAME, StateMap, member_key
from ..sync import Sync, make_token
from .connections import MAX_LAZY_MEMBERS
from .lists import Candidate
from .request import MEMBER, RoomConfig


@attrs.frozen
class RoomWork:
    """What to compute for one room of the response."""

    candidate: Candidate
    config: RoomConfig
    lists: tuple[str, ...]
    from_bound: int | None  # None: initial
    prev_config: RoomConfig | None
    prev_lazy: frozenset[str]
    is_dm: bool


@attrs.frozen
class RoomOutcome:
    body: dict[str, Any]
    timeline_ids: tuple[str, ...]
    lazy_members: frozenset[str]
    empty: bool  # a delta with nothing in it (the room is left out of the response)


def room_result(sync: Sync, who: Requester, work: RoomWork, since: int | None,
                upto: int) -> RoomOutcome:
    user_id = who.user_id
    c = work.candidate
    room_id = c.room_id
    initial = work.from_bound is None
    body: dict[str, Any] = {"membership": c.membership}
    if initial:
        body["initial"] = True
    if work.lists:
        body["lists"] = list(work.lists)
    if work.is_dm:
        body["is_dm"] = True
    body["bump_stamp"] = c.bump

    if c.membership in (INVITE, KNOCK):
        body["invite_state"] = sync.rooms.membership.stripped_state(user_id, room_id)
        body["notification_count"] = body["highlight_count"] = 0
        changed = initial or (work.from_bound is not None and c.changed_at > work.from_bound)
        return RoomOutcome(body, (), frozenset(), not changed)

    visible_upto = upto if c.membership == JOIN else c.changed_at
    expanded = (not initial and work.prev_config is not None
                and work.config.timeline_limit > work.prev_config.timeline_limit)

    # --- timeline -------------------------------------------------------------------
    events: list[tuple[int, Event]] = []
    limited = False
    if work.config.timeline_limit > 0:
        after = None if (initial or expanded) else work.from_bound
        events, limited = sync._timeline(user_id, room_id, after, visible_upto,
                                         work.config.timeline_limit, {})
        first = events[0][0] if events else None
        body["timeline"] = [sync._client(who, e) for _, e in events]
        body["limited"] = limited
        body["prev_batch"] = make_token(first - 1 if first is not None else visible_upto)
        body["num_live"] = (sum(1 for count, _ in events if count > since)
                            if since is not None else 0)
        if expanded:
            body["expanded_timeline"] = body["unstable_expanded_timeline"] = True

    # --- state ----------------------------------------------------------------------
    current = (sync.rooms.state.current(room_id) if c.membership == JOIN
               else sync._state_at(room_id, c.changed_at))
    if initial:
        delta: StateMap = current
    else:
        assert work.from_bound is not None
        before = sync._state_at(room_id, work.from_bound)
        delta = {pair: eid for pair, eid in current.items() if before.get(pair) != eid}
    rs = work.config.required_state
    chosen: StateMap = {pair: eid for pair, eid in delta.items()
                        if rs.matches(pair[0], pair[1], user_id)}
    if not initial and work.prev_config is not None \
            and work.prev_config.required_state != rs:
        # Newly asked-for state the client never got: send it from the current state.
        old = work.prev_config.required_state
        for pair, eid in current.items():
            if rs.matches(pair[0], pair[1], user_id) \
                    and not old.matches(pair[0], pair[1], user_id):
                chosen[pair] = eid
    lazy: frozenset[str] = frozenset()
    if rs.lazy:
        wanted = {e.sender for _, e in events}
        for _, e in events:
            if e.type == MEMBER and e.state_key is not None:
                wanted.add(e.state_key)
        # After a gap the client drops its member cache (MSC4186), so resend.
        known = frozenset() if (initial or limited) else work.prev_lazy
        for member in wanted - known:
            member_event = current.get(member_key(member))
            if member_event is not None:
                chosen[member_key(member)] = member_event
        sent_members = set(wanted)
        if not initial and not limited:
            for pair, eid in delta.items():
                if pair[0] == MEMBER:
                    chosen[pair] = eid
                    sent_members.add(pair[1])
        lazy = frozenset(known | sent_members)
        if len(lazy) > MAX_LAZY_MEMBERS:
            lazy = frozenset(sent_members)
    if chosen:
        state_events = sync.rooms.state.events_of(chosen)
        body["required_state"] = [sync._client(who, e) for e in state_events.values()]

    # --- metadata -------------------------------------------------------------------
    name_changed = initial or NAME in delta
    membership_changed = initial or any(pair[0] == MEMBER for pair in delta)
    name = _content_str(sync, current, NAME, "name")
    if name_changed and name:
        body["name"] = name
    if initial or AVATAR in delta:
        avatar = _content_str(sync, current, AVATAR, "url")
        if avatar:
            body["avatar"] = avatar
    if membership_changed and c.membership == JOIN:
        summary = sync._summary(user_id, room_id)
        body["joined_count"] = summary["m.joined_member_count"]
        body["invited_count"] = summary["m.invited_member_count"]
        if not name:
            body["heroes"] = [_hero(sync, current, hero) for hero in summary["m.heroes"]]
    counts = (sync.unread_source(room_id, user_id)
              if sync.unread_source is not None and c.membership == JOIN else {})
    body["notification_count"] = counts.get("notification_count", 0)
    body["highlight_count"] = counts.get("highlight_count", 0)

    empty = not initial and not expanded and not events and not chosen \
        and not (c.membership in (LEAVE, BAN) and work.from_bound is not None
                 and c.changed_at > work.from_bound) \
        and not any(k in body for k in ("name", "avatar", "heroes", "joined_count"))
    return RoomOutcome(body, tuple(e.event_id for _, e in events), lazy, empty)


def _content_str(sync: Sync, state: StateMap, pair: tuple[str, str], field: str) -> str | None:
    event_id = state.get(pair)
    event = sync.rooms.events.get(event_id) if event_id is not None else None
    value = event.content.get(field) if event is not None else None
    return value if isinstance(value, str) and value else None


def _hero(sync: Sync, state: StateMap, user_id: str) -> dict[str, Any]:
    hero: dict[str, Any] = {"user_id": user_id}
    event_id = state.get(member_key(user_id))
    event = sync.rooms.events.get(event_id) if event_id is not None else None
    if event is not None:
        for field in ("displayname", "avatar_url"):
            value = event.content.get(field)
            if isinstance(value, str):
                hero[field] = value
    return hero
