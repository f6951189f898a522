"""Device-list changes: who must re-fetch whose keys (sync ``device_lists``, ``/keys/changes``).

One log, ordered by the store's global counter like every other sync stream:
``u64 count + kind + tuple``. Kinds:

* ``k`` (user): the user's device or cross-signing keys changed, or a device went away;
  everyone sharing a room with them (and they themselves) is told.
* ``j`` / ``l`` (room, user): the user joined / left the room. Joining means the room's
  members now need each other's keys; leaving may mean they no longer share any room.
  Written by the timeline's index writer in the membership event's own batch, at the
  event's count.
* ``t`` (viewer, user): only the viewer is told, e.g. after signing the user's master key
  with their user-signing key (a signature only the viewer can see).

``changed`` holds users whose keys moved, or who newly share a room with the requester;
``left`` holds users that shared a room with the requester inside the window and share
none now. Both are decided against the current memberships, which keeps them simple and
always safe: a client that re-queries keys it did not need loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from conduwuit.protocol.events import Event
from conduwuit.store import SEP, Store, WriteBatch, from_u64_be, join, u64_be

from ..notifier import Notifier
from ..rooms.membership import JOIN, Membership

TREE = "keychangeid_userid"
KEYS, JOINED, LEFT, TARGETED = b"k", b"j", b"l", b"t"


@attrs.define
class DeviceLists:
    store: Store
    membership: Membership
    notifier: Notifier

    # --- writing -------------------------------------------------------------------

    def keys_changed(self, user_id: str, batch: WriteBatch | None = None) -> int:
        """Record that ``user_id``'s keys changed; wakes everyone who should hear of it.

        With ``batch`` the entry lands with the caller's other writes; the caller must
        then call :meth:`wake` once the batch is committed.
        """
        count = self.store.next_count()
        key = u64_be(count) + KEYS + join(user_id)
        if batch is None:
            self.store.tree(TREE).put(key, b"")
            self.wake(user_id)
        else:
            batch.put(TREE, key, b"")
        return count

    def seen_by(self, viewer: str, user_id: str) -> None:
        """Tell only ``viewer`` that ``user_id``'s keys (as they see them) changed."""
        count = self.store.next_count()
        self.store.tree(TREE).put(u64_be(count) + TARGETED + join(viewer, user_id), b"")
        self.notifier.notify_user(viewer)

    def wake(self, user_id: str) -> None:
        """Wake the user's own syncs and those of everyone in a room with them."""
        self.notifier.notify_user(user_id)
        for room_id in self.membership.joined_rooms(user_id):
            self.notifier.notify_room(room_id)

    def index_membership(self, batch: WriteBatch, event: Event, count: int) -> None:
        """Timeline index writer: log joins and leaves (the store still has the old one)."""
        if event.type != "m.room.member" or not event.state_key or event.room_id is None:
            return
        user_id, room_id = event.state_key, event.room_id
        was_joined = self.membership.is_joined(room_id, user_id)
        now_joined = event.membership == JOIN
        if was_joined == now_joined:
            return
        kind = JOINED if now_joined else LEFT
        batch.put(TREE, u64_be(count) + kind + join(room_id, user_id), b"")

    # --- reading -------------------------------------------------------------------

    def entries(self, since: int, upto: int) -> Iterator[tuple[int, bytes, list[str]]]:
        """(count, kind, parts) with ``since < count <= upto``, oldest first."""
        if upto <= since:
            return
        for key in self._keys_from(since + 1):
            count = from_u64_be(key[:8])
            if count > upto:
                return
            parts = [p.decode() for p in key[9:].split(SEP)]
            yield count, key[8:9], parts

    def _keys_from(self, start: int) -> Iterator[bytes]:
        for key, _ in self.store.tree(TREE).iter(start=u64_be(start)):
            yield key

    def changes(self, user_id: str, since: int, upto: int) -> dict[str, list[str]]:
        """The ``device_lists`` of a sync (and the body of ``/keys/changes``)."""
        my_rooms = set(self.membership.joined_rooms(user_id))
        rooms_of: dict[str, set[str]] = {}

        def shares(other: str) -> bool:
            if other == user_id:
                return True
            if other not in rooms_of:
                rooms_of[other] = set(self.membership.joined_rooms(other))
            return bool(my_rooms & rooms_of[other])

        maybe_changed: set[str] = set()
        maybe_left: set[str] = set()
        changed: set[str] = set()
        for _, kind, parts in self.entries(since, upto):
            if kind == KEYS:
                maybe_changed.add(parts[0])
            elif kind == TARGETED:
                if parts[0] == user_id:
                    changed.add(parts[1])
            elif kind == JOINED:
                room_id, member = parts
                if member == user_id:
                    maybe_changed.update(m for m in self.membership.joined_members(room_id)
                                         if m != user_id)
                elif room_id in my_rooms:
                    maybe_changed.add(member)
            elif kind == LEFT:
                room_id, member = parts
                if member == user_id:
                    maybe_left.update(self.membership.joined_members(room_id))
                else:
                    maybe_left.add(member)
        changed.update(u for u in maybe_changed if shares(u))
        left = {u for u in maybe_left if u != user_id and not shares(u)}
        return {"changed": sorted(changed - left), "left": sorted(left)}
