"""Wake-ups for long-polling readers (``/sync``), signalled by writers.

A waiting sync registers interest in its user and its rooms; any write that
concerns one of them sets the waiter's event. Writers call ``notify_*``
synchronously right after their write is committed, so a sync that checked
for news and then registered (with no await in between) cannot miss one.
At shutdown ``wake_all`` releases every waiter so long-polls answer at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import trio


@attrs.define(eq=False)
class _Waiter:
    event: trio.Event = attrs.field(factory=trio.Event)


@attrs.define
class Notifier:
    stopping: trio.Event
    _by_user: dict[str, set[_Waiter]] = attrs.field(factory=dict)
    _by_room: dict[str, set[_Waiter]] = attrs.field(factory=dict)

    def notify_user(self, user_id: str) -> None:
        self._wake(self._by_user.get(user_id))

    def notify_room(self, room_id: str) -> None:
        self._wake(self._by_room.get(room_id))

    def notify_users(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            self.notify_user(user_id)

    def wake_all(self) -> None:
        for index in (self._by_user, self._by_room):
            for waiters in list(index.values()):
                self._wake(waiters)

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._by_user.values())

    async def wait(self, user_id: str, room_ids: Iterable[str], timeout: float) -> bool:
        """Wait until woken, the timeout passes, or shutdown begins; True if woken."""
        if self.stopping.is_set() or timeout <= 0:
            return False
        waiter = _Waiter()
        rooms = list(room_ids)
        self._by_user.setdefault(user_id, set()).add(waiter)
        for room_id in rooms:
            self._by_room.setdefault(room_id, set()).add(waiter)
        try:
            with trio.move_on_after(timeout):
                await waiter.event.wait()
            return waiter.event.is_set()
        finally:
            self._discard(self._by_user, user_id, waiter)
            for room_id in rooms:
                self._discard(self._by_room, room_id, waiter)

    @staticmethod
    def _wake(waiters: set[_Waiter] | None) -> None:
        for waiter in list(waiters or ()):
            waiter.event.set()

    @staticmethod
    def _discard(index: dict[str, set[_Waiter]], key: str, waiter: _Waiter) -> None:
        waiters = index.get(key)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del index[key]
