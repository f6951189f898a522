"""Presence: online, unavailable (idle) or offline, with a status message.

Owns ``presenceid_presence`` and ``userid_presenceid``. Each change takes a
stream position and replaces the user's previous record, so the stream tree
holds each user's latest presence in stream order; ``/sync`` delivers the
changes since its token of the users who share a room with the syncing user
(and their own), and each change wakes the long-polls of those users (through
the rooms of the changed user, which every waiting sync listens to).

Activity (``/sync`` with ``set_presence=online``, typing, sending) marks a user
online and currently active. The ``presence/timers`` job (``nursery/presence.py``)
moves idle users on: ``unavailable`` once ``presence_idle_timeout_s`` passed
since their last activity, ``offline`` once ``presence_offline_timeout_s`` did.
Its timers are one heap of ``(due, user)`` for every user, not a task each; an
entry is only a reminder to look again, so activity does not touch the heap and
a popped entry reschedules itself when the user was active since.

Timers live in memory: at startup every local user still shown online or idle
is set offline (as conduwuit does), and comes back with their next activity.
With ``allow_local_presence = false`` nothing of this runs: the endpoints answer
403 and local users have no presence.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from typing import Any

import attrs
import orjson
import trio

from conduwuit.errors import MatrixError
from conduwuit.protocol.events import Event
from conduwuit.store import Store, from_u64_be, u64_be

from .notifier import Notifier
from .profile import Profile
from .rooms.membership import Membership
from .users import Users

ONLINE, UNAVAILABLE, OFFLINE = "online", "unavailable", "offline"
STATES = (ONLINE, UNAVAILABLE, OFFLINE)
MAX_STATUS_MSG_CHARS = 1024  # the spec sets no limit; long enough for any status line

_T_STREAM = "presenceid_presence"
_T_LATEST = "userid_presenceid"


def _now_ms() -> int:
    return int(time.time() * 1000)


@attrs.frozen
class PresenceRecord:
    state: str
    last_active_ts: int  # ms since the epoch of the user's last activity
    currently_active: bool = False
    status_msg: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps({"presence": self.state, "last_active_ts": self.last_active_ts,
                             "currently_active": self.currently_active,
                             "status_msg": self.status_msg})

    @classmethod
    def from_json(cls, raw: bytes) -> PresenceRecord:
        data = orjson.loads(raw)
        return cls(data["presence"], int(data["last_active_ts"]),
                   bool(data.get("currently_active", False)), data.get("status_msg"))


@attrs.define
class Presence:
    store: Store
    users: Users
    profile: Profile
    membership: Membership
    notifier: Notifier
    enabled: bool
    idle_timeout_s: float
    offline_timeout_s: float
    # In-memory activity newer than the stored record (pings that changed nothing visible).
    _last_active: dict[str, int] = attrs.field(factory=dict)
    _heap: list[tuple[float, str]] = attrs.field(factory=list)  # (due, wall-clock s), user
    _scheduled: set[str] = attrs.field(factory=set)
    _changed: trio.Event = attrs.field(factory=trio.Event)
    # Called with (user_id, record) after each stored change: the federation sender.
    on_change: list[Callable[[str, PresenceRecord], None]] = attrs.field(factory=list)

    # --- startup -------------------------------------------------------------------------

    def reset_after_restart(self) -> int:
        """Set every local user still online or idle to offline; returns how many."""
        reset = 0
        for user_id, record in self._all_latest():
            if record.state != OFFLINE and self.users.is_local(user_id):
                self._write(user_id, attrs.evolve(record, state=OFFLINE, currently_active=False))
                reset += 1
        return reset

    # --- client requests -----------------------------------------------------------------

    def set_status(self, who: str, user_id: str, state: Any, status_msg: Any) -> None:
        """``PUT /presence/{userId}/status``."""
        self._require_enabled()
        if who != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "You cannot set the presence of another user")
        if state is None:
            raise MatrixError(400, "M_MISSING_PARAM", "presence is required")
        if state not in STATES:
            raise MatrixError(400, "M_INVALID_PARAM", "presence must be online, unavailable "
                              "or offline")
        if status_msg is not None and not isinstance(status_msg, str):
            raise MatrixError(400, "M_BAD_JSON", "status_msg must be a string")
        if status_msg is not None and len(status_msg) > MAX_STATUS_MSG_CHARS:
            raise MatrixError(400, "M_INVALID_PARAM",
                              f"status_msg is longer than {MAX_STATUS_MSG_CHARS} characters")
        now = _now_ms()
        self._last_active.pop(user_id, None)
        self._write(user_id, PresenceRecord(state, now, state == ONLINE, status_msg or None))
        self._schedule(user_id, now)

    def get_status(self, who: str, user_id: str) -> dict[str, Any]:
        """``GET /presence/{userId}/status``: for the user and those sharing a room."""
        self._require_enabled()
        if self.users.is_local(user_id) and not self.users.exists(user_id):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown user")
        if who != user_id and not self.membership.shares_room(who, user_id):
            raise MatrixError(403, "M_FORBIDDEN", "You are not allowed to see their presence")
        record = self.current(user_id)
        if record is None:
            if not self.users.is_local(user_id):
                raise MatrixError(404, "M_NOT_FOUND", "No presence known for this user")
            return {"presence": OFFLINE}
        body = self._content(user_id, record, with_profile=False)
        return body

    def on_sync(self, user_id: str, set_presence: str) -> None:
        """``/sync?set_presence=``: online marks activity, unavailable idles, offline
        leaves presence as it is (the spec: the client is then not marked online)."""
        if not self.enabled or set_presence == OFFLINE:
            return
        if set_presence == UNAVAILABLE:
            record = self.current(user_id)
            if record is None or record.state != UNAVAILABLE:
                now = _now_ms()
                self._write(user_id, PresenceRecord(
                    UNAVAILABLE, now, False, record.status_msg if record else None))
                self._schedule(user_id, now)
            return
        self.ping(user_id)

    def ping(self, user_id: str) -> None:
        """Activity of a local user: online and currently active from now."""
        if not self.enabled or not self.users.is_local(user_id):
            return
        now = _now_ms()
        record = self.current(user_id)
        if record is not None and record.state == ONLINE and record.currently_active:
            self._last_active[user_id] = now  # nothing others see changes: no new position
        else:
            self._last_active.pop(user_id, None)
            self._write(user_id, PresenceRecord(ONLINE, now, True,
                                                record.status_msg if record else None))
        self._schedule(user_id, now)

    def on_event(self, event: Event, count: int) -> None:
        """Timeline hook: sending an event is activity."""
        self.ping(event.sender)

    # --- timers (driven by the presence/timers job) ---------------------------------------

    def _schedule(self, user_id: str, last_active_ms: int) -> None:
        if user_id in self._scheduled:
            return  # its pending entry will look again and reschedule from the newer activity
        due = last_active_ms / 1000 + min(self.idle_timeout_s, self.offline_timeout_s)
        self._push(due, user_id)

    def _push(self, due: float, user_id: str) -> None:
        earliest = self._heap[0][0] if self._heap else math.inf
        heapq.heappush(self._heap, (due, user_id))
        self._scheduled.add(user_id)
        if due < earliest:
            self._changed.set()

    def process_due(self, now: float | None = None) -> int:
        """Apply the idle/offline moves that are due; returns how many users moved."""
        now = time.time() if now is None else now
        moved = 0
        while self._heap and self._heap[0][0] <= now:
            _, user_id = heapq.heappop(self._heap)
            self._scheduled.discard(user_id)
            moved += self._timer_fired(user_id, now)
        return moved

    def _timer_fired(self, user_id: str, now: float) -> int:
        record = self.current(user_id)
        if record is None or record.state == OFFLINE:
            return 0
        last_active = self._last_active.get(user_id, record.last_active_ts) / 1000
        idle_at = last_active + self.idle_timeout_s
        offline_at = last_active + self.offline_timeout_s
        if now >= offline_at:
            self._last_active.pop(user_id, None)
            self._write(user_id, attrs.evolve(record, state=OFFLINE, currently_active=False,
                                              last_active_ts=int(last_active * 1000)))
            return 1
        moved = 0
        if record.state == ONLINE and now >= idle_at:
            self._last_active.pop(user_id, None)
            self._write(user_id, attrs.evolve(record, state=UNAVAILABLE, currently_active=False,
                                              last_active_ts=int(last_active * 1000)))
            moved = 1
            record = self.current(user_id) or record
        if record.state == ONLINE:
            self._push(idle_at, user_id)
        else:
            self._push(offline_at, user_id)
        return moved

    def next_due(self) -> float:
        """Wall-clock time of the earliest timer, ``inf`` when none."""
        return self._heap[0][0] if self._heap else math.inf

    async def wait_for_change(self, due: float) -> None:
        """Sleep until wall-clock ``due`` or until an earlier timer is added."""
        with trio.move_on_after(max(0.0, due - time.time())):
            await self._changed.wait()
        if self._changed.is_set():
            self._changed = trio.Event()

    @property
    def timers(self) -> int:
        return len(self._heap)

    def set_remote(self, user_id: str, state: str, last_active_ago_ms: int,
                   currently_active: bool, status_msg: str | None) -> None:
        """Presence of another server's user (``m.presence`` EDU), checked by the caller.

        Stored like a local change so ``/sync`` and ``GET /presence`` show it; no timers:
        the user's server tells us when it changes.
        """
        last_active = _now_ms() - max(0, last_active_ago_ms)
        self._write(user_id, PresenceRecord(state, last_active, currently_active,
                                            status_msg or None))

    # --- reading -------------------------------------------------------------------------

    def current(self, user_id: str) -> PresenceRecord | None:
        position = self.store.tree(_T_LATEST).get(user_id.encode())
        if position is None:
            return None
        raw = self.store.tree(_T_STREAM).get(position + user_id.encode())
        return PresenceRecord.from_json(raw) if raw is not None else None

    def source(self, user_id: str, since: int, upto: int) -> list[dict[str, Any]]:
        """Sync hook: presence changes in (since, upto] of users sharing a room (and own)."""
        if since == 0:
            return self._initial(user_id, upto)
        changes = list(self._changes(since, upto))
        if not changes:
            return []
        my_rooms = set(self.membership.joined_rooms(user_id))
        out = []
        for other, record in changes:
            if other != user_id and not any(room in my_rooms
                                            for room in self.membership.joined_rooms(other)):
                continue
            if not self.enabled and self.users.is_local(other):
                continue
            out.append(self._event(other, record))
        return out

    def _initial(self, user_id: str, upto: int) -> list[dict[str, Any]]:
        seen = {user_id}
        for room_id in self.membership.joined_rooms(user_id):
            seen.update(self.membership.joined_members(room_id))
        out = []
        for other in sorted(seen):
            if not self.enabled and self.users.is_local(other):
                continue
            position = self.store.tree(_T_LATEST).get(other.encode())
            if position is None or from_u64_be(position) > upto:
                continue
            record = self.current(other)
            if record is not None:
                out.append(self._event(other, record))
        return out

    def _changes(self, since: int, upto: int) -> Any:
        for key, raw in self.store.tree(_T_STREAM).iter(start=u64_be(since + 1)):
            if from_u64_be(key[:8]) > upto:
                break
            yield key[8:].decode(), PresenceRecord.from_json(raw)

    def _all_latest(self) -> list[tuple[str, PresenceRecord]]:
        return [(key[8:].decode(), PresenceRecord.from_json(raw))
                for key, raw in self.store.tree(_T_STREAM).iter()]

    def _event(self, user_id: str, record: PresenceRecord) -> dict[str, Any]:
        return {"type": "m.presence", "sender": user_id,
                "content": self._content(user_id, record, with_profile=True)}

    def _content(self, user_id: str, record: PresenceRecord, *,
                 with_profile: bool) -> dict[str, Any]:
        last_active = self._last_active.get(user_id, record.last_active_ts)
        content: dict[str, Any] = {
            "presence": record.state,
            "last_active_ago": max(0, _now_ms() - last_active),
            "currently_active": record.currently_active,
        }
        if record.status_msg:
            content["status_msg"] = record.status_msg
        if with_profile:
            for key, value in (("displayname", self.profile.displayname(user_id)),
                               ("avatar_url", self.profile.avatar_url(user_id))):
                if value is not None:
                    content[key] = value
        return content

    # --- writing -------------------------------------------------------------------------

    def _write(self, user_id: str, record: PresenceRecord) -> int:
        position = self.store.next_count()
        previous = self.store.tree(_T_LATEST).get(user_id.encode())
        with self.store.batch() as batch:
            if previous is not None:
                batch.delete(_T_STREAM, previous + user_id.encode())
            batch.put(_T_STREAM, u64_be(position) + user_id.encode(), record.to_json())
            batch.put(_T_LATEST, user_id.encode(), u64_be(position))
        self.notifier.notify_user(user_id)
        for room_id in self.membership.joined_rooms(user_id):
            self.notifier.notify_room(room_id)
        for hook in self.on_change:
            hook(user_id, record)
        return position

    def _require_enabled(self) -> None:
        if not self.enabled:
            raise MatrixError(403, "M_FORBIDDEN", "Presence is disabled on this server")
