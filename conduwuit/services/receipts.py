"""Read receipts (``m.read``, ``m.read.private``) and the ``m.fully_read`` marker.

Owns ``readreceiptid_readreceipt`` and ``roomuserreceipt_readreceiptid``. Each
accepted receipt takes a stream position and replaces the user's previous receipt
of the same type and thread, so the stream tree holds exactly the latest receipt
of every (user, type, thread) of a room in stream order: ``/sync`` reads one
prefix scan starting after its ``since`` token. Receipts only move forward: one
for an event at or before the current receipt's is accepted and ignored (as
Synapse does), so a late request from a second device cannot pull it back.

``m.fully_read`` is not a receipt: it is room account data, and the spec lets
clients set it through the receipt endpoint too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import orjson

from conduwuit.errors import MatrixError, invalid_param
from conduwuit.protocol.events import Event
from conduwuit.store import SEP, Store, from_u64_be, join, u64_be

from .account_data import AccountData
from .notifier import Notifier
from .rooms.events_db import EventStore
from .rooms.membership import Membership

READ = "m.read"
READ_PRIVATE = "m.read.private"
FULLY_READ = "m.fully_read"
RECEIPT_TYPES = (READ, READ_PRIVATE)
MAIN_THREAD = "main"

_T_STREAM = "readreceiptid_readreceipt"
_T_LATEST = "roomuserreceipt_readreceiptid"

# Called after a read receipt (public or private) moved forward, with (user_id,
# room_id, timeline count of the event, thread_id or None): unread counts listen.
ReadHook = Callable[[str, str, int, str | None], None]
# Called with (room_id, receipt) after any receipt was stored: the federation sender.
ReceiptHook = Callable[[str, "Receipt"], None]


@attrs.frozen
class Receipt:
    user_id: str
    receipt_type: str
    event_id: str
    ts: int
    thread_id: str | None = None


@attrs.define
class Receipts:
    store: Store
    events: EventStore
    membership: Membership
    account_data: AccountData
    notifier: Notifier
    on_read: list[ReadHook] = attrs.field(factory=list)
    on_change: list[ReceiptHook] = attrs.field(factory=list)

    # --- writing -----------------------------------------------------------------------

    def post_receipt(self, user_id: str, room_id: str, receipt_type: str, event_id: str,
                     thread_id: Any = None) -> None:
        """``POST /rooms/{roomId}/receipt/{receiptType}/{eventId}``."""
        if receipt_type not in (*RECEIPT_TYPES, FULLY_READ):
            raise invalid_param(f"Unknown receipt type {receipt_type!r}")
        if thread_id is not None:
            if not isinstance(thread_id, str) or not thread_id:
                raise invalid_param("thread_id must be a non-empty string")
            if receipt_type == FULLY_READ:
                raise invalid_param("thread_id cannot be given for m.fully_read")
        self._require_member(user_id, room_id)
        self._count_in_room(room_id, event_id)
        if receipt_type == FULLY_READ:
            self.account_data.set(user_id, room_id, FULLY_READ, {"event_id": event_id})
        else:
            self.set_receipt(user_id, room_id, receipt_type, event_id, thread_id)

    def set_read_markers(self, user_id: str, room_id: str, markers: dict[str, Any]) -> None:
        """``POST /rooms/{roomId}/read_markers``: the fully-read marker and/or receipts."""
        wanted: dict[str, str] = {}
        for key in (FULLY_READ, READ, READ_PRIVATE):
            value = markers.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.startswith("$"):
                raise MatrixError(400, "M_BAD_JSON", f"{key} must be an event ID")
            wanted[key] = value
        self._require_member(user_id, room_id)
        for event_id in wanted.values():
            self._count_in_room(room_id, event_id)
        if FULLY_READ in wanted:
            self.account_data.set(user_id, room_id, FULLY_READ, {"event_id": wanted[FULLY_READ]})
        for receipt_type in RECEIPT_TYPES:
            if receipt_type in wanted:
                self.set_receipt(user_id, room_id, receipt_type, wanted[receipt_type], None)

    def set_receipt(self, user_id: str, room_id: str, receipt_type: str, event_id: str,
                    thread_id: str | None) -> bool:
        """Store a receipt the caller checked; False when it would move backwards."""
        event_count = self._count_in_room(room_id, event_id)
        latest_key = join(room_id, user_id, receipt_type, thread_id or "")
        previous = self.store.tree(_T_LATEST).get(latest_key)
        if previous is not None and from_u64_be(previous[8:16]) >= event_count:
            return False
        position = self.store.next_count()
        ts = int(time.time() * 1000)
        record = {"user_id": user_id, "type": receipt_type, "event_id": event_id, "ts": ts}
        if thread_id is not None:
            record["thread_id"] = thread_id
        with self.store.batch() as batch:
            if previous is not None:
                batch.delete(_T_STREAM, _stream_key(room_id, from_u64_be(previous[:8])))
            batch.put(_T_STREAM, _stream_key(room_id, position), orjson.dumps(record))
            batch.put(_T_LATEST, latest_key, u64_be(position) + u64_be(event_count))
        for hook in self.on_read:
            hook(user_id, room_id, event_count, thread_id)
        stored = Receipt(user_id, receipt_type, event_id, ts, thread_id)
        for change_hook in self.on_change:
            change_hook(room_id, stored)
        if receipt_type == READ_PRIVATE:
            self.notifier.notify_user(user_id)
        else:
            self.notifier.notify_room(room_id)
        return True

    def set_remote_receipt(self, user_id: str, room_id: str, receipt_type: str,
                           event_id: str, thread_id: str | None, ts: int | None) -> bool:
        """A receipt of another server's user (``m.receipt`` EDU), checked by the caller:
        shown like a local one, without the local hooks (unread counts, sending it on).
        404 if the event is not in the room's timeline; False if it would move back."""
        event_count = self._count_in_room(room_id, event_id)
        latest_key = join(room_id, user_id, receipt_type, thread_id or "")
        previous = self.store.tree(_T_LATEST).get(latest_key)
        if previous is not None and from_u64_be(previous[8:16]) >= event_count:
            return False
        position = self.store.next_count()
        record = {"user_id": user_id, "type": receipt_type, "event_id": event_id,
                  "ts": ts if ts is not None else int(time.time() * 1000)}
        if thread_id is not None:
            record["thread_id"] = thread_id
        with self.store.batch() as batch:
            if previous is not None:
                batch.delete(_T_STREAM, _stream_key(room_id, from_u64_be(previous[:8])))
            batch.put(_T_STREAM, _stream_key(room_id, position), orjson.dumps(record))
            batch.put(_T_LATEST, latest_key, u64_be(position) + u64_be(event_count))
        self.notifier.notify_room(room_id)
        return True

    # --- reading -----------------------------------------------------------------------

    def receipts_since(self, room_id: str, since: int, upto: int) -> list[tuple[int, Receipt]]:
        """The latest receipts of the room written in (since, upto], oldest first."""
        prefix = join(room_id) + SEP
        out: list[tuple[int, Receipt]] = []
        for key, raw in self.store.tree(_T_STREAM).iter(prefix, start=prefix + u64_be(since + 1)):
            position = from_u64_be(key[len(prefix):])
            if position > upto:
                break
            record = orjson.loads(raw)
            out.append((position, Receipt(record["user_id"], record["type"], record["event_id"],
                                          record["ts"], record.get("thread_id"))))
        return out

    def latest(self, room_id: str, user_id: str, receipt_type: str,
               thread_id: str | None = None) -> str | None:
        """The event id of the user's current receipt of this type and thread."""
        raw = self.store.tree(_T_LATEST).get(join(room_id, user_id, receipt_type, thread_id or ""))
        if raw is None:
            return None
        record = self.store.tree(_T_STREAM).get(_stream_key(room_id, from_u64_be(raw[:8])))
        return str(orjson.loads(record)["event_id"]) if record is not None else None

    def ephemeral(self, room_id: str, user_id: str, since: int,
                  upto: int) -> list[dict[str, Any]]:
        """Sync hook: one ``m.receipt`` event with the receipts changed since the token.

        Private receipts are shown to their owner only.
        """
        content: dict[str, dict[str, dict[str, Any]]] = {}
        for _, receipt in self.receipts_since(room_id, since, upto):
            if receipt.receipt_type == READ_PRIVATE and receipt.user_id != user_id:
                continue
            entry: dict[str, Any] = {"ts": receipt.ts}
            if receipt.thread_id is not None:
                entry["thread_id"] = receipt.thread_id
            by_type = content.setdefault(receipt.event_id, {})
            by_type.setdefault(receipt.receipt_type, {})[receipt.user_id] = entry
        return [{"type": "m.receipt", "content": content}] if content else []

    # --- checks ------------------------------------------------------------------------

    def _require_member(self, user_id: str, room_id: str) -> None:
        if not self.membership.is_joined(room_id, user_id):
            raise MatrixError(403, "M_FORBIDDEN", "You are not in this room")

    def _count_in_room(self, room_id: str, event_id: str) -> int:
        """The event's timeline position; 404 unless it is in this room's timeline."""
        event: Event | None = self.events.get(event_id)
        count = self.events.count_of(event_id) if event is not None else None
        if event is None or count is None or _room_of(event) != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found in this room")
        return count


def _stream_key(room_id: str, position: int) -> bytes:
    return join(room_id) + SEP + u64_be(position)


def _room_of(event: Event) -> str | None:
    if event.room_id is None and event.type == "m.room.create":
        return "!" + event.event_id[1:]  # v12: the room id is the create event's id
    return event.room_id
