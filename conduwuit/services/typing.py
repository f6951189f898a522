"""Typing notifications: who is typing in which room, in memory only.

Each change of a room's typing set (someone starts, stops or times out) takes a
stream position from the store's counter, so ``/sync`` sends the room's
``m.typing`` event exactly when the set changed since the client's token, and
on an initial sync when anyone is typing. Extending a typing period without a
change of the set is not a change.

Expiry is one timer for every room: a heap of ``(deadline, room, user)``, kept
by the ``typing/expiry`` job (``nursery/typing.py``), which sleeps until the
earliest deadline and is woken through :meth:`Typing.wait_for_change` whenever
an earlier one is added. Heap entries whose deadline was since moved or
removed are stale and skipped when popped.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

import attrs
import trio

from conduwuit.errors import MatrixError
from conduwuit.protocol.events import Event
from conduwuit.store import Store

from .notifier import Notifier
from .rooms.membership import Membership

DEFAULT_TIMEOUT_MS = 30_000  # when a client starts typing without a timeout

# Called with (room_id, user_id, typing) on every start (refreshes too) and stop:
# the federation sender tells other servers.
TypingHook = Callable[[str, str, bool], None]


@attrs.define
class Typing:
    store: Store
    membership: Membership
    notifier: Notifier
    min_timeout_s: float
    max_timeout_s: float
    # room -> user -> deadline (trio clock)
    _typing: dict[str, dict[str, float]] = attrs.field(factory=dict)
    # room -> stream position of the last change of its typing set
    _positions: dict[str, int] = attrs.field(factory=dict)
    _heap: list[tuple[float, str, str]] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)
    on_change: list[TypingHook] = attrs.field(factory=list)

    # --- changes -----------------------------------------------------------------------

    def set_typing(self, room_id: str, user_id: str, typing: bool,
                   timeout_ms: int | None = None) -> None:
        """``PUT /rooms/{roomId}/typing/{userId}`` for a local, joined user."""
        if not self.membership.is_joined(room_id, user_id):
            raise MatrixError(403, "M_FORBIDDEN", "You are not in this room")
        if typing:
            self.start(room_id, user_id, self.clamp(timeout_ms))
        else:
            self.stop(room_id, user_id)

    def clamp(self, timeout_ms: int | None) -> float:
        """The typing period in seconds: the client's, within the configured bounds."""
        seconds = (DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms) / 1000
        return max(self.min_timeout_s, min(self.max_timeout_s, seconds))

    def start(self, room_id: str, user_id: str, seconds: float) -> None:
        deadline = trio.current_time() + seconds
        users = self._typing.setdefault(room_id, {})
        was_typing = user_id in users
        users[user_id] = deadline
        earliest = self._heap[0][0] if self._heap else math.inf
        heapq.heappush(self._heap, (deadline, room_id, user_id))
        if deadline < earliest:
            self._wake_job()
        if not was_typing:
            self._changed_room(room_id)
        for hook in self.on_change:
            hook(room_id, user_id, True)

    def stop(self, room_id: str, user_id: str) -> None:
        users = self._typing.get(room_id)
        if users is None or users.pop(user_id, None) is None:
            return
        if not users:
            del self._typing[room_id]
        self._changed_room(room_id)
        for hook in self.on_change:
            hook(room_id, user_id, False)

    def on_event(self, event: Event, count: int) -> None:
        """Timeline hook: a member who leaves (or is kicked, banned) stops typing at once."""
        if event.type == "m.room.member" and event.state_key and event.room_id is not None \
                and event.membership != "join":
            self.stop(event.room_id, event.state_key)

    def _changed_room(self, room_id: str) -> None:
        self._positions[room_id] = self.store.next_count()
        self.notifier.notify_room(room_id)

    # --- expiry (driven by the typing/expiry job) ---------------------------------------

    def expire_due(self, now: float | None = None) -> int:
        """Stop everyone whose period ended; returns how many stopped."""
        now = trio.current_time() if now is None else now
        expired = 0
        while self._heap and self._heap[0][0] <= now:
            deadline, room_id, user_id = heapq.heappop(self._heap)
            if self._typing.get(room_id, {}).get(user_id) == deadline:
                self.stop(room_id, user_id)
                expired += 1
        return expired

    def next_deadline(self) -> float:
        """The earliest pending deadline (possibly stale), ``inf`` when none."""
        return self._heap[0][0] if self._heap else math.inf

    async def wait_for_change(self, deadline: float) -> None:
        """Sleep until ``deadline`` or until an earlier deadline is added."""
        with trio.move_on_at(deadline):
            await self._changed.wait()
        if self._changed.is_set():
            self._changed = trio.Event()

    def _wake_job(self) -> None:
        self._changed.set()

    # --- reading -----------------------------------------------------------------------

    def typing_users(self, room_id: str) -> list[str]:
        now = trio.current_time()
        return sorted(u for u, deadline in self._typing.get(room_id, {}).items()
                      if deadline > now)

    def ephemeral(self, room_id: str, user_id: str, since: int,
                  upto: int) -> list[dict[str, Any]]:
        """Sync hook: the room's ``m.typing`` event when its typing set changed."""
        position = self._positions.get(room_id)
        if position is None:
            return []
        users = self.typing_users(room_id)
        # An initial sync shows who is typing now; a later one, a change since its token.
        wanted = bool(users) if since == 0 else since < position <= upto
        if not wanted:
            return []
        return [{"type": "m.typing", "content": {"user_ids": users}}]

    @property
    def pending(self) -> int:
        """Heap entries, stale ones included (for tests and the admin room)."""
        return len(self._heap)
