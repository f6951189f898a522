"""Acceptance: a real appservice framework (mautrix-python) against the server.

The appservice runs with its own asyncio loop in a thread (mautrix is asyncio and
aiohttp); the test drives it with ``call``. It is registered through the admin room
(``!admin appservices register`` with the YAML in a code block), receives
transactions for its namespace, registers and puppets a user, sends
a message a normal client reads in /sync, answers a ping, and after a restart of our
server with the appservice down, gets the transaction queued meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio
from mautrix.appservice import AppService
from mautrix.appservice.state_store import FileASStateStore
from mautrix.types import Event, RoomID, UserID

from conduwuit.config import Config
from conduwuit.server import Server
from tests.support.config import free_port, make_config
from tests.support.inprocess import base_url, running_server
from tests.support.users import LoggedIn
from tests.test_admin_room import TOKEN, command, register_user

V3 = "/_matrix/client/v3"
AS_TOKEN = "mautrix-as-token"
HS_TOKEN = "mautrix-hs-token"
PUPPET = UserID("@_mx_carol:test.local")
T = TypeVar("T")

# mautrix 0.21 still hands aiohttp the deprecated loop argument.
pytestmark = pytest.mark.filterwarnings("ignore:loop argument is deprecated:DeprecationWarning")


def registration_yaml(port: int) -> str:
    return f"""
id: mxbridge
url: http://127.0.0.1:{port}
as_token: {AS_TOKEN}
hs_token: {HS_TOKEN}
sender_localpart: mxbot
rate_limited: false
de.sorunome.msc2409.push_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: "@_mx_.*:test\\\\.local"
  aliases: []
  rooms: []
"""


class Bridge:
    """One mautrix AppService on 127.0.0.1:``port`` in an asyncio loop of its own thread."""

    def __init__(self, homeserver: str, port: int, state: Path) -> None:
        self.homeserver, self.port, self.state = homeserver, port, state
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mautrix")
        self.appservice: AppService | None = None

    async def call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        future = asyncio.run_coroutine_threadsafe(make(), self.loop)
        return await trio.to_thread.run_sync(lambda: future.result(30))

    async def start(self) -> None:
        self.thread.start()

        async def start() -> None:
            appservice = AppService(
                server=self.homeserver, domain="test.local", as_token=AS_TOKEN,
                hs_token=HS_TOKEN, bot_localpart="mxbot", id="mxbridge", loop=self.loop,
                state_store=FileASStateStore(self.state, binary=False),
                ephemeral_events=True)

            async def record(event: Event) -> None:
                with self._lock:
                    self.events.append(event)

            appservice.matrix_event_handler(record)
            await appservice.start("127.0.0.1", self.port)
            self.appservice = appservice

        await self.call(start)

    async def stop(self) -> None:
        if self.appservice is not None:
            await self.call(self.appservice.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        await trio.to_thread.run_sync(self.thread.join, 10)
        self.loop.close()

    def seen(self, check: Callable[[Event], bool]) -> bool:
        with self._lock:
            return any(check(e) for e in self.events)

    async def wait_for(self, check: Callable[[Event], bool], timeout: float = 15) -> None:
        with trio.fail_after(timeout):
            while not self.seen(check):
                await trio.sleep(0.05)

    def intent(self, user_id: UserID | None = None) -> Any:
        assert self.appservice is not None
        return self.appservice.intent if user_id is None \
            else self.appservice.intent.user(user_id)


def _body_is(text: str) -> Callable[[Event], bool]:
    return lambda e: str(e.type) == "m.room.message" and \
        getattr(e.content, "body", None) == text


async def _synced_message(client: httpx.AsyncClient, who: LoggedIn, room: str,
                          sender: str, body: str) -> None:
    since = None
    with trio.fail_after(15):
        while True:
            params = {"timeout": "1000", **({"since": since} if since else {})}
            r = await client.get(f"{V3}/sync", headers=who.headers, params=params)
            assert r.status_code == 200, r.text
            since = r.json()["next_batch"]
            timeline = r.json().get("rooms", {}).get("join", {}).get(room, {}).get(
                "timeline", {}).get("events", [])
            if any(e["sender"] == sender and e["content"].get("body") == body
                   for e in timeline):
                return


def _services(server: Server) -> Any:
    assert server.services is not None
    return server.services


async def _wait(check: Callable[[], bool], timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.05)


async def test_mautrix_appservice_end_to_end(tmp_path: Path) -> None:
    config: Config = make_config(tmp_path, appservice_timeout=5, allow_registration=True,
                                 registration_token=TOKEN)
    port = free_port()
    state = tmp_path / "mx-state.json"
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=base_url(server), timeout=20) as client:
        # The first account is the server admin; it registers the bridge in the admin room.
        alice = await register_user(client, "alice")
        answer = await command(server, client, alice, "!admin appservices register\n```yaml\n"
                               f"{registration_yaml(port)}```", "reg1")
        assert "mxbridge" in answer["body"], answer["body"]
        assert _services(server).appservices.list() == ["mxbridge"]
        bridge = Bridge(base_url(server), port, state)
        await bridge.start()
        try:
            # Ping: the homeserver reaches the bridge and reports the round trip.
            duration: int = await bridge.call(lambda: bridge.appservice.ping_self("mx-1"))
            assert duration >= 0
            # Events for its namespace arrive as transactions: the invite of its bot.
            r = await client.post(f"{V3}/createRoom", headers=alice.headers,
                                  json={"preset": "public_chat", "invite": ["@mxbot:test.local"]})
            room = RoomID(r.json()["room_id"])
            await bridge.wait_for(lambda e: str(e.type) == "m.room.member"
                                  and e.state_key == "@mxbot:test.local")
            await bridge.call(lambda: bridge.intent().join_room(room))
            # It registers a puppet and speaks through it; a normal client sees that.
            puppet = bridge.intent(PUPPET)
            await bridge.call(puppet.ensure_registered)
            await bridge.call(lambda: puppet.join_room(room))
            await bridge.call(lambda: puppet.send_text(room, "hello from the bridge"))
            await _synced_message(client, alice, room, PUPPET, "hello from the bridge")
            # What the Matrix side says reaches the bridge.
            await client.put(f"{V3}/rooms/{room}/send/m.room.message/m1", headers=alice.headers,
                             json={"msgtype": "m.text", "body": "from matrix"})
            await bridge.wait_for(_body_is("from matrix"))
        finally:
            await bridge.stop()
        # The bridge is down: a message waits in the queue.
        await client.put(f"{V3}/rooms/{room}/send/m.room.message/m2", headers=alice.headers,
                         json={"msgtype": "m.text", "body": "while you were away"})
        sender = _services(server).appservices.sender
        await _wait(lambda: sender.status("mxbridge").failures > 0)
    # Restart our server on the same database, bridge still down; then bring it back.
    async with running_server(config) as server:
        assert _services(server).appservices.sender.status("mxbridge").queued >= 1
        bridge = Bridge(base_url(server), port, state)
        await bridge.start()
        try:
            # No nudge: the sender's backoff (1 s, doubling) brings it there by itself.
            await bridge.wait_for(_body_is("while you were away"))
        finally:
            await bridge.stop()
