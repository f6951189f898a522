"""Outbound federation: per-destination queues of PDUs and EDUs, sent as transactions.

Everything we must tell another server is first written to the ``sender_queue`` tree
under ``destination + u64 seq`` (a PDU by its event id, an EDU as JSON), and only then
sent; an item leaves the queue only once a transaction carrying it was answered 200.
So a crash loses nothing: what was queued is found again at the next start.

Local room events are staged by a timeline index writer in the event's own write
batch (the event and its queue entries commit together); the ``on_event`` hook that
follows only wakes the job. EDUs come from the hooks of the typing, receipt, presence
and E2EE services (:meth:`Sender.attach`), each behind its ``allow_outgoing_*`` toggle.

The ``sender/federation`` job (``nursery/sender.py``) drives :meth:`take_due`,
:meth:`next_transaction`, :meth:`send_transaction` and :meth:`release`: one
transaction in flight per destination, many destinations at once, exponential
backoff per destination. A destination with nothing queued costs nothing: it has no
task and no timer.

Startup netburst (conduwuit's meaning): what was queued before this start is resent
at once when ``startup_netburst`` is on, trimmed to the newest
``startup_netburst_keep`` items per destination (-1 keeps all, 0 drops the queue). With
netburst off nothing is dropped, but an old queue stays dormant until something new
is queued for its destination, as conduwuit does: a large backlog is not sent to
every server at once right after a restart.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from conduwuit.config import Config
from conduwuit.protocol.events import Event
from conduwuit.store import SEP, Store, WriteBatch, from_u64_be, u64_be

from .client import FederationClient, FederationError, RemoteError, path_segment

if TYPE_CHECKING:
    from conduwuit.services.devices import Devices
    from conduwuit.services.e2ee import E2ee
    from conduwuit.services.presence import Presence, PresenceRecord
    from conduwuit.services.receipts import Receipt, Receipts
    from conduwuit.services.rooms.events_db import EventStore
    from conduwuit.services.rooms.membership import Membership
    from conduwuit.services.rooms.timeline import Timeline
    from conduwuit.services.typing import Typing

log = logging.getLogger(__name__)

QUEUE = "sender_queue"
DEVICE_STREAM = "userid_devicelistid"
MAX_PDUS = 50  # per transaction, as the spec allows
MAX_EDUS = 100
SCAN_LIMIT = 1000  # queue items looked at to fill one transaction
PDU, EDU = b"p", b"e"
SEND_PATH = "/_matrix/federation/v1/send/"
DEFAULT_BACKOFF_BASE = 1.0  # seconds before the first retry; doubles per failure
PARALLEL_PER_WORKER = 32  # destinations served at once per sender_workers unit
READ_PRIVATE = "m.read.private"
_LAST_ACTIVE = "_last_active_ts"  # queued presence keeps a time, sent as an age


def server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


def _now_ms() -> int:
    return int(time.time() * 1000)


@attrs.define
class _Destination:
    """In-memory state of one destination (its queue itself lives in the store)."""

    pending: bool = False  # the queue may hold items
    in_flight: bool = False  # a task is draining it
    dormant: bool = False  # old items waiting for something new (netburst off)
    failures: int = 0
    retry_at: float = 0.0  # trio clock
    last_error: str | None = None
    last_success_ms: int | None = None


@attrs.frozen
class DestinationStatus:
    """One line of the admin view: queue depth and backoff state."""

    destination: str
    queued: int
    in_flight: bool
    dormant: bool
    failures: int
    retry_in: float  # seconds until the next attempt; 0 when it may go now
    last_error: str | None
    last_success_ms: int | None


@attrs.frozen
class Transaction:
    destination: str
    txn_id: str
    keys: list[bytes]  # queue keys to delete once it was accepted
    pdus: list[dict[str, Any]]
    edus: list[dict[str, Any]]


@attrs.define
class Sender:
    config: Config
    store: Store
    client: FederationClient
    events: EventStore
    membership: Membership
    backoff_base: float = DEFAULT_BACKOFF_BASE
    clock: Callable[[], float] = trio.current_time
    _states: dict[str, _Destination] = attrs.field(factory=dict)
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _staged: dict[str, list[str]] = attrs.field(factory=dict)  # event id -> destinations
    _boot_count: int = 0  # the store's counter when this server started
    _fresh: set[str] = attrs.field(factory=set)  # destinations queued to since the start
    _started: bool = False
    _e2ee: E2ee | None = None
    _devices: Devices | None = None

    def __attrs_post_init__(self) -> None:
        self._boot_count = self.store.current_count()

    @property
    def server_name(self) -> str:
        return self.config.server_name

    @property
    def parallel(self) -> int:
        """Destinations served at once (``sender_workers``; 0 picks two units)."""
        return PARALLEL_PER_WORKER * (self.config.sender_workers or 2)

    # --- wiring ----------------------------------------------------------------------

    def attach(self, *, timeline: Timeline, typing: Typing, receipts: Receipts, presence: Presence,
               e2ee: E2ee, devices: Devices) -> None:
        """Subscribe to the hooks of the services whose changes other servers hear of."""
        timeline.index_writers.append(self.stage_event)
        timeline.on_event.append(self.on_event)
        typing.on_change.append(self.typing_changed)
        receipts.on_change.append(self.receipt_changed)
        presence.on_change.append(self.presence_changed)
        e2ee.to_device.on_remote.append(self.to_device)
        e2ee.keys.on_change.append(self.device_changed)
        e2ee.cross_signing.on_change.append(self.cross_signing_changed)
        self._e2ee, self._devices = e2ee, devices

    # --- queueing --------------------------------------------------------------------

    def destinations_for(self, servers: Iterable[str]) -> list[str]:
        """``servers`` without ourselves and the forbidden ones; none without federation."""
        if not self.config.allow_federation:
            return []
        return sorted({s for s in servers
                       if s and s != self.server_name and not self.client.is_forbidden(s)})

    def enqueue_pdu(self, destinations: Iterable[str], event_id: str) -> None:
        """Queue a stored event for ``destinations``; durable once this returns."""
        targets = self.destinations_for(destinations)
        if not targets:
            return
        seq = self.store.next_count()
        with self.store.batch(sync=True) as batch:
            for destination in targets:
                batch.put(QUEUE, _key(destination, seq), PDU + event_id.encode())
        self._queued(targets)

    def enqueue_edu(self, destinations: Iterable[str], edu: Mapping[str, Any]) -> None:
        """Queue an EDU (``{"edu_type", "content"}``); durable once this returns."""
        targets = self.destinations_for(destinations)
        if not targets:
            return
        seq = self.store.next_count()
        raw = EDU + orjson.dumps(edu)
        with self.store.batch(sync=True) as batch:
            for destination in targets:
                batch.put(QUEUE, _key(destination, seq), raw)
        self._queued(targets)

    def wake(self) -> None:
        """Let the job look at the queues again."""
        self._wake.set()

    def _queued(self, destinations: Iterable[str]) -> None:
        for destination in destinations:
            state = self._states.setdefault(destination, _Destination())
            state.pending = True
            state.dormant = False
            self._fresh.add(destination)
        self.wake()

    # --- room events -----------------------------------------------------------------

    def event_destinations(self, event: Event) -> list[str]:
        """Who hears of a local event: servers with joined members (before the event),
        and for a membership event the target's server (a kicked user's, an invitee's)."""
        if event.room_id is None and event.type != "m.room.create":
            return []
        if server_of(event.sender) != self.server_name:
            return []  # a remote event passing through: its origin sends it
        room_id = event.room_id or "!" + event.event_id[1:]
        servers = set(self.membership.servers(room_id))
        if event.type == "m.room.member" and event.state_key and ":" in event.state_key:
            servers.add(server_of(event.state_key))
        return self.destinations_for(servers)

    def stage_event(self, batch: WriteBatch, event: Event, count: int) -> None:
        """Timeline index writer: queue a local event in its own write batch."""
        targets = self.event_destinations(event)
        if not targets:
            return
        for destination in targets:
            batch.put(QUEUE, _key(destination, count), PDU + event.event_id.encode())
        if len(self._staged) > 1000:  # batches that failed after staging leave entries
            self._staged.clear()
        self._staged[event.event_id] = targets

    def on_event(self, event: Event, count: int) -> None:
        """Timeline hook (after the commit): wake the job for what was staged."""
        targets = self._staged.pop(event.event_id, None)
        if targets:
            self._queued(targets)

    # --- EDUs from the other services ------------------------------------------------

    def _is_local(self, user_id: str) -> bool:
        return server_of(user_id) == self.server_name

    def _servers_sharing(self, user_id: str) -> set[str]:
        servers: set[str] = set()
        for room_id in self.membership.joined_rooms(user_id):
            servers.update(self.membership.servers(room_id))
        return servers

    def typing_changed(self, room_id: str, user_id: str, typing: bool) -> None:
        if not self.config.allow_outgoing_typing or not self._is_local(user_id):
            return
        self.enqueue_edu(self.membership.servers(room_id), {
            "edu_type": "m.typing",
            "content": {"room_id": room_id, "user_id": user_id, "typing": typing}})

    def receipt_changed(self, room_id: str, receipt: Receipt) -> None:
        """Public read receipts of local users; ``m.read.private`` never leaves."""
        if not self.config.allow_outgoing_read_receipts or receipt.receipt_type == READ_PRIVATE \
                or not self._is_local(receipt.user_id):
            return
        data: dict[str, Any] = {"ts": receipt.ts}
        if receipt.thread_id is not None:
            data["thread_id"] = receipt.thread_id
        self.enqueue_edu(self.membership.servers(room_id), {
            "edu_type": "m.receipt",
            "content": {room_id: {receipt.receipt_type: {
                receipt.user_id: {"event_ids": [receipt.event_id], "data": data}}}}})

    def presence_changed(self, user_id: str, record: PresenceRecord) -> None:
        if not self.config.allow_outgoing_presence or not self._is_local(user_id):
            return
        entry: dict[str, Any] = {"user_id": user_id, "presence": record.state,
                                 "currently_active": record.currently_active,
                                 _LAST_ACTIVE: record.last_active_ts}
        if record.status_msg:
            entry["status_msg"] = record.status_msg
        self.enqueue_edu(self._servers_sharing(user_id),
                         {"edu_type": "m.presence", "content": {"push": [entry]}})

    def to_device(self, sender: str, sender_device: str | None, event_type: str, txn_id: str,
                  messages: Mapping[str, Mapping[str, Any]]) -> None:
        """To-device messages for users of other servers: one EDU per destination.

        The message id is derived from the client's transaction, so a retried request
        (or a resend after a crash) is recognised by the receiving server.
        """
        by_server: dict[str, dict[str, dict[str, Any]]] = {}
        for user_id, by_device in messages.items():
            by_server.setdefault(server_of(user_id), {})[user_id] = dict(by_device)
        for destination, grouped in by_server.items():
            digest = hashlib.sha256("\x00".join(
                (sender, sender_device or "", txn_id, destination)).encode()).digest()
            message_id = base64.urlsafe_b64encode(digest[:18]).decode()  # 24 characters
            self.enqueue_edu([destination], {
                "edu_type": "m.direct_to_device",
                "content": {"sender": sender, "type": event_type, "message_id": message_id,
                            "messages": grouped}})

    def device_changed(self, user_id: str, device_id: str, deleted: bool) -> None:
        """``m.device_list_update`` to the servers sharing a room with the user.

        ``stream_id`` comes from the store's counter (as ``/user/devices`` does) and
        ``prev_id`` names the user's previous update, so a server that missed one
        notices the gap and re-fetches the list.
        """
        if not self._is_local(user_id):
            return
        targets = self.destinations_for(self._servers_sharing(user_id))
        if not targets:
            return
        stream_id = self.store.next_count()
        previous = self.store.tree(DEVICE_STREAM).get(user_id.encode())
        content: dict[str, Any] = {
            "user_id": user_id, "device_id": device_id, "stream_id": stream_id,
            "prev_id": [from_u64_be(previous)] if previous is not None else []}
        if deleted:
            content["deleted"] = True
        else:
            keys = self._device_keys(user_id, device_id)
            if keys is not None:
                content["keys"] = keys
            name = self._device_name(user_id, device_id)
            if name and self.config.allow_device_name_federation:
                content["device_display_name"] = name
        self.enqueue_edu(targets, {"edu_type": "m.device_list_update", "content": content})
        self.store.tree(DEVICE_STREAM).put(user_id.encode(), u64_be(stream_id))

    def cross_signing_changed(self, user_id: str) -> None:
        """``m.signing_key_update`` with the user's current master and self-signing keys."""
        if not self._is_local(user_id) or self._e2ee is None:
            return
        content: dict[str, Any] = {"user_id": user_id}
        for usage, field in (("master", "master_key"), ("self_signing", "self_signing_key")):
            key = self._e2ee.cross_signing.for_query(user_id, user_id, usage)
            if key is not None:
                content[field] = key
        self.enqueue_edu(self._servers_sharing(user_id),
                         {"edu_type": "m.signing_key_update", "content": content})

    def _device_keys(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        if self._e2ee is None:
            return None
        keys = self._e2ee.keys.query_devices(user_id, user_id, [device_id]).get(device_id)
        if keys is not None:
            keys.pop("unsigned", None)  # the display name travels on its own, if allowed
        return keys

    def _device_name(self, user_id: str, device_id: str) -> str | None:
        device = self._devices.get(user_id, device_id) if self._devices is not None else None
        name = device.get("display_name") if device is not None else None
        return name if isinstance(name, str) else None

    # --- the job's side --------------------------------------------------------------

    async def startup(self) -> None:
        """At job start: find queued destinations; the first time, apply the netburst."""
        for state in self._states.values():
            state.in_flight = False  # a restarted job has no tasks left
        first = not self._started
        self._started = True
        keep = self.config.startup_netburst_keep if self.config.startup_netburst else -1
        old = await trio.to_thread.run_sync(self._scan_queue, first and keep >= 0, keep,
                                            self._boot_count)
        for destination, count in old.items():
            if count == 0:
                continue
            state = self._states.setdefault(destination, _Destination())
            state.pending = True
            if first and not self.config.startup_netburst and destination not in self._fresh:
                state.dormant = True
        if first:
            waiting = sum(1 for c in old.values() if c)
            log.info("federation sender: %d destination(s) with queued items%s", waiting,
                     "" if self.config.startup_netburst or not waiting else
                     " wait for new traffic (startup_netburst is off)")
        self.wake()

    def _scan_queue(self, trim: bool, keep: int, boot: int) -> dict[str, int]:
        """(In a thread.) Items per destination; with ``trim``, those queued before
        ``boot`` are cut to the newest ``keep``."""
        counts: dict[str, int] = {}
        old: dict[str, list[bytes]] = {}
        for key in self.store.tree(QUEUE).keys(b""):
            destination, seq = _split(key)
            counts[destination] = counts.get(destination, 0) + 1
            if trim and seq <= boot:
                old.setdefault(destination, []).append(key)
        dropped = 0
        for destination, keys in old.items():
            drop = keys[:len(keys) - keep] if keep > 0 else keys
            for start in range(0, len(drop), 1000):
                with self.store.batch() as batch:
                    for key in drop[start:start + 1000]:
                        batch.delete(QUEUE, key)
            counts[destination] -= len(drop)
            dropped += len(drop)
            if drop:
                log.warning("federation sender: dropped %d queued item(s) for %s "
                            "(startup_netburst_keep = %d)", len(drop), destination, keep)
        return counts

    def take_due(self) -> list[str]:
        """Destinations to start draining now (marked in flight); resets the wake-up."""
        self._wake = trio.Event()
        now = self.clock()
        due = []
        for destination, state in self._states.items():
            if state.pending and not state.in_flight and not state.dormant \
                    and state.retry_at <= now:
                state.in_flight = True
                due.append(destination)
        return due

    async def wait_for_work(self) -> None:
        """Sleep until something is queued or released, or a backoff ends."""
        retries = [s.retry_at for s in self._states.values()
                   if s.pending and not s.in_flight and not s.dormant and s.retry_at > 0]
        deadline = min(retries, default=float("inf"))
        with trio.move_on_at(deadline):
            await self._wake.wait()

    def release(self, destination: str) -> None:
        self._states.setdefault(destination, _Destination()).in_flight = False
        self.wake()

    def next_transaction(self, destination: str) -> Transaction | None:
        """The oldest queued items of ``destination`` that fit in one transaction."""
        state = self._states.setdefault(destination, _Destination())
        prefix = destination.encode() + SEP
        keys: list[bytes] = []
        pdus: list[dict[str, Any]] = []
        edus: list[dict[str, Any]] = []
        stale: list[bytes] = []
        for scanned, (key, raw) in enumerate(self.store.tree(QUEUE).iter(prefix)):
            if scanned >= SCAN_LIMIT or (len(pdus) >= MAX_PDUS and len(edus) >= MAX_EDUS):
                break
            kind, body = raw[:1], raw[1:]
            if kind == PDU:
                if len(pdus) >= MAX_PDUS:
                    continue
                pdu = self.wire_pdu(body.decode())
                if pdu is None:
                    stale.append(key)
                    continue
                pdus.append(pdu)
            elif kind == EDU:
                if len(edus) >= MAX_EDUS:
                    continue
                edus.append(_wire_edu(orjson.loads(body)))
            else:
                stale.append(key)
                continue
            keys.append(key)
        if stale:
            log.warning("federation sender: %d unusable queued item(s) for %s dropped",
                        len(stale), destination)
            with self.store.batch() as batch:
                for key in stale:
                    batch.delete(QUEUE, key)
        if not keys:
            state.pending = False
            return None
        digest = hashlib.sha256(prefix + b"".join(keys)).digest()
        txn_id = base64.urlsafe_b64encode(digest[:18]).decode()
        return Transaction(destination, txn_id, keys, pdus, edus)

    def wire_pdu(self, event_id: str) -> dict[str, Any] | None:
        """The event as other servers get it: the stored PDU without our ``unsigned``."""
        event = self.events.get(event_id)
        if event is None:
            return None
        return {k: v for k, v in event.pdu.items() if k != "unsigned"}

    async def send_transaction(self, txn: Transaction) -> bool:
        """``PUT /send/{txnId}``; True (and the items dequeued) after a 200."""
        body = {"origin": self.server_name, "origin_server_ts": _now_ms(),
                "pdus": txn.pdus, "edus": txn.edus}
        try:
            answer = await self.client.request(
                "PUT", txn.destination, SEND_PATH + path_segment(txn.txn_id), body=body,
                timeout=float(self.config.sender_timeout))
        except (FederationError, RemoteError) as exc:
            self._failed(txn.destination, str(exc))
            return False
        with self.store.batch() as batch:
            for key in txn.keys:
                batch.delete(QUEUE, key)
        state = self._states.setdefault(txn.destination, _Destination())
        state.failures, state.retry_at, state.last_error = 0, 0.0, None
        state.last_success_ms = _now_ms()
        results = answer.get("pdus") if isinstance(answer, dict) else None
        if isinstance(results, dict):
            for event_id, result in results.items():
                if isinstance(result, dict) and result.get("error"):
                    log.info("federation sender: %s refused %s: %s", txn.destination,
                             event_id, result["error"])
        return True

    def _failed(self, destination: str, error: str) -> None:
        state = self._states.setdefault(destination, _Destination())
        state.failures += 1
        delay = min(self.backoff_base * 2 ** (state.failures - 1),
                    float(self.config.sender_retry_backoff_limit))
        delay = max(delay, self.client.backing_off(destination))
        state.retry_at = self.clock() + delay
        state.last_error = error
        log.info("federation sender: transaction to %s failed (%d in a row), next try in "
                 "%.1f s: %s", destination, state.failures, delay, error)

    # --- observability and operator actions ------------------------------------------

    async def destinations(self) -> list[DestinationStatus]:
        """Every known destination with its queue depth and backoff state."""
        counts = await trio.to_thread.run_sync(self.queue_depths)
        now = self.clock()
        names = sorted(set(counts) | set(self._states))
        out = []
        for name in names:
            state = self._states.get(name, _Destination())
            out.append(DestinationStatus(
                name, counts.get(name, 0), state.in_flight, state.dormant, state.failures,
                max(0.0, state.retry_at - now), state.last_error, state.last_success_ms))
        return out

    def queue_depths(self) -> dict[str, int]:
        """Queued items per destination (a scan of the queue: call it in a thread)."""
        counts: dict[str, int] = {}
        for key in self.store.tree(QUEUE).keys(b""):
            destination = _split(key)[0]
            counts[destination] = counts.get(destination, 0) + 1
        return counts

    def retry_now(self, destination: str | None = None) -> None:
        """Forget the backoff (and dormancy) of one destination or all, and wake the job."""
        for name, state in self._states.items():
            if destination is None or name == destination:
                state.failures, state.retry_at, state.dormant = 0, 0.0, False
        self.client.reset_backoff(destination)
        self.wake()


def _key(destination: str, seq: int) -> bytes:
    return destination.encode() + SEP + u64_be(seq)


def _split(key: bytes) -> tuple[str, int]:
    return key[:-9].decode(), from_u64_be(key[-8:])


def _wire_edu(edu: dict[str, Any]) -> dict[str, Any]:
    """Queued presence carries a timestamp; on the wire it is an age as of sending."""
    if edu.get("edu_type") == "m.presence":
        now = _now_ms()
        for entry in edu.get("content", {}).get("push", []):
            last_active = entry.pop(_LAST_ACTIVE, None)
            if isinstance(last_active, int):
                entry["last_active_ago"] = max(0, now - last_active)
    return edu
