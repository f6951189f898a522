"""Sending notifications to push gateways (``POST /_matrix/push/v1/notify``).

The unread counter hands over the readers an event notifies inside the event's
batch (:meth:`PushGateway.stage`); those with an http pusher are held until the
batch has committed (:meth:`PushGateway.committed`, a ``Timeline.on_event`` hook)
and then queued on a bounded channel. Pushing is best effort: when the channel is
full (gateways far slower than the rooms), a notification is dropped and logged,
never waited for on the write path. The ``push/gateway`` job
(``nursery/pusher.py``) takes them off and delivers each to every pusher of its
user with :meth:`PushGateway.deliver`.

One request per pusher (each has its own gateway URL), with the spec's payload:
event fields unless the pusher asked for ``event_id_only``, the badge count
(``counts.unread``: unread notifications over all the user's rooms), the device
(``data`` minus ``url``) and the tweaks of the actions. A failing pusher backs
off on its own (doubling delay, shared by every notification for it); a gateway
answering ``rejected: [pushkey]`` makes us remove that pusher, as the spec says.
Connections go through ``ip_range_denylist`` like every outbound request and idle
pooled ones close after ``pusher_idle_timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import httpcore
import httpx
import orjson
import trio

from conduwuit import __version__
from conduwuit.config import Config
from conduwuit.protocol import push_rules
from conduwuit.protocol.events import Event
from conduwuit.store import WriteBatch

from ..media.preview import AddressDenied, AddressGuard, GuardedBackend
from ..rooms.state import CANONICAL_ALIAS, NAME, RoomState, member_key
from ..unread import Notified
from .pushers import Pusher, Pushers

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000  # notifications waiting for the job
MAX_CONNECTIONS = 32
REQUEST_TIMEOUT = httpx.Timeout(10.0)
MAX_ATTEMPTS = 5  # tries of one notification to one pusher
USER_AGENT = f"conduwuit/{__version__} (push)"

# (total unread notifications of a user)
BadgeCount = Callable[[str], int]
ClientFactory = Callable[[], httpx.AsyncClient]


@attrs.frozen
class PushItem:
    """One notification of one user, to push to each of their pushers."""

    user_id: str
    event: Event
    actions: tuple[push_rules.Action, ...]


@attrs.define
class _Backoff:
    failures: int = 0
    retry_at: float = 0.0  # trio clock


@attrs.define
class PushGateway:
    config: Config
    pushers: Pushers
    state: RoomState
    badge: BadgeCount
    backoff_base: float = 1.0  # seconds before the first retry of a failing pusher
    backoff_max: float = 600.0
    client_factory: ClientFactory | None = None  # tests may inject a client
    _send: trio.MemorySendChannel[PushItem] = attrs.field(init=False)
    receive: trio.MemoryReceiveChannel[PushItem] = attrs.field(init=False)
    _pending: tuple[int, list[PushItem]] | None = None
    _backoffs: dict[tuple[str, str, str], _Backoff] = attrs.field(factory=dict)
    dropped: int = 0

    def __attrs_post_init__(self) -> None:
        self._send, self.receive = trio.open_memory_channel[PushItem](QUEUE_SIZE)

    # --- from the write path -------------------------------------------------------

    def stage(self, batch: WriteBatch, event: Event, count: int,
              notified: list[Notified]) -> None:
        """``Unread.on_notified``: keep the readers with pushers until the batch commits."""
        items = [PushItem(n.user_id, event, tuple(n.actions)) for n in notified
                 if self.pushers.has_pushers(n.user_id)]
        self._pending = (count, items) if items else None

    def committed(self, event: Event, count: int) -> None:
        """``Timeline.on_event``: the event is stored; queue its pushes."""
        pending, self._pending = self._pending, None
        if pending is None or pending[0] != count:
            return
        for item in pending[1]:
            try:
                self._send.send_nowait(item)
            except trio.WouldBlock:
                self.dropped += 1
                log.warning("push queue full: dropped the push of %s to %s",
                            event.event_id, item.user_id)

    # --- from the job --------------------------------------------------------------

    def client(self) -> httpx.AsyncClient:
        if self.client_factory is not None:
            return self.client_factory()
        transport = httpx.AsyncHTTPTransport(trust_env=False)
        # httpx has no parameter for the network backend (see media/preview.py): swap
        # its pool for one that checks ip_range_denylist and keeps idle connections
        # only for pusher_idle_timeout.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=MAX_CONNECTIONS,
            keepalive_expiry=float(self.config.pusher_idle_timeout),
            network_backend=GuardedBackend(AddressGuard(self.config.ip_range_denylist)),
        )
        return httpx.AsyncClient(transport=transport, timeout=REQUEST_TIMEOUT,
                                 follow_redirects=False, trust_env=False,
                                 headers={"User-Agent": USER_AGENT})

    async def deliver(self, client: httpx.AsyncClient, item: PushItem) -> None:
        """Push ``item`` to every pusher of its user, each with its own retries."""
        pushers = self.pushers.for_user(item.user_id)
        if not pushers:
            return
        badge = self.badge(item.user_id)
        async with trio.open_nursery() as nursery:
            for pusher in pushers:
                nursery.start_soon(self._deliver_one, client, item, pusher, badge)

    async def _deliver_one(self, client: httpx.AsyncClient, item: PushItem, pusher: Pusher,
                           badge: int) -> None:
        payload = self.payload(item, pusher, badge)
        backoff = self._backoffs.setdefault(pusher.key, _Backoff())
        for _attempt in range(MAX_ATTEMPTS):
            wait = backoff.retry_at - trio.current_time()
            if wait > self.backoff_max:
                break
            if wait > 0:
                await trio.sleep(wait)
            outcome = await self._post(client, pusher, payload)
            if outcome is not None:
                backoff.failures, backoff.retry_at = 0, 0.0
                if pusher.pushkey in outcome:
                    log.info("push gateway rejected %s's pushkey for %s: pusher removed",
                             pusher.user_id, pusher.app_id)
                    self.pushers.remove(pusher.user_id, pusher.app_id, pusher.pushkey)
                    self._backoffs.pop(pusher.key, None)
                return
            backoff.failures += 1
            delay = min(self.backoff_max, self.backoff_base * 2 ** (backoff.failures - 1))
            backoff.retry_at = trio.current_time() + delay
        log.warning("gave up pushing %s to %s (%s)", item.event.event_id, pusher.user_id,
                    pusher.app_id)

    async def _post(self, client: httpx.AsyncClient, pusher: Pusher,
                    payload: dict[str, Any]) -> list[str] | None:
        """The rejected pushkeys of a delivered request; ``None`` if it failed."""
        try:
            response = await client.post(pusher.url, content=orjson.dumps(payload),
                                         headers={"Content-Type": "application/json"})
        except (httpx.HTTPError, AddressDenied, OSError) as exc:
            log.info("push to %s failed: %s", pusher.url, exc)
            return None
        if response.status_code >= 300:
            log.info("push gateway %s answered %d", pusher.url, response.status_code)
            return None
        try:
            body = orjson.loads(response.content or b"{}")
        except orjson.JSONDecodeError:
            return []
        rejected = body.get("rejected") if isinstance(body, dict) else None
        return [k for k in rejected if isinstance(k, str)] if isinstance(rejected, list) else []

    # --- the notify payload ----------------------------------------------------------

    def payload(self, item: PushItem, pusher: Pusher, badge: int) -> dict[str, Any]:
        event = item.event
        tweaks = push_rules.tweaks(item.actions)
        data = {k: v for k, v in pusher.data.items() if k != "url"}
        device = {"app_id": pusher.app_id, "pushkey": pusher.pushkey,
                  "pushkey_ts": pusher.pushkey_ts, "data": data, "tweaks": tweaks}
        high = tweaks.get("highlight") is True or "sound" in tweaks
        notification: dict[str, Any] = {
            "event_id": event.event_id, "room_id": event.room_id,
            "counts": {"unread": badge} if badge else {},
            "devices": [device], "prio": "high" if high else "low"}
        if data.get("format") == "event_id_only":
            return {"notification": notification}
        notification.update(type=event.type, sender=event.sender)
        room_id = event.room_id or ""
        sender_name = _content_str(self.state, room_id, member_key(event.sender), "displayname")
        if sender_name is not None:
            notification["sender_display_name"] = sender_name
        room_name = _content_str(self.state, room_id, NAME, "name")
        if room_name is not None:
            notification["room_name"] = room_name
        alias = _content_str(self.state, room_id, CANONICAL_ALIAS, "alias")
        if alias is not None:
            notification["room_alias"] = alias
        if event.type == "m.room.member":
            notification["user_is_target"] = event.state_key == item.user_id
        if event.content:
            notification["content"] = dict(event.content)
        return {"notification": notification}


def _content_str(state: RoomState, room_id: str, pair: tuple[str, str],
                 field: str) -> str | None:
    value = state.content(room_id, pair).get(field)
    return value if isinstance(value, str) and value else None
