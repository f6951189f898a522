"""Recorded notifications: what ``GET /notifications`` lists.

Owns ``usernotification_notification``. The unread counter (``services/unread.py``)
hands over every reader an event notifies, inside the event's write batch; each
becomes one record keyed by the user and the event's timeline count, so a user's
notifications are one prefix scan, newest first from the end. Whether a
notification was read is not stored: it is read once the unread index no longer
holds it (a receipt, threaded or not, or the user's own later event cleared it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import orjson
import trio

from conduwuit.errors import invalid_param
from conduwuit.protocol.events import Event
from conduwuit.store import SEP, Store, WriteBatch, from_u64_be, join, u64_be
from conduwuit.store.keys import U64_MAX

from ..rooms.events_db import EventStore
from ..rooms.serving import EventServing
from ..unread import Notified

log = logging.getLogger(__name__)

_T_NOTIFICATIONS = "usernotification_notification"
_HIGHLIGHT, _NOTIFY = b"h", b"n"
DEFAULT_LIMIT = 20
# Every notified reader of every event gets a record: without a cap a busy room adds
# members x messages records forever. Older ones than a user's newest KEEP_PER_USER are
# pruned daily (GET /notifications pages back this far).
KEEP_PER_USER = 1000
PRUNE_INTERVAL_S = 24 * 3600.0
MAX_LIMIT = 100

# (user_id, room_id, timeline count) -> whether the notification is still unread
UnreadCheck = Callable[[str, str, int], bool]


@attrs.define
class Notifications:
    store: Store
    events: EventStore
    serving: EventServing
    is_unread: UnreadCheck

    def stage(self, batch: WriteBatch, event: Event, count: int,
              notified: list[Notified]) -> None:
        """``Unread.on_notified``: one record per notified reader, in the event's batch."""
        room_id = event.room_id
        if room_id is None:
            return
        common = room_id.encode() + SEP + event.event_id.encode() + SEP
        position = SEP + u64_be(count)
        encoded: dict[int, bytes] = {}  # readers sharing one actions list share its JSON
        tree = self.store.tree(_T_NOTIFICATIONS)
        for item in notified:
            actions = encoded.get(id(item.actions))
            if actions is None:
                actions = encoded[id(item.actions)] = orjson.dumps(list(item.actions))
            batch.put(tree, item.user_id.encode() + position,
                      (_HIGHLIGHT if item.highlight else _NOTIFY) + common + actions)

    def prune(self, keep_per_user: int = KEEP_PER_USER) -> int:
        """Drop each user's records beyond their newest ``keep_per_user``; returns how
        many. A scan of the whole tree: run it in a worker thread."""
        tree = self.store.tree(_T_NOTIFICATIONS)
        pruned = 0
        user: bytes | None = None
        keys: list[bytes] = []

        def drop_oldest() -> int:
            stale = keys[:max(0, len(keys) - keep_per_user)]
            for start in range(0, len(stale), 1000):
                with self.store.batch() as batch:
                    for key in stale[start:start + 1000]:
                        batch.delete(tree, key)
            return len(stale)

        for key in tree.keys(b""):
            owner = key[:-9]  # user_id; then SEP and the u64 count (which may hold 0xFF)
            if owner != user:
                pruned += drop_oldest()
                user, keys = owner, []
            keys.append(key)
        return pruned + drop_oldest()

    async def prune_forever(self) -> None:
        """The ``push/notification-prune`` job."""
        while True:
            pruned = await trio.to_thread.run_sync(self.prune)
            if pruned:
                log.info("pruned %d old notification records", pruned)
            await trio.sleep(PRUNE_INTERVAL_S)

    def page(self, user_id: str, since: str | None, limit: Any,
             only: str | None) -> dict[str, Any]:
        """``GET /notifications``: newest first, ``next_token`` while more remain."""
        count = _limit(limit)
        upto = U64_MAX
        if since is not None:
            if not since.isdigit():
                raise invalid_param("from is not a token from this endpoint")
            upto = int(since) - 1
        prefix = join(user_id) + SEP
        out: list[dict[str, Any]] = []
        next_token: str | None = None
        if upto >= 0:
            tree = self.store.tree(_T_NOTIFICATIONS)
            for key, raw in tree.iter(prefix, start=prefix + u64_be(min(upto, U64_MAX)),
                                      reverse=True):
                position = from_u64_be(key[len(prefix):])
                if position > upto:
                    continue
                if only == "highlight" and raw[:1] != _HIGHLIGHT:
                    continue
                if len(out) == count:
                    next_token = str(out[-1]["_position"])
                    break
                shown = self._shown(user_id, position, raw)
                if shown is not None:
                    out.append(shown)
        for item in out:
            item.pop("_position")
        body: dict[str, Any] = {"notifications": out}
        if next_token is not None:
            body["next_token"] = next_token
        return body

    def _shown(self, user_id: str, position: int, raw: bytes) -> dict[str, Any] | None:
        room, event_id, actions = raw[1:].split(SEP, 2)
        event = self.events.get(event_id.decode())
        if event is None:
            return None
        room_id = room.decode()
        return {"_position": position, "actions": orjson.loads(actions), "room_id": room_id,
                "ts": event.origin_server_ts,
                "read": not self.is_unread(user_id, room_id, position),
                "event": self.serving.client(event, user_id, include_room_id=False)}


def _limit(value: Any) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise invalid_param("limit must be an integer") from None
    if limit < 0:
        raise invalid_param("limit must not be negative")
    return max(1, min(limit, MAX_LIMIT))
