"""The outbound federation sender: persisted queues, transactions, backoff, netburst, EDUs.

Remote servers are fakes on loopback (``tests/support/fakefed.py``) that record every
``PUT /send/{txnId}`` and answer 200, 500 (a server that is down) or hold the request
until the test lets it go. A remote user is put "in" a local room through the
membership index directly (see :func:`remote_member`), since joining remote rooms is
not written yet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from conduwuit.config import Config
from conduwuit.protocol.events import Event
from conduwuit.protocol.room_versions import ROOM_VERSIONS
from conduwuit.server import Server
from conduwuit.services import Services
from conduwuit.services.federation.sender import MAX_PDUS, Sender
from conduwuit.services.rooms.timeline import Draft
from tests.support.config import make_config
from tests.support.fakefed import FakeRequest, FakeServer, fake_servers, federation_options
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_e2ee_keys import CrossSigner, FakeDevice

SEND = "/_matrix/federation/v1/send/"
QUIET = {"allow_local_presence": False, "allow_outgoing_presence": False}


@attrs.define
class Inbox:
    """What one fake server got over ``/send``: accepted transactions and attempts."""

    status: int = 200
    gate: trio.Event | None = None  # requests wait here while it is set
    accepted: list[dict[str, Any]] = attrs.field(factory=list)
    attempts: list[float] = attrs.field(factory=list)  # trio clock of each request
    headers: list[dict[str, str]] = attrs.field(factory=list)

    async def handle(self, _server: FakeServer, request: FakeRequest) -> tuple[int, Any]:
        self.attempts.append(trio.current_time())
        self.headers.append(request.headers)
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 200:
            return self.status, {"errcode": "M_UNKNOWN", "error": "down for the test"}
        body = request.json()
        self.accepted.append(body)
        return 200, {"pdus": {}}

    @property
    def pdus(self) -> list[dict[str, Any]]:
        return [pdu for txn in self.accepted for pdu in txn["pdus"]]

    def bodies(self) -> list[str]:
        """Message bodies of the accepted PDUs, in the order they arrived."""
        return [p["content"]["body"] for p in self.pdus if p["type"] == "m.room.message"]

    def edus(self, edu_type: str | None = None) -> list[dict[str, Any]]:
        return [e for txn in self.accepted for e in txn["edus"]
                if edu_type is None or e["edu_type"] == edu_type]


def inbox(fake: FakeServer, **kwargs: Any) -> Inbox:
    box = Inbox(**kwargs)
    fake.prefix_routes[("PUT", SEND)] = box.handle
    return box


def svc(server: Server) -> Services:
    assert server.services is not None
    return server.services


def sender_of(server: Server) -> Sender:
    return svc(server).federation.sender


async def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.01)


async def drained(server: Server) -> None:
    """Wait until the sender has processed every answer (the fake records first)."""
    with trio.fail_after(5):
        while any(s.queued or s.in_flight for s in await sender_of(server).destinations()):
            await trio.sleep(0.01)


def remote_member(server: Server, room_id: str, user_id: str) -> None:
    """Test-only shortcut: mark a remote user joined in the membership index (no event),
    which is what makes their server one of the room's servers."""
    services = svc(server)
    with services.store.batch() as batch:
        services.rooms.membership.stage(batch, room_id, user_id, "join",
                                        services.store.next_count())


async def shared_room(server: Server, alice: LoggedIn, *fakes: FakeServer) -> str:
    room_id = await svc(server).rooms.creation.create(alice.user_id, {})
    for fake in fakes:
        remote_member(server, room_id, f"@bob:{fake.name}")
    return room_id


async def say(server: Server, room_id: str, sender: str, body: str) -> Event:
    return await svc(server).rooms.timeline.send(
        room_id, Draft(sender, "m.room.message", {"msgtype": "m.text", "body": body}))


def config_for(tmp_path: Path, **options: Any) -> Config:
    return make_config(tmp_path, **federation_options(
        **{"sender_retry_backoff_limit": 1, **QUIET, **options}))


@asynccontextmanager
async def world(tmp_path: Path, fakes: int = 1,
                **options: Any) -> AsyncIterator[tuple[Server, list[FakeServer], LoggedIn]]:
    async with fake_servers(tmp_path, fakes) as federation, \
            running_server(config_for(tmp_path, **options)) as server:
        alice = await make_user(server, "alice")
        yield server, federation.servers, alice


# --- PDUs ------------------------------------------------------------------------------


async def test_local_messages_reach_the_remote_once_in_order(tmp_path: Path) -> None:
    async with world(tmp_path) as (server, [fake], alice):
        box = inbox(fake)
        room_id = await shared_room(server, alice, fake)
        sent = [await say(server, room_id, alice.user_id, f"m{i}") for i in range(3)]
        await wait_until(lambda: len(box.bodies()) == 3)
        await drained(server)
        assert box.bodies() == ["m0", "m1", "m2"]
        for txn in box.accepted:
            assert txn["origin"] == "test.local" and isinstance(txn["origin_server_ts"], int)
        # The stored federation form, without our local ``unsigned`` data.
        assert [p for p in box.pdus if p["type"] == "m.room.message"] == \
            [{k: v for k, v in e.pdu.items() if k != "unsigned"} for e in sent]
        # Signed by us for that destination.
        assert all('origin="test.local"' in h["authorization"] and fake.name in
                   h["authorization"] for h in box.headers)
        [status] = await sender_of(server).destinations()
        assert (status.destination, status.queued, status.failures) == (fake.name, 0, 0)
        assert status.last_success_ms is not None

        # A remote user's event passing through the timeline is its server's to send.
        remote = Event("$remote", {"type": "m.room.message", "sender": f"@bob:{fake.name}",
                                   "room_id": room_id, "content": {}}, ROOM_VERSIONS["10"])
        assert sender_of(server).event_destinations(remote) == []
        # Never queued to ourselves, nor without a destination.
        sender_of(server).enqueue_pdu(["test.local"], sent[0].event_id)
        assert await sender_of(server).destinations() == [status]


async def test_membership_of_a_remote_user_goes_to_their_server(tmp_path: Path) -> None:
    async with world(tmp_path, fakes=2) as (server, [member_server, invitee_server], alice):
        in_room, invited = inbox(member_server), inbox(invitee_server)
        room_id = await shared_room(server, alice, member_server)
        kicked = f"@bob:{member_server.name}"
        await svc(server).rooms.actions.kick(room_id, alice.user_id, kicked, "bye")
        invite = f"@carol:{invitee_server.name}"
        await svc(server).rooms.timeline.send(room_id, Draft(
            alice.user_id, "m.room.member", {"membership": "invite"}, state_key=invite))
        await wait_until(lambda: len(invited.pdus) == 1 and len(in_room.pdus) == 1)
        assert [p["state_key"] for p in in_room.pdus] == [kicked]  # it heard of the kick
        assert [p["state_key"] for p in invited.pdus] == [invite]
        # Bob gone and carol only invited: no server of theirs hears of later events.
        await say(server, room_id, alice.user_id, "after")
        await trio.sleep(0.2)
        assert (len(in_room.pdus), len(invited.pdus)) == (1, 1)


async def test_batches_of_at_most_50_and_one_transaction_in_flight(tmp_path: Path) -> None:
    async with world(tmp_path, fakes=2) as (server, fakes, alice):
        boxes = [inbox(fake, gate=trio.Event()) for fake in fakes]
        room_id = await shared_room(server, alice, *fakes)
        await say(server, room_id, alice.user_id, "m0")
        # Both destinations have a transaction in flight at once; each only one.
        await wait_until(lambda: all(fake.in_flight == 1 for fake in fakes))
        for i in range(1, 121):
            await say(server, room_id, alice.user_id, f"m{i}")
        await trio.sleep(0.1)
        assert [fake.in_flight for fake in fakes] == [1, 1]
        for box in boxes:
            assert box.gate is not None
            box.gate.set()
        await wait_until(lambda: all(len(box.bodies()) == 121 for box in boxes))
        for fake, box in zip(fakes, boxes, strict=True):
            assert box.bodies() == [f"m{i}" for i in range(121)]
            sizes = [len(txn["pdus"]) for txn in box.accepted]
            assert max(sizes) == MAX_PDUS and sizes[0] == 1, sizes
            assert fake.max_in_flight == 1
            assert len({h["authorization"] for h in box.headers}) == len(box.headers)


async def test_backoff_while_down_then_delivery(tmp_path: Path) -> None:
    async with world(tmp_path) as (server, [fake], alice):
        box = inbox(fake, status=500)
        sender = sender_of(server)
        sender.backoff_base = 0.1
        room_id = await shared_room(server, alice, fake)
        await say(server, room_id, alice.user_id, "queued")
        await wait_until(lambda: len(box.attempts) >= 4)
        gaps = [b - a for a, b in zip(box.attempts, box.attempts[1:], strict=False)]
        assert gaps[0] >= 0.09 and gaps[2] >= 0.35, gaps  # 0.1, 0.2, 0.4 (cap: 1 s)
        [status] = await sender.destinations()
        assert status.queued == 1 and status.failures >= 3
        assert status.last_error is not None and "500" in status.last_error

        box.status = 200
        await wait_until(lambda: box.bodies() == ["queued"], timeout=3)
        await drained(server)
        [status] = await sender.destinations()
        assert (status.queued, status.failures, status.retry_in) == (0, 0, 0.0)
        # Nothing queued: no more requests.
        tries = len(box.attempts)
        await trio.sleep(0.3)
        assert len(box.attempts) == tries


# --- restarts: nothing lost, netburst ----------------------------------------------------


async def test_queue_survives_a_restart(tmp_path: Path) -> None:
    async with fake_servers(tmp_path, 1) as federation:
        fake = federation[0]
        box = inbox(fake, status=500)
        config = config_for(tmp_path, startup_netburst_keep=-1)
        async with running_server(config) as server:
            alice = await make_user(server, "alice")
            room_id = await shared_room(server, alice, fake)
            for i in range(5):
                await say(server, room_id, alice.user_id, f"m{i}")
            await wait_until(lambda: len(box.attempts) >= 1)
        assert box.accepted == []
        box.status = 200
        async with running_server(config) as server:
            await wait_until(lambda: len(box.bodies()) == 5)
            await drained(server)
            assert box.bodies() == [f"m{i}" for i in range(5)]
            [status] = await sender_of(server).destinations()
            assert status.queued == 0


async def test_startup_netburst_keep_and_off(tmp_path: Path) -> None:
    async with fake_servers(tmp_path, 1) as federation:
        fake = federation[0]
        box = inbox(fake, status=500)
        async with running_server(config_for(tmp_path)) as server:
            alice = await make_user(server, "alice")
            room_id = await shared_room(server, alice, fake)
            for i in range(5):
                await say(server, room_id, alice.user_id, f"m{i}")

        # keep = 2: only the newest two queued items are sent, the rest dropped.
        box.status = 200
        async with running_server(config_for(tmp_path, startup_netburst_keep=2)) as server:
            await wait_until(lambda: len(box.bodies()) == 2)
            assert box.bodies() == ["m3", "m4"]
            box.status = 500
            for i in range(5, 8):
                await say(server, room_id, alice.user_id, f"m{i}")

        # Netburst off: the old queue waits, whole, until something new is queued.
        box.status = 200
        async with running_server(config_for(tmp_path, startup_netburst=False)) as server:
            await trio.sleep(0.3)
            assert box.bodies() == ["m3", "m4"]
            [status] = await sender_of(server).destinations()
            assert status.dormant and status.queued == 3
            await say(server, room_id, alice.user_id, "m8")
            await wait_until(lambda: len(box.bodies()) == 6)
            assert box.bodies()[2:] == ["m5", "m6", "m7", "m8"]
            box.status = 500
            await say(server, room_id, alice.user_id, "m9")

        # keep = 0: the queue is dropped.
        box.status = 200
        async with running_server(config_for(tmp_path, startup_netburst_keep=0)) as server:
            await trio.sleep(0.3)
            assert "m9" not in box.bodies()
            assert [s.queued for s in await sender_of(server).destinations()] in ([], [0])


# --- EDUs --------------------------------------------------------------------------------


@pytest.mark.parametrize("allowed", [True, False])
async def test_typing_receipts_presence_follow_their_toggles(tmp_path: Path,
                                                             allowed: bool) -> None:
    toggles = {"allow_outgoing_typing": allowed, "allow_outgoing_read_receipts": allowed,
               "allow_local_presence": True, "allow_outgoing_presence": allowed}
    async with world(tmp_path, **toggles) as (server, [fake], alice):
        box = inbox(fake)
        services = svc(server)
        room_id = await shared_room(server, alice, fake)
        first = await say(server, room_id, alice.user_id, "first")
        second = await say(server, room_id, alice.user_id, "second")
        services.typing.set_typing(room_id, alice.user_id, True, 10_000)
        services.typing.set_typing(room_id, alice.user_id, False)
        services.receipts.post_receipt(alice.user_id, room_id, "m.read", first.event_id)
        services.receipts.post_receipt(alice.user_id, room_id, "m.read.private",
                                       second.event_id)
        services.presence.set_status(alice.user_id, alice.user_id, "unavailable", "lunch")
        await say(server, room_id, alice.user_id, "marker")
        await wait_until(lambda: "marker" in box.bodies())
        if not allowed:
            assert box.edus() == []
            return
        typing = [e["content"] for e in box.edus("m.typing")]
        assert typing == [{"room_id": room_id, "user_id": alice.user_id, "typing": True},
                          {"room_id": room_id, "user_id": alice.user_id, "typing": False}]
        [receipt] = [e["content"] for e in box.edus("m.receipt")]  # the private one stays
        entry = receipt[room_id]["m.read"][alice.user_id]
        assert entry["event_ids"] == [first.event_id] and isinstance(entry["data"]["ts"], int)
        pushes = [p for e in box.edus("m.presence") for p in e["content"]["push"]]
        lunch = [p for p in pushes if p.get("status_msg") == "lunch"]
        assert lunch and lunch[0]["presence"] == "unavailable"
        assert lunch[0]["user_id"] == alice.user_id
        assert 0 <= lunch[0]["last_active_ago"] < 60_000
        assert "_last_active_ts" not in lunch[0]


async def test_to_device_for_remote_users(tmp_path: Path) -> None:
    async with world(tmp_path, fakes=2) as (server, fakes, alice):
        boxes = [inbox(fake) for fake in fakes]
        bob, carol = (f"@bob:{fakes[0].name}", f"@carol:{fakes[1].name}")
        to_device = svc(server).e2ee.to_device
        messages = {bob: {"BOBDEV": {"n": 1}, "*": {"n": 2}}, carol: {"C1": {"n": 3}},
                    alice.user_id: {alice.device_id: {"n": 4}}}
        to_device.send(alice.user_id, alice.device_id, "m.room_key_request", "t1", messages)
        to_device.send(alice.user_id, alice.device_id, "m.room_key_request", "t1", messages)
        await wait_until(lambda: all(box.edus() for box in boxes))
        await trio.sleep(0.1)
        [to_bob] = [e["content"] for e in boxes[0].edus("m.direct_to_device")]
        [to_carol] = [e["content"] for e in boxes[1].edus("m.direct_to_device")]
        assert to_bob["messages"] == {bob: {"BOBDEV": {"n": 1}, "*": {"n": 2}}}
        assert to_carol["messages"] == {carol: {"C1": {"n": 3}}}
        for content in (to_bob, to_carol):
            assert content["sender"] == alice.user_id
            assert content["type"] == "m.room_key_request"
            assert 0 < len(content["message_id"]) <= 32
        assert to_bob["message_id"] != to_carol["message_id"]
        assert to_device.pending(alice.user_id, alice.device_id) == 1  # the local one


async def test_device_list_and_signing_key_updates(tmp_path: Path) -> None:
    async with world(tmp_path, allow_device_name_federation=True) as (server, [fake], alice):
        box = inbox(fake)
        services = svc(server)
        await shared_room(server, alice, fake)
        device = FakeDevice(alice)
        services.e2ee.keys.upload(alice.user_id, alice.device_id,
                                  {"device_keys": device.device_keys()})
        await wait_until(lambda: len(box.edus("m.device_list_update")) == 1)
        [added] = [e["content"] for e in box.edus("m.device_list_update")]
        assert (added["user_id"], added["device_id"]) == (alice.user_id, alice.device_id)
        assert added["prev_id"] == [] and isinstance(added["stream_id"], int)
        assert added["keys"]["keys"] == device.device_keys()["keys"]
        assert added["device_display_name"] == "test device"
        assert "deleted" not in added

        signer = CrossSigner(alice.user_id)
        cross = services.e2ee.cross_signing
        cross.store_keys(alice.user_id, cross.check_upload(alice.user_id, signer.upload_body()))
        await wait_until(lambda: len(box.edus("m.signing_key_update")) == 1)
        [keys] = [e["content"] for e in box.edus("m.signing_key_update")]
        assert keys["user_id"] == alice.user_id
        assert keys["master_key"]["keys"] == signer.upload_body()["master_key"]["keys"]
        assert keys["self_signing_key"]["usage"] == ["self_signing"]
        assert "user_signing_key" not in keys  # private to the user

        services.devices.delete(alice.user_id, alice.device_id)
        await wait_until(lambda: len(box.edus("m.device_list_update")) == 2)
        removed = box.edus("m.device_list_update")[1]["content"]
        assert removed["deleted"] is True and "keys" not in removed
        assert removed["prev_id"] == [added["stream_id"]]
        assert removed["stream_id"] > added["stream_id"]


async def test_nothing_is_queued_without_federation(tmp_path: Path) -> None:
    async with world(tmp_path, allow_federation=False) as (server, [fake], alice):
        box = inbox(fake)
        room_id = await shared_room(server, alice, fake)
        await say(server, room_id, alice.user_id, "local only")
        svc(server).e2ee.to_device.send(alice.user_id, alice.device_id, "x", "t",
                                        {f"@bob:{fake.name}": {"D": {}}})
        await trio.sleep(0.2)
        assert box.attempts == [] and await sender_of(server).destinations() == []
