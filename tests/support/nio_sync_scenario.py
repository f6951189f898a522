"""Live /sync between real clients: matrix-nio ``sync_forever`` loops and event callbacks.

Run as ``python -m tests.support.nio_sync_scenario HOMESERVER_URL REGISTRATION_TOKEN``.
alice (two devices: ``alice`` and ``alice2``) and bob share a room. Each client runs nio's
``sync_forever`` with a long-poll timeout (``LONG_POLL_MS``) far longer than the time a
change is given to arrive (``ARRIVAL_S``), so a change only counts when the server's
long-poll wakes up for it. Every change is made through nio's public API (raw requests
only where nio 0.26 has no method: tags and global account data) and observed through
nio's callbacks, i.e. parsed into nio's event classes:

* messages (``RoomMessageText``), topic and name (``RoomTopicEvent``, ``RoomNameEvent``),
  a redaction (``RedactionEvent``), an invite and a join (``InviteMemberEvent``,
  ``RoomMemberEvent``);
* typing (``TypingNoticeEvent``: on, off, and expiring by itself after its timeout, which
  needs the server's ``typing_client_timeout_min_s`` at 1), receipts (``ReceiptEvent``:
  ``m.read`` threaded and unthreaded, ``m.read.private`` seen only by its owner's other
  device), the fully-read marker (``FullyReadEvent``);
* presence (``PresenceEvent`` with status message);
* room account data (``TagEvent``) and global account data (``UnknownAccountDataEvent``)
  reaching alice's other device, and never bob.

It prints one JSON object on stdout: for every check the action's nio response, whether
the expected event arrived, how fast, what it looked like, and when it did not arrive a
raw ``/sync`` since the token before the action (to tell "never sent" from "sent but nio
could not parse it"). A failed check never stops the run. ``tests/test_nio_sync.py``
starts the server and asserts on the JSON.

nio is asyncio-only: this module runs in its own process, never under Trio.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    FullyReadEvent,
    InviteMemberEvent,
    JoinResponse,
    LoginResponse,
    MatrixRoom,
    PresenceEvent,
    ReceiptEvent,
    RedactionEvent,
    RoomCreateResponse,
    RoomMemberEvent,
    RoomMessageText,
    RoomNameEvent,
    RoomSendResponse,
    RoomTopicEvent,
    SyncError,
    SyncResponse,
    TagEvent,
    TypingNoticeEvent,
    UnknownAccountDataEvent,
)
from nio.api import ReceiptType

from tests.support.nio_common import config as base_config
from tests.support.nio_common import describe, raw, run_scenario
from tests.support.nio_common import register as nio_register

PASSWORD = "sync correct horse battery"
LONG_POLL_MS = 30_000
ARRIVAL_S = 10.0
CUSTOM_TYPE = "org.example.sync_test"
CUSTOM_CONTENT = {"colour": "teal", "n": 3, "nested": {"ok": True}}
TAG = "u.work"
TAG_CONTENT = {"order": 0.25}
STATUS = "writing acceptance tests"

def config() -> AsyncClientConfig:
    return base_config(LONG_POLL_MS / 1000 + 20)


async def register(homeserver: str, token: str, name: str) -> AsyncClient:
    return await nio_register(homeserver, token, name, PASSWORD, config())









def summarize(event: Any) -> dict[str, Any]:
    """The fields of a parsed nio event that the checks look at."""
    out: dict[str, Any] = {"class": type(event).__name__}
    if isinstance(event, RoomMessageText):
        out.update(event_id=event.event_id, sender=event.sender, body=event.body)
    elif isinstance(event, RoomTopicEvent):
        out.update(event_id=event.event_id, sender=event.sender, topic=event.topic)
    elif isinstance(event, RoomNameEvent):
        out.update(event_id=event.event_id, sender=event.sender, name=event.name)
    elif isinstance(event, (RoomMemberEvent, InviteMemberEvent)):
        out.update(sender=event.sender, state_key=event.state_key,
                   membership=event.membership)
    elif isinstance(event, RedactionEvent):
        out.update(event_id=event.event_id, sender=event.sender, redacts=event.redacts,
                   reason=event.reason)
    elif isinstance(event, TypingNoticeEvent):
        out.update(users=sorted(event.users))
    elif isinstance(event, ReceiptEvent):
        out.update(receipts=[{"event_id": r.event_id, "receipt_type": r.receipt_type,
                              "user_id": r.user_id, "thread_id": r.thread_id,
                              "ts_is_int": isinstance(r.timestamp, int)}
                             for r in event.receipts])
    elif isinstance(event, PresenceEvent):
        out.update(user_id=event.user_id, presence=event.presence,
                   status_msg=event.status_msg, currently_active=event.currently_active,
                   last_active_ago_is_int=isinstance(event.last_active_ago, int))
    elif isinstance(event, TagEvent):
        out.update(tags=event.tags)
    elif isinstance(event, FullyReadEvent):
        out.update(event_id=event.event_id)
    elif isinstance(event, UnknownAccountDataEvent):
        out.update(type=event.type, content=event.content)
    return out


class Observer:
    """Everything one client's callbacks saw, and a way to wait for a given item."""

    def __init__(self, name: str, client: AsyncClient) -> None:
        self.name = name
        self.client = client
        self.items: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.changed = asyncio.Condition()
        client.add_event_callback(self._room_event, (
            RoomMessageText, RoomTopicEvent, RoomNameEvent, RoomMemberEvent,
            InviteMemberEvent, RedactionEvent))
        client.add_ephemeral_callback(self._ephemeral, (TypingNoticeEvent, ReceiptEvent))
        client.add_presence_callback(self._presence, PresenceEvent)
        client.add_room_account_data_callback(self._room_account_data, (
            TagEvent, FullyReadEvent, UnknownAccountDataEvent))
        client.add_global_account_data_callback(self._global_account_data,
                                                UnknownAccountDataEvent)
        client.add_response_callback(self._sync_error, SyncError)

    async def _add(self, kind: str, event: Any, room: MatrixRoom | None) -> None:
        try:
            item = summarize(event)
            item.update(kind=kind, at=time.monotonic())
            if room is not None:
                item["room_id"] = room.room_id
            async with self.changed:
                self.items.append(item)
                self.changed.notify_all()
        except Exception:  # never let a callback kill the sync loop
            self.errors.append(traceback.format_exc())

    async def _room_event(self, room: MatrixRoom, event: Any) -> None:
        await self._add("timeline", event, room)

    async def _ephemeral(self, room: MatrixRoom, event: Any) -> None:
        await self._add("ephemeral", event, room)

    async def _presence(self, event: Any) -> None:
        await self._add("presence", event, None)

    async def _room_account_data(self, room: MatrixRoom, event: Any) -> None:
        await self._add("room_account_data", event, room)

    async def _global_account_data(self, event: Any) -> None:
        await self._add("global_account_data", event, None)

    async def _sync_error(self, resp: Any) -> None:
        self.errors.append(json.dumps(describe(resp)))

    async def wait(self, match: Callable[[dict[str, Any]], bool], since: float,
                   timeout: float = ARRIVAL_S) -> dict[str, Any] | None:
        def found() -> dict[str, Any] | None:
            return next((i for i in self.items if i["at"] >= since and match(i)), None)

        try:
            async with self.changed:
                await asyncio.wait_for(self.changed.wait_for(lambda: found() is not None),
                                       timeout)
        except TimeoutError:
            return None
        return found()




def raw_sections(data: Any, room_id: str) -> dict[str, Any]:
    """The parts of a raw /sync body the live checks are about."""
    if not isinstance(data, dict):
        return {"body": data}
    room = data.get("rooms", {}).get("join", {}).get(room_id, {})
    return {"presence": data.get("presence"), "account_data": data.get("account_data"),
            "room_ephemeral": room.get("ephemeral"),
            "room_account_data": room.get("account_data"),
            "room_timeline_types": [e.get("type") for e in
                                    room.get("timeline", {}).get("events", [])],
            "invite": sorted(data.get("rooms", {}).get("invite", {}))}


class Live:
    """Runs one check: an action, then waiting for its effect on the observers."""

    def __init__(self, summary: dict[str, Any], room_id: str) -> None:
        self.summary = summary
        self.room_id = room_id

    async def check(self, name: str, action: Callable[[], Awaitable[Any]],
                    expectations: list[tuple[Observer, Callable[[dict[str, Any]], bool]]],
                    labels: list[str] | None = None) -> dict[str, Any]:
        """``labels`` name the expectations in the summary (default: the observer's name)."""
        out: dict[str, Any] = {}
        self.summary.setdefault("checks", {})[name] = out
        names = labels or [obs.name for obs, _ in expectations]
        tokens = {obs.name: obs.client.next_batch for obs, _ in expectations}
        try:
            start = time.monotonic()
            resp = await action()
            out["action"] = (describe(resp) if not isinstance(resp, tuple)
                             else {"status": resp[0], "body": resp[1]})
            for label, (obs, match) in zip(names, expectations, strict=True):
                item = await obs.wait(match, start)
                seen: dict[str, Any] = {"arrived": item is not None}
                if item is not None:
                    seen["latency_s"] = round(item["at"] - start, 3)
                    seen["item"] = {k: v for k, v in item.items() if k != "at"}
                else:
                    status, body = await raw(obs.client, "GET", "sync",
                                             since=tokens[obs.name], timeout="0")
                    seen["raw_sync_since_before"] = [status, raw_sections(body, self.room_id)]
                    seen["nio_saw_since"] = [{k: v for k, v in i.items() if k != "at"}
                                             for i in obs.items if i["at"] >= start]
                out[label] = seen
        except Exception:
            out["exception"] = traceback.format_exc()
        return out


async def scenario(homeserver: str, token: str, summary: dict[str, Any]) -> None:
    alice = await register(homeserver, token, "syncalice")
    bob = await register(homeserver, token, "syncbob")
    alice2 = AsyncClient(homeserver, alice.user_id, config=config())
    tasks: list[asyncio.Task[Any]] = []
    try:
        login = await alice2.login(PASSWORD, device_name="alice's other nio")
        summary["alice2_login"] = describe(login)
        if not isinstance(login, LoginResponse):
            return
        summary["users"] = {"alice": alice.user_id, "bob": bob.user_id}

        # The shared room; everyone fully synced before the live part starts.
        created = await alice.room_create(name="Live room", topic="first topic",
                                          invite=[bob.user_id])
        summary["create"] = describe(created)
        if not isinstance(created, RoomCreateResponse):
            return
        room_id = created.room_id
        summary["room_id"] = room_id
        for client in (alice, alice2, bob):
            await client.sync(timeout=0, full_state=True)
        joined = await bob.join(room_id)
        summary["join"] = describe(joined)
        if not isinstance(joined, JoinResponse):
            return
        for client in (alice, alice2, bob):
            resp = await client.sync(timeout=0, full_state=True)
            if not isinstance(resp, SyncResponse):
                summary["initial_sync_error"] = describe(resp)
                return

        observers = {"alice": Observer("alice", alice), "alice2": Observer("alice2", alice2),
                     "bob": Observer("bob", bob)}
        a, a2, b = observers["alice"], observers["alice2"], observers["bob"]
        # alice2 never marks alice online by syncing: her presence is what alice sets.
        for client, presence in ((alice, None), (alice2, "offline"), (bob, None)):
            tasks.append(asyncio.create_task(client.sync_forever(
                timeout=LONG_POLL_MS, set_presence=presence)))
        await asyncio.sleep(0.5)
        live = Live(summary, room_id)
        await run_checks(live, room_id, alice, alice2, bob, a, a2, b)

        # Privacy: bob never saw alice's account data or private receipt.
        summary["bob_saw_alice_private"] = [
            {k: v for k, v in i.items() if k != "at"} for i in b.items
            if (i["kind"] in ("room_account_data", "global_account_data")
                and i["class"] in ("TagEvent", "UnknownAccountDataEvent"))
            or any(r["receipt_type"] == "m.read.private" and r["user_id"] == alice.user_id
                   for r in i.get("receipts", []))]
        summary["callback_errors"] = {o.name: o.errors for o in observers.values()}
    finally:
        # Stop the loops: ask them to stop, then wake every long-poll with one message.
        for client in (alice, alice2, bob):
            client.stop_sync_forever()
        if tasks and summary.get("room_id"):
            try:
                await alice.room_send(summary["room_id"], "m.room.message",
                                      {"msgtype": "m.text", "body": "bye"},
                                      ignore_unverified_devices=True)
            except Exception:
                summary["bye_exception"] = traceback.format_exc()
        stopped = []
        for task in tasks:
            try:
                await asyncio.wait_for(task, ARRIVAL_S)
                stopped.append("stopped")
            except TimeoutError:
                stopped.append("timed out")
            except Exception:
                stopped.append(traceback.format_exc())
        summary["loops"] = stopped
        for client in (alice, alice2, bob):
            await client.close()


async def run_checks(live: Live, room_id: str, alice: AsyncClient, alice2: AsyncClient,
                     bob: AsyncClient, a: Observer, a2: Observer, b: Observer) -> None:
    def text(body: str) -> Callable[[], Awaitable[Any]]:
        return lambda: alice.room_send(room_id, "m.room.message",
                                       {"msgtype": "m.text", "body": body},
                                       ignore_unverified_devices=True)

    def is_text(body: str) -> Callable[[dict[str, Any]], bool]:
        return lambda i: i["class"] == "RoomMessageText" and i.get("body") == body

    # Messages, both ways.
    sent: dict[str, str] = {}
    out = await live.check("message_alice_to_bob", text("hello bob"),
                           [(b, is_text("hello bob")), (a2, is_text("hello bob")),
                            (a, is_text("hello bob"))])
    sent["alice"] = (out.get("bob", {}).get("item") or {}).get("event_id", "")

    async def bob_says() -> Any:
        resp = await bob.room_send(room_id, "m.room.message",
                                   {"msgtype": "m.text", "body": "hi alice"},
                                   ignore_unverified_devices=True)
        if isinstance(resp, RoomSendResponse):
            sent["bob"] = resp.event_id
        return resp

    await live.check("message_bob_to_alice", bob_says,
                     [(a, is_text("hi alice")), (a2, is_text("hi alice"))])

    # State: topic and name, parsed into nio's classes and applied to its room.
    await live.check(
        "topic", lambda: alice.room_put_state(room_id, "m.room.topic", {"topic": "live topic"}),
        [(b, lambda i: i["class"] == "RoomTopicEvent" and i.get("topic") == "live topic")])
    await live.check(
        "name", lambda: alice.room_put_state(room_id, "m.room.name", {"name": "Renamed"}),
        [(b, lambda i: i["class"] == "RoomNameEvent" and i.get("name") == "Renamed")])
    live.summary["bob_room_state"] = {"topic": bob.rooms[room_id].topic,
                                      "name": bob.rooms[room_id].name}

    # Typing: on, then off.
    await live.check(
        "typing_on", lambda: bob.room_typing(room_id, True, timeout=30_000),
        [(a, lambda i: i["class"] == "TypingNoticeEvent" and i.get("users") == [bob.user_id])])
    live.summary["alice_typing_users"] = sorted(alice.rooms[room_id].typing_users)
    await live.check(
        "typing_off", lambda: bob.room_typing(room_id, False),
        [(a, lambda i: i["class"] == "TypingNoticeEvent" and i.get("users") == [])])

    # A typing notice nobody stops expires after its timeout, and the long-poll says so.
    await live.check(
        "typing_expires", lambda: bob.room_typing(room_id, True, timeout=1500),
        [(a, lambda i: i["class"] == "TypingNoticeEvent" and i.get("users") == [bob.user_id]),
         (a, lambda i: i["class"] == "TypingNoticeEvent" and i.get("users") == [])],
        labels=["alice_typing", "alice_expired"])

    # Receipts.
    def receipt(user: str, event_id: str, rtype: str, thread: Any = "any"
                ) -> Callable[[dict[str, Any]], bool]:
        return lambda i: i["class"] == "ReceiptEvent" and any(
            r["user_id"] == user and r["event_id"] == event_id and r["receipt_type"] == rtype
            and (thread == "any" or r["thread_id"] == thread) for r in i["receipts"])

    await live.check(
        "receipt_threaded_main",
        lambda: alice.update_receipt_marker(room_id, sent.get("bob", ""), ReceiptType.read,
                                            thread_id="main"),
        [(b, receipt(alice.user_id, sent.get("bob", ""), "m.read", "main"))])
    await live.check(
        "read_markers_bob",
        lambda: bob.room_read_markers(room_id, fully_read_event=sent.get("alice", ""),
                                      read_event=sent.get("alice", "")),
        [(a, receipt(bob.user_id, sent.get("alice", ""), "m.read", None)),
         (b, lambda i: i["class"] == "FullyReadEvent"
          and i.get("event_id") == sent.get("alice"))],
        labels=["alice_receipt", "bob_fully_read"])
    await live.check(
        "read_markers_private",
        lambda: alice.room_read_markers(room_id, fully_read_event=sent.get("bob", ""),
                                        private_read_event=sent.get("bob", "")),
        [(a2, receipt(alice.user_id, sent.get("bob", ""), "m.read.private")),
         (a2, lambda i: i["class"] == "FullyReadEvent"
          and i.get("event_id") == sent.get("bob"))],
        labels=["alice2_private_receipt", "alice2_fully_read"])

    # Presence, with a status message, then unavailable.
    def presence(state: str, msg: str) -> Callable[[dict[str, Any]], bool]:
        return lambda i: (i["class"] == "PresenceEvent" and i.get("user_id") == alice.user_id
                          and i.get("presence") == state and i.get("status_msg") == msg)

    await live.check("presence_online", lambda: alice.set_presence("online", STATUS),
                     [(b, presence("online", STATUS))])
    await live.check("presence_unavailable", lambda: alice.set_presence("unavailable", "away"),
                     [(b, presence("unavailable", "away"))])
    member = bob.rooms[room_id].users.get(alice.user_id)
    live.summary["bob_room_member_presence"] = (
        [member.presence, member.status_msg] if member is not None else None)
    got = await bob.get_presence(alice.user_id)
    live.summary["bob_get_presence"] = {**describe(got), **{
        k: getattr(got, k, None) for k in ("presence", "status_msg")}}

    # Account data reaches alice's other device (and not bob).
    await live.check(
        "tag_put",
        lambda: raw(alice, "PUT", f"user/{alice.user_id}/rooms/{room_id}/tags/{TAG}",
                    TAG_CONTENT),
        [(a2, lambda i: i["class"] == "TagEvent" and i.get("tags") == {TAG: TAG_CONTENT})])
    await live.check(
        "tag_delete",
        lambda: raw(alice, "DELETE", f"user/{alice.user_id}/rooms/{room_id}/tags/{TAG}"),
        [(a2, lambda i: i["class"] == "TagEvent" and i.get("tags") == {})])
    await live.check(
        "global_account_data",
        lambda: raw(alice, "PUT", f"user/{alice.user_id}/account_data/{CUSTOM_TYPE}",
                    CUSTOM_CONTENT),
        [(a2, lambda i: i["kind"] == "global_account_data" and i.get("type") == CUSTOM_TYPE
          and i.get("content") == CUSTOM_CONTENT)])
    await live.check(
        "room_account_data",
        lambda: raw(alice, "PUT",
                    f"user/{alice.user_id}/rooms/{room_id}/account_data/{CUSTOM_TYPE}",
                    CUSTOM_CONTENT),
        [(a2, lambda i: i["kind"] == "room_account_data" and i.get("type") == CUSTOM_TYPE
          and i.get("content") == CUSTOM_CONTENT and i.get("room_id") == room_id)])

    # A redaction, live.
    await live.check(
        "redaction", lambda: bob.room_redact(room_id, sent.get("bob", ""), reason="typo"),
        [(a, lambda i: i["class"] == "RedactionEvent" and i.get("redacts") == sent.get("bob")
          and i.get("reason") == "typo" and i.get("sender") == bob.user_id)])

    # Membership, live: a new room's invite reaches bob; his join reaches alice.
    second: dict[str, str] = {}

    async def invite() -> Any:
        resp = await alice.room_create(name="Second", invite=[bob.user_id])
        if isinstance(resp, RoomCreateResponse):
            second["room_id"] = resp.room_id
        return resp

    await live.check("invite", invite, [(b, lambda i: i["class"] == "InviteMemberEvent"
                                          and i.get("state_key") == bob.user_id
                                          and i.get("membership") == "invite"
                                          and i.get("room_id") == second.get("room_id"))])
    await live.check("join", lambda: bob.join(second.get("room_id", "")),
                     [(a, lambda i: i["class"] == "RoomMemberEvent"
                       and i.get("state_key") == bob.user_id and i.get("membership") == "join"
                       and i.get("room_id") == second.get("room_id"))])
    # A marker message last: everything before it has certainly been delivered.
    await live.check("final_message", text("the end"),
                     [(b, is_text("the end")), (a2, is_text("the end"))])


def main(argv: list[str]) -> int:
    homeserver, token = argv
    return run_scenario(lambda summary: scenario(homeserver, token, summary))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
