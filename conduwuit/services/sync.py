"""``/sync``: everything that changed for a user since a stream token.

Every stream (timeline, state, membership, account data, receipts, typing,
presence, to-device) draws its positions from the store's one global counter,
so one integer is the whole token: ``since`` < change <= ``upto`` is exactly
what a response carries, and the next response starts at ``upto``. Nothing
written after ``upto`` is read, so a change racing a sync lands in the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs
import orjson

from conduwuit.errors import MatrixError
from conduwuit.protocol.events import Event
from conduwuit.protocol.filters import FilterError, event_allowed, room_allowed, validate_filter
from conduwuit.store import Store

from .account_data import AccountData
from .filters import Filters
from .notifier import Notifier
from .requester import Requester
from .rooms import Rooms
from .rooms.membership import BAN, INVITE, JOIN, KNOCK, LEAVE
from .rooms.state import StateMap

DEFAULT_TIMELINE_LIMIT = 10
MAX_TIMELINE_LIMIT = 100

# (room_id, user_id, since, upto) -> ephemeral events of that room (typing, receipts).
EphemeralSource = Callable[[str, str, int, int], list[dict[str, Any]]]
# (user_id, since, upto) -> global events of a stream (presence, to-device).
UserSource = Callable[[str, int, int], list[dict[str, Any]]]
# (room_id, user_id) -> {"notification_count": n, "highlight_count": h} (push rules).
UnreadSource = Callable[[str, str], dict[str, int]]
# (user_id, device_id, since, upto) -> to-device events for that device. Receiving a
# later ``since`` acknowledges (and lets the source delete) everything up to it.
ToDeviceSource = Callable[[str, str | None, int, int], list[dict[str, Any]]]
# (user_id, since, upto) -> {"changed": [...], "left": [...]} device-list changes.
DeviceListSource = Callable[[str, int, int], dict[str, list[str]]]
# (user_id, device_id) -> one-time key counts / unused fallback key algorithms.
KeyCountSource = Callable[[str, str | None], dict[str, int]]
FallbackSource = Callable[[str, str | None], list[str]]


@attrs.frozen
class SyncRequest:
    since: int | None
    timeout_ms: int
    full_state: bool
    filter: dict[str, Any]


def parse_token(token: str | None) -> int | None:
    if token is None or token == "":
        return None
    digits = token[1:] if token[:1] == "s" else token
    if not digits.isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid since token")
    return int(digits)


def make_token(count: int) -> str:
    return f"s{count}"


@attrs.define
class Sync:
    store: Store
    rooms: Rooms
    account_data: AccountData
    filters: Filters
    notifier: Notifier
    ephemeral_sources: list[EphemeralSource] = attrs.field(factory=list)
    presence_source: UserSource | None = None
    to_device_source: ToDeviceSource | None = None
    device_list_source: DeviceListSource | None = None
    key_count_source: KeyCountSource | None = None
    fallback_source: FallbackSource | None = None
    unread_source: UnreadSource | None = None
    _room_latest: dict[str, int] = attrs.field(factory=dict)

    def on_event(self, event: Event, count: int) -> None:
        """Timeline hook: remember the room moved and wake its readers."""
        room_id = event.room_id
        if room_id is None:
            return
        self._room_latest[room_id] = count
        self.notifier.notify_room(room_id)
        if event.type == "m.room.member" and event.state_key:
            self.notifier.notify_user(event.state_key)

    def resolve_filter(self, user_id: str, raw: str | None) -> dict[str, Any]:
        if not raw:
            return {}
        if raw.lstrip().startswith("{"):
            try:
                return validate_filter(orjson.loads(raw))
            except orjson.JSONDecodeError:
                raise MatrixError(400, "M_NOT_JSON", "filter is not valid JSON") from None
            except FilterError as exc:
                raise MatrixError(400, exc.errcode, str(exc)) from None
        stored = self.filters.get(user_id, raw)
        if stored is None:
            raise MatrixError(400, "M_INVALID_PARAM", "Unknown filter id")
        return dict(stored)

    async def sync(self, who: Requester, request: SyncRequest) -> dict[str, Any]:
        upto = self.store.current_count()
        body = self.compute(who, request, upto)
        if request.since is None or request.full_state or request.timeout_ms <= 0 \
                or not _empty(body):
            return body
        rooms = [room for room, change in self.rooms.membership.rooms_of(who.user_id)
                 if change.membership == JOIN]
        if await self.notifier.wait(who.user_id, rooms, request.timeout_ms / 1000):
            upto = self.store.current_count()
            body = self.compute(who, request, upto)
        return body

    # --- building a response -------------------------------------------------------

    def compute(self, who: Requester, request: SyncRequest, upto: int) -> dict[str, Any]:
        since = request.since
        room_filter = request.filter.get("room", {})
        join_section: dict[str, Any] = {}
        invite_section: dict[str, Any] = {}
        leave_section: dict[str, Any] = {}
        knock_section: dict[str, Any] = {}
        include_leave = bool(room_filter.get("include_leave", False))
        for room_id, change in self.rooms.membership.rooms_of(who.user_id):
            if not room_allowed(room_filter, room_id) or change.count > upto:
                continue
            changed = since is None or change.count > since
            if change.membership == JOIN:
                entry = self._joined(who, room_id, request, upto,
                                     newly_joined=since is not None and change.count > since)
                if entry is not None:
                    join_section[room_id] = entry
            elif change.membership == INVITE and changed:
                invite_section[room_id] = {"invite_state": {
                    "events": self.rooms.membership.stripped_state(who.user_id, room_id)}}
            elif change.membership == KNOCK and changed:
                knock_section[room_id] = {"knock_state": {
                    "events": self.rooms.membership.stripped_state(who.user_id, room_id)}}
            elif change.membership in (LEAVE, BAN) and changed and (since is not None
                                                                    or include_leave):
                leave_section[room_id] = self._left(who, room_id, request, change.count)
        return {
            "next_batch": make_token(upto),
            "rooms": {"join": join_section, "invite": invite_section, "leave": leave_section,
                      "knock": knock_section},
            "account_data": {"events": self._account_data(who.user_id, None, since, upto)},
            "presence": {"events": self._user_stream(self.presence_source, who, since, upto)},
            "to_device": {"events": (self.to_device_source(who.user_id, who.device_id,
                                                           since or 0, upto)
                                     if self.to_device_source is not None else [])},
            "device_lists": (self.device_list_source(who.user_id, since or 0, upto)
                             if self.device_list_source is not None and since is not None
                             else {"changed": [], "left": []}),
            "device_one_time_keys_count": (self.key_count_source(who.user_id, who.device_id)
                                           if self.key_count_source is not None else {}),
            "device_unused_fallback_key_types": (
                self.fallback_source(who.user_id, who.device_id)
                if self.fallback_source is not None else []),
        }

    def _joined(self, who: Requester, room_id: str, request: SyncRequest, upto: int, *,
                newly_joined: bool) -> dict[str, Any] | None:
        since = request.since
        latest = self.latest_count(room_id)
        account = self._account_data(who.user_id, room_id, since, upto)
        ephemeral = [e for source in self.ephemeral_sources
                     for e in source(room_id, who.user_id, since or 0, upto)]
        timeline_moved = since is None or (latest is not None and latest > since)
        if not (timeline_moved or account or ephemeral or newly_joined or request.full_state):
            return None
        timeline_filter = request.filter.get("room", {}).get("timeline", {})
        limit = _limit(timeline_filter)
        events, limited = self._timeline(who.user_id, room_id, since, upto, limit,
                                         timeline_filter)
        first_count = events[0][0] if events else None
        full = since is None or request.full_state or newly_joined
        state = self._state(room_id, since, first_count, upto, full=full, limited=limited)
        state_filter = request.filter.get("room", {}).get("state", {})
        state_events = self._state_events(who, state, events, state_filter)
        return {
            "timeline": {
                "events": [self._client(who, e) for _, e in events],
                "limited": limited,
                "prev_batch": make_token((first_count - 1) if first_count else upto),
            },
            "state": {"events": state_events},
            "ephemeral": {"events": ephemeral},
            "account_data": {"events": account},
            "unread_notifications": (self.unread_source(room_id, who.user_id)
                                     if self.unread_source is not None
                                     else {"notification_count": 0, "highlight_count": 0}),
            "summary": self._summary(who.user_id, room_id) if full or _has_members(events)
            else {},
        }

    def _left(self, who: Requester, room_id: str, request: SyncRequest,
              left_at: int) -> dict[str, Any]:
        limit = _limit(request.filter.get("room", {}).get("timeline", {}))
        events, limited = self._timeline(who.user_id, room_id, request.since, left_at, limit, {})
        return {"timeline": {"events": [self._client(who, e) for _, e in events],
                             "limited": limited,
                             "prev_batch": make_token(events[0][0] - 1 if events else left_at)},
                "state": {"events": []},
                "account_data": {"events": []}}

    def _timeline(self, user_id: str, room_id: str, since: int | None, upto: int, limit: int,
                  event_filter: dict[str, Any]) -> tuple[list[tuple[int, Event]], bool]:
        newest_first: list[tuple[int, Event]] = []
        limited = False
        for count, event in self.rooms.events.timeline(room_id, before=upto + 1, after=since,
                                                       reverse=True):
            if not event_allowed(event_filter, event.type, event.sender):
                continue
            if not self.rooms.visibility.can_see(user_id, event, count):
                continue  # history from before the user could see the room
            if len(newest_first) >= limit:
                limited = True
                break
            newest_first.append((count, event))
        return list(reversed(newest_first)), limited

    def _state(self, room_id: str, since: int | None, first_count: int | None, upto: int, *,
               full: bool, limited: bool) -> StateMap:
        """State up to the start of the timeline: all of it, or what changed since."""
        if not full and not limited:
            return {}
        start = self._state_at(room_id, (first_count - 1) if first_count else upto)
        if full or since is None:
            return start
        before = self._state_at(room_id, since)
        return {pair: eid for pair, eid in start.items() if before.get(pair) != eid}

    def _state_at(self, room_id: str, count: int) -> StateMap:
        for _, event in self.rooms.events.timeline(room_id, before=count + 1, reverse=True):
            return self.rooms.state.after(event.event_id) or {}
        # Nothing before: a room joined over federation starts with our join, whose
        # state (less the events of the timeline itself, dropped later) is the room's.
        for _, event in self.rooms.events.timeline(room_id):
            return self.rooms.state.after(event.event_id) or {}
        return {}

    def _state_events(self, who: Requester, state: StateMap, timeline: list[tuple[int, Event]],
                      state_filter: dict[str, Any]) -> list[dict[str, Any]]:
        lazy = bool(state_filter.get("lazy_load_members", False))
        wanted_members = {e.sender for _, e in timeline} | {who.user_id}
        in_timeline = {e.event_id for _, e in timeline}
        out = []
        for (event_type, state_key), event_id in state.items():
            if event_id in in_timeline:
                continue
            if lazy and event_type == "m.room.member" and state_key not in wanted_members:
                continue
            event = self.rooms.events.get(event_id)
            if event is None or not event_allowed(state_filter, event.type, event.sender):
                continue
            out.append(self._client(who, event))
        return out

    def _summary(self, user_id: str, room_id: str) -> dict[str, Any]:
        joined = self.rooms.membership.joined_members(room_id)
        state = self.rooms.state.current(room_id)
        invited = [key for (kind, key), eid in state.items() if kind == "m.room.member"
                   and (e := self.rooms.events.get(eid)) is not None and e.membership == INVITE]
        heroes = sorted(m for m in (*joined, *invited) if m != user_id)[:5]
        return {"m.heroes": heroes, "m.joined_member_count": len(joined),
                "m.invited_member_count": len(invited)}

    def _client(self, who: Requester, event: Event) -> dict[str, Any]:
        return self.rooms.serving.client(event, who.user_id, who.device_id,
                                         include_room_id=False)

    def _account_data(self, user_id: str, room_id: str | None, since: int | None,
                      upto: int) -> list[dict[str, Any]]:
        # Account data is state-like: a change past ``upto`` shown now and again in the
        # next response is harmless, the client keeps the latest content of each type.
        return self.account_data.changes_since(user_id, since or 0, room_id)

    @staticmethod
    def _user_stream(source: UserSource | None, who: Requester, since: int | None,
                     upto: int) -> list[dict[str, Any]]:
        return source(who.user_id, since or 0, upto) if source is not None else []

    def latest_count(self, room_id: str) -> int | None:
        known = self._room_latest.get(room_id)
        if known is None:
            for count, _ in self.rooms.events.timeline(room_id, reverse=True):
                self._room_latest[room_id] = count
                return count
        return known


def _limit(timeline_filter: dict[str, Any]) -> int:
    limit = timeline_filter.get("limit", DEFAULT_TIMELINE_LIMIT)
    return max(1, min(MAX_TIMELINE_LIMIT, int(limit))) if isinstance(limit, int) \
        else DEFAULT_TIMELINE_LIMIT


def _has_members(events: Iterable[tuple[int, Event]]) -> bool:
    return any(e.type == "m.room.member" for _, e in events)


def _empty(body: dict[str, Any]) -> bool:
    rooms = body["rooms"]
    return not (any(rooms[k] for k in rooms) or body["account_data"]["events"]
                or body["presence"]["events"] or body["to_device"]["events"]
                or body["device_lists"]["changed"] or body["device_lists"]["left"])

