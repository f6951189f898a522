"""Pushing events to application services: persisted per-AS queues, sent as transactions.

Everything an AS must hear of is first written to ``appservice_queue`` under
``as_id + SEP + u64 seq`` (a room event by its id, an ephemeral event as JSON), and
leaves the queue only once a transaction carrying it was answered 2xx. Room events
are staged by a timeline index writer in the event's own write batch, as the
federation sender does, so a crash between the commit and the send loses nothing.

A transaction, once built, is written to ``appservice_txn`` (its id and the queue
keys it carries) before the first attempt: retries, also after a restart, send the
same transaction id with the same events, as the spec requires ("Homeservers MUST
NOT alter ... events they were going to send within that transaction ID").

The ``appservice/transactions`` job (``nursery/appservice.py``) drives
:meth:`take_due`, :meth:`next_transaction`, :meth:`send_transaction` and
:meth:`release`: one transaction in flight per AS, exponential backoff per AS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from conduwuit.protocol.events import Event
from conduwuit.services.rooms.format import client_event
from conduwuit.store import SEP, Store, WriteBatch, from_u64_be, u64_be

from .client import AppserviceHttp, AppserviceUnreachable, segment

if TYPE_CHECKING:
    from conduwuit.services.rooms.events_db import EventStore

    from . import Appservices

log = logging.getLogger(__name__)

QUEUE = "appservice_queue"
TXN = "appservice_txn"
PDU, EPHEMERAL = b"p", b"e"
MAX_EVENTS = 100  # per transaction
MAX_EPHEMERAL = 100
SCAN_LIMIT = 1000
BACKOFF_BASE = 1.0  # seconds before the first retry; doubles per failure
BACKOFF_LIMIT = 300.0  # an AS that comes back is served within five minutes


@attrs.define
class _State:
    pending: bool = False
    in_flight: bool = False
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None


@attrs.frozen
class AsTransaction:
    appservice_id: str
    txn_id: str
    keys: list[bytes]
    events: list[dict[str, Any]]
    ephemeral: list[dict[str, Any]]


@attrs.frozen
class AppserviceStatus:
    """One line of an admin view: queue depth and backoff state of one AS."""

    appservice_id: str
    queued: int
    in_flight: bool
    failures: int
    retry_in: float
    last_error: str | None


@attrs.define
class AppserviceSender:
    store: Store
    http: AppserviceHttp
    events: EventStore
    registry: Appservices
    backoff_base: float = BACKOFF_BASE
    backoff_limit: float = BACKOFF_LIMIT
    clock: Callable[[], float] = trio.current_time
    _states: dict[str, _State] = attrs.field(factory=dict)
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _staged: dict[str, list[str]] = attrs.field(factory=dict)

    # --- queueing --------------------------------------------------------------------

    def stage_event(self, batch: WriteBatch, event: Event, count: int) -> None:
        """Timeline index writer: queue the event for every interested AS in its batch."""
        targets = self.registry.interested_in_event(event)
        if not targets:
            return
        for appservice_id in targets:
            batch.put(QUEUE, _key(appservice_id, count), PDU + event.event_id.encode())
        if len(self._staged) > 1000:  # batches that failed after staging leave entries
            self._staged.clear()
        self._staged[event.event_id] = targets

    def on_event(self, event: Event, count: int) -> None:
        """Timeline hook (after the commit): wake the job for what was staged."""
        self.registry.event_committed(event)
        targets = self._staged.pop(event.event_id, None)
        if targets:
            self._queued(targets)

    def enqueue_ephemeral(self, targets: Iterable[str], edu: dict[str, Any]) -> None:
        """Queue an ephemeral event (typing, receipt, presence); durable once this returns."""
        targets = list(targets)
        if not targets:
            return
        seq = self.store.next_count()
        raw = EPHEMERAL + orjson.dumps(edu)
        with self.store.batch(sync=True) as batch:
            for appservice_id in targets:
                batch.put(QUEUE, _key(appservice_id, seq), raw)
        self._queued(targets)

    def wake(self) -> None:
        self._wake.set()

    def _queued(self, targets: Iterable[str]) -> None:
        for appservice_id in targets:
            self._states.setdefault(appservice_id, _State()).pending = True
        self.wake()

    def forget(self, appservice_id: str) -> None:
        """An unregistered AS: drop its queue and its pending transaction."""
        prefix = appservice_id.encode() + SEP
        keys = list(self.store.tree(QUEUE).keys(prefix))
        for start in range(0, max(1, len(keys)), 1000):
            with self.store.batch() as batch:
                for key in keys[start:start + 1000]:
                    batch.delete(QUEUE, key)
                batch.delete(TXN, appservice_id.encode())
        self._states.pop(appservice_id, None)

    # --- the job's side --------------------------------------------------------------

    async def startup(self) -> None:
        """At job start: every AS with queued items or an unfinished transaction is due."""
        for state in self._states.values():
            state.in_flight = False
        counts = await trio.to_thread.run_sync(self.queue_depths)
        for appservice_id, count in counts.items():
            if count:
                self._states.setdefault(appservice_id, _State()).pending = True
        waiting = sum(1 for c in counts.values() if c)
        if waiting:
            log.info("appservice sender: %d application service(s) with queued events", waiting)
        self.wake()

    def take_due(self) -> list[str]:
        self._wake = trio.Event()
        now = self.clock()
        due = []
        for appservice_id, state in self._states.items():
            if state.pending and not state.in_flight and state.retry_at <= now:
                state.in_flight = True
                due.append(appservice_id)
        return due

    async def wait_for_work(self) -> None:
        retries = [s.retry_at for s in self._states.values()
                   if s.pending and not s.in_flight and s.retry_at > 0]
        with trio.move_on_at(min(retries, default=float("inf"))):
            await self._wake.wait()

    def release(self, appservice_id: str) -> None:
        if appservice_id in self._states:
            self._states[appservice_id].in_flight = False
        self.wake()

    def next_transaction(self, appservice_id: str) -> AsTransaction | None:
        """The AS's unfinished transaction, or a new one of its oldest queued items."""
        state = self._states.setdefault(appservice_id, _State())
        reg = self.registry.get(appservice_id)
        if reg is None or reg.url is None:
            log.info("appservice sender: dropping the queue of %s (unregistered or no URL)",
                     appservice_id)
            self.forget(appservice_id)
            return None
        stored = self.store.tree(TXN).get(appservice_id.encode())
        if stored is not None:
            record = orjson.loads(stored)
            keys = [bytes.fromhex(k) for k in record["keys"]]
            txn_id = str(record["txn_id"])
            items = [(k, v) for k in keys if (v := self.store.tree(QUEUE).get(k)) is not None]
        else:
            txn_id, items = "", self._oldest(appservice_id)
        events: list[dict[str, Any]] = []
        ephemeral: list[dict[str, Any]] = []
        for _, raw in items:
            kind, body = raw[:1], raw[1:]
            if kind == PDU:
                event = self.events.get(body.decode())
                if event is not None:
                    events.append(client_event(event))
            elif kind == EPHEMERAL:
                ephemeral.append(orjson.loads(body))
        keys = [k for k, _ in items]
        if not keys:
            if stored is not None:
                self.store.tree(TXN).delete(appservice_id.encode())
            state.pending = False
            return None
        if not txn_id:
            txn_id = str(self.store.next_count())
            record_raw = orjson.dumps({"txn_id": txn_id, "keys": [k.hex() for k in keys]})
            self.store.tree(TXN).put(appservice_id.encode(), record_raw)
        return AsTransaction(appservice_id, txn_id, keys, events, ephemeral)

    def _oldest(self, appservice_id: str) -> list[tuple[bytes, bytes]]:
        items: list[tuple[bytes, bytes]] = []
        counts = {PDU: 0, EPHEMERAL: 0}
        limits = {PDU: MAX_EVENTS, EPHEMERAL: MAX_EPHEMERAL}
        prefix = appservice_id.encode() + SEP
        for scanned, (key, raw) in enumerate(self.store.tree(QUEUE).iter(prefix)):
            if scanned >= SCAN_LIMIT or all(counts[k] >= limits[k] for k in counts):
                break
            kind = raw[:1]
            if kind not in counts:
                self.store.tree(QUEUE).delete(key)
                continue
            if counts[kind] >= limits[kind]:
                continue
            counts[kind] += 1
            items.append((key, raw))
        return items

    async def send_transaction(self, txn: AsTransaction) -> bool:
        """``PUT /_matrix/app/v1/transactions/{txnId}``; True (items dequeued) on 2xx."""
        reg = self.registry.get(txn.appservice_id)
        if reg is None:
            return False
        body: dict[str, Any] = {"events": txn.events}
        if txn.ephemeral:
            body["ephemeral"] = txn.ephemeral
            body["de.sorunome.msc2409.ephemeral"] = txn.ephemeral  # bridges of MSC2409's time
        try:
            answer = await self.http.request(reg, "PUT", "/transactions/" + segment(txn.txn_id),
                                             body)
        except AppserviceUnreachable as exc:
            self._failed(txn.appservice_id, f"unreachable: {exc}")
            return False
        if not answer.ok:
            self._failed(txn.appservice_id, f"answered {answer.status}")
            return False
        with self.store.batch() as batch:
            for key in txn.keys:
                batch.delete(QUEUE, key)
            batch.delete(TXN, txn.appservice_id.encode())
        state = self._states.setdefault(txn.appservice_id, _State())
        state.failures, state.retry_at, state.last_error = 0, 0.0, None
        return True

    def _failed(self, appservice_id: str, error: str) -> None:
        state = self._states.setdefault(appservice_id, _State())
        state.failures += 1
        delay = min(self.backoff_base * 2 ** (state.failures - 1), self.backoff_limit)
        state.retry_at = self.clock() + delay
        state.last_error = error
        log.info("appservice sender: transaction to %s failed (%d in a row), next try in "
                 "%.1f s: %s", appservice_id, state.failures, delay, error)

    # --- observability -----------------------------------------------------------------

    def queue_depths(self) -> dict[str, int]:
        """Queued items per AS (a scan: call it in a thread)."""
        counts: dict[str, int] = {}
        for key in self.store.tree(QUEUE).keys(b""):
            appservice_id = _split(key)[0]
            counts[appservice_id] = counts.get(appservice_id, 0) + 1
        return counts

    def status(self, appservice_id: str) -> AppserviceStatus:
        prefix = appservice_id.encode() + SEP
        queued = self.store.tree(QUEUE).count(prefix)
        state = self._states.get(appservice_id, _State())
        return AppserviceStatus(appservice_id, queued, state.in_flight, state.failures,
                                max(0.0, state.retry_at - self.clock()), state.last_error)

    def retry_now(self, appservice_id: str | None = None) -> None:
        for name, state in self._states.items():
            if appservice_id is None or name == appservice_id:
                state.failures, state.retry_at = 0, 0.0
        self.wake()


def _key(appservice_id: str, seq: int) -> bytes:
    return appservice_id.encode() + SEP + u64_be(seq)


def _split(key: bytes) -> tuple[str, int]:
    return key[:-9].decode(), from_u64_be(key[-8:])


def now_ms() -> int:
    return int(time.time() * 1000)
