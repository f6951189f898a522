"""Simplified sliding sync (MSC4186): room lists in windows, per-connection deltas.

The client sends its lists (filters and index ranges over the user's rooms ordered by
recency), room subscriptions and extensions on every request; the server answers with
the rooms in those windows that the connection has not been sent yet or that changed
since, and waits (long-polls on /sync's notifier) while there is nothing to send.

Positions are /sync's: every stream draws from the store's one counter, so a response
covers exactly the changes up to one stream position ``upto``. The ``pos`` token is
``<connection position>_<upto>``; the connection position names the state recorded for
that response (``connections.py``), which says what the client already holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import orjson
import trio

from conduwuit.store import Store

from ..account_data import AccountData
from ..notifier import Notifier
from ..receipts import Receipts
from ..requester import Requester
from ..rooms import Rooms
from ..rooms.membership import JOIN
from ..sync import Sync
from ..typing import Typing
from .connections import Connection, Connections, ConnState, make_pos, parse_pos, unknown_pos
from .extensions import ExtensionInput, ExtensionSources, has_news
from .lists import (
    BumpStamps,
    Candidate,
    RoomFacts,
    apply_filters,
    candidates,
    dm_rooms,
    space_children,
)
from .request import RoomConfig, SlidingRequest, parse_request
from .rooms import RoomWork, room_result

__all__ = ["SlidingSync"]

UNSTABLE_FEATURE = "org.matrix.simplified_msc3575"


@attrs.frozen
class _Computed:
    body: dict[str, Any]
    state: ConnState
    news: bool


@attrs.define
class SlidingSync:
    store: Store
    rooms: Rooms
    sync: Sync
    account_data: AccountData
    notifier: Notifier
    bumps: BumpStamps
    extensions: ExtensionSources
    connections: Connections = attrs.field(factory=Connections)

    @classmethod
    def build(cls, store: Store, rooms: Rooms, sync: Sync, account_data: AccountData,
              notifier: Notifier, receipts: Receipts, typing: Typing) -> SlidingSync:
        bumps = BumpStamps(rooms)
        rooms.timeline.on_event.append(bumps.on_event)
        return cls(store, rooms, sync, account_data, notifier, bumps,
                   ExtensionSources(sync, account_data, receipts, typing))

    async def handle(self, who: Requester, body: Mapping[str, Any], pos: str | None,
                     timeout_ms: int) -> dict[str, Any]:
        """One request: compute at once, and long-poll while there is nothing new."""
        request = parse_request(body)
        parsed = parse_pos(pos)
        device = who.device_id or ""
        fingerprint = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        conn: Connection | None
        if parsed is None:
            conn = self.connections.start(who.user_id, device, request.conn_id)
            prev = ConnState(upto=0)
            since: int | None = None
            position = 0
        else:
            position, stream = parsed
            conn = self.connections.get(who.user_id, device, request.conn_id)
            if conn is None:
                raise unknown_pos()
            prev = conn.state_at(position)
            if prev.upto != stream:
                raise unknown_pos()
            since = prev.upto
            answer = conn.last_answer
            if answer is not None and answer[0] == position and answer[1] == fingerprint:
                return answer[2]  # a retry: the very same answer
        deadline = trio.current_time() + timeout_ms / 1000
        computed = self.compute(who, request, prev, since, self.store.current_count())
        while since is not None and not computed.news:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                break
            joined = [room for room, change in self.rooms.membership.rooms_of(who.user_id)
                      if change.membership == JOIN]
            if not await self.notifier.wait(who.user_id, joined, remaining):
                break
            computed = self.compute(who, request, prev, since, self.store.current_count())
        new_position = conn.record(computed.state)
        response = {"pos": make_pos(new_position, computed.state.upto), **computed.body}
        if since is not None and computed.news:
            conn.last_answer = (position, fingerprint, response)
        return response

    # --- one response -------------------------------------------------------------------

    def compute(self, who: Requester, request: SlidingRequest, prev: ConnState,
                since: int | None, upto: int) -> _Computed:
        user_id = who.user_id
        everything = candidates(self.rooms, self.bumps, user_id, upto, prev.rooms)
        by_id = {c.room_id: c for c in everything}
        facts = RoomFacts(self.rooms, user_id)
        dms = dm_rooms(self.account_data.get(user_id, None, "m.direct"))
        tags_of: dict[str, set[str]] = {}
        if any(cfg.filters.tags is not None or cfg.filters.not_tags is not None
               for cfg in request.lists.values()):
            tags_of = {c.room_id: set(self.account_data.tags(user_id, c.room_id))
                       for c in everything}

        # Which rooms are in which list windows, with their combined room configs.
        configs: dict[str, RoomConfig] = {}
        in_lists: dict[str, list[str]] = {}
        lists_body: dict[str, Any] = {}
        list_rooms: dict[str, list[str]] = {}
        for key, cfg in request.lists.items():
            children = (space_children(self.rooms, user_id, cfg.filters.spaces)
                        if cfg.filters.spaces is not None else None)
            matched = apply_filters(everything, cfg.filters, facts, dms, children, tags_of)
            ranges = cfg.ranges if cfg.ranges is not None else ((0, max(len(matched) - 1, 0)),)
            ops = []
            window: list[str] = []
            for start, end in ranges:
                ids = [c.room_id for c in matched[start:end + 1]]
                ops.append({"op": "SYNC", "range": [start, end], "room_ids": ids})
                window.extend(ids)
            lists_body[key] = {"count": len(matched), "ops": ops}
            list_rooms[key] = window
            for room_id in window:
                configs[room_id] = (configs[room_id].combine(cfg.room)
                                    if room_id in configs else cfg.room)
                in_lists.setdefault(room_id, []).append(key)
        subscribed: list[str] = []
        for room_id, sub_config in request.subscriptions.items():
            if room_id not in by_id:
                sub = self._subscribable(user_id, room_id, upto)
                if sub is None:
                    continue  # no membership: nothing the user may see (MSC4186)
                by_id[room_id] = sub
            subscribed.append(room_id)
            configs[room_id] = (configs[room_id].combine(sub_config) if room_id in configs
                                else sub_config)

        # Which of them to send, and the data of each.
        state = ConnState(upto=upto, rooms=dict(prev.rooms), configs=dict(prev.configs),
                          lazy_members=dict(prev.lazy_members),
                          account_data=dict(prev.account_data), receipts=dict(prev.receipts),
                          list_counts={k: v["count"] for k, v in lists_body.items()})
        rooms_body: dict[str, Any] = {}
        initial_rooms: set[str] = set()
        timeline_ids: dict[str, tuple[str, ...]] = {}
        for room_id, config in configs.items():
            candidate = by_id[room_id]
            held = prev.rooms.get(room_id) if since is not None else None
            prev_config = prev.configs.get(room_id) if held is not None else None
            if held is not None and prev_config == config \
                    and not self._has_update(candidate, held):
                state.rooms[room_id] = upto  # nothing new: it is current up to here
                continue
            work = RoomWork(candidate, config, tuple(in_lists.get(room_id, ())), held,
                            prev_config, prev.lazy_members.get(room_id, frozenset()),
                            room_id in dms)
            outcome = room_result(self.sync, who, work, since, upto)
            state.configs[room_id] = config
            if outcome.empty:
                if (self.sync.latest_count(room_id) or 0) <= upto:
                    state.rooms[room_id] = upto
                continue
            state.rooms[room_id] = upto
            state.lazy_members[room_id] = outcome.lazy_members
            rooms_body[room_id] = outcome.body
            timeline_ids[room_id] = outcome.timeline_ids
            if held is None:
                initial_rooms.add(room_id)

        extensions = self.extensions.build(
            ExtensionInput(who, request.extensions, since, upto, list_rooms, subscribed,
                           initial_rooms, timeline_ids),
            prev, state.account_data, state.receipts)
        news = bool(rooms_body) or has_news(extensions) \
            or state.list_counts != prev.list_counts
        body = {"lists": lists_body, "rooms": rooms_body, "extensions": extensions}
        return _Computed(body, state, news)

    def _has_update(self, candidate: Candidate, held: int) -> bool:
        if candidate.changed_at > held:
            return True
        if candidate.membership != JOIN:
            return False  # invites, knocks, leaves: only their membership change counts
        latest = self.sync.latest_count(candidate.room_id)
        return latest is not None and latest > held

    def _subscribable(self, user_id: str, room_id: str, upto: int) -> Candidate | None:
        """A subscribed room outside the lists: any membership the user has (had)."""
        change = self.rooms.membership.change(user_id, room_id)
        if change is None or change.count > upto:
            return None
        bump = change.count
        if change.membership == JOIN:
            bump = max(bump, self.bumps.latest(room_id, upto))
        return Candidate(room_id, change.membership, change.count, bump)

    def device_removed(self, user_id: str, device_id: str) -> None:
        """A deleted device's connections go with it."""
        self.connections.drop_device(user_id, device_id)
