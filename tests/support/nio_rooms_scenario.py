"""Two matrix-nio clients driving rooms end to end against a running server.

Run as ``python -m tests.support.nio_rooms_scenario HOMESERVER_URL REGISTRATION_TOKEN``.
alice and bob register with the token. For every room version in ``VERSIONS`` alice
creates a room of that version and invites bob, who sees the invite through /sync and
joins; both send; alice sets a topic that bob reads back; alice redacts one of bob's
messages (it comes back with empty content and ``redacted_because``); alice edits a
message and both write in a thread (the server bundles ``unsigned.m.relations`` on the
original and on the thread root, from ``/event`` and from ``/messages``); bob paginates
the history backwards and forwards with ``from``/``to`` tokens, mixing the directions,
and on from the tokens of ``/context``; bob searches; then bob leaves and forgets the room.

Everything goes through nio's public ``AsyncClient`` API except ``/search`` and
``/joined_rooms``, which nio 0.26 does not have (done with ``AsyncClient.send`` and nio's
path builder). It prints one JSON object on stdout recording every step's outcome; a
failed step is recorded and later steps still run wherever they can, so one run reports
every problem. ``tests/test_nio_rooms.py`` starts the server and asserts on the JSON.

nio is asyncio-only: this module runs in its own process, never under Trio.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    MessageDirection,
    RoomContextResponse,
    RoomCreateResponse,
    RoomForgetResponse,
    RoomGetEventResponse,
    RoomGetStateEventResponse,
    RoomGetStateResponse,
    RoomInviteResponse,
    RoomLeaveResponse,
    RoomMessagesResponse,
    RoomPutStateResponse,
    RoomRedactResponse,
    RoomSendResponse,
    SyncResponse,
)

from tests.support.nio_common import config as base_config
from tests.support.nio_common import describe, raw, run_scenario
from tests.support.nio_common import register as nio_register

VERSIONS = ("1", "6", "10", "11", "12")

PASSWORD = "rooms correct horse battery"
LONG_TIMELINE = {"room": {"timeline": {"limit": 100}}}
PAGE = 3

def config() -> AsyncClientConfig:
    return base_config()


async def register(homeserver: str, token: str, name: str) -> AsyncClient:
    return await nio_register(homeserver, token, name, PASSWORD, config())











async def sync(client: AsyncClient, **kwargs: Any) -> SyncResponse:
    resp = await client.sync(timeout=0, sync_filter=LONG_TIMELINE, **kwargs)
    if not isinstance(resp, SyncResponse):
        raise AssertionError(f"sync failed: {describe(resp)}")
    return resp


def relations(event: Any) -> Any:
    """``unsigned.m.relations`` of a parsed nio event (its raw ``source``)."""
    source = getattr(event, "source", None) or {}
    return source.get("unsigned", {}).get("m.relations")


async def send(client: AsyncClient, room_id: str, content: dict[str, Any],
               log: list[dict[str, Any]], label: str) -> str | None:
    resp = await client.room_send(room_id, "m.room.message", content,
                                  ignore_unverified_devices=True)
    entry = describe(resp)
    entry["label"] = label
    log.append(entry)
    return resp.event_id if isinstance(resp, RoomSendResponse) else None


def text(body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body}


async def paginate(client: AsyncClient, room_id: str, direction: MessageDirection,
                   start: str | None = None, end: str | None = None
                   ) -> tuple[list[str], list[dict[str, Any]], list[Any]]:
    """Follow ``end`` tokens until the server has no more; ids in the order served."""
    ids: list[str] = []
    pages: list[dict[str, Any]] = []
    events: list[Any] = []
    token = start
    for _ in range(60):
        resp = await client.room_messages(room_id, start=token, end=end,
                                          direction=direction, limit=PAGE)
        page = describe(resp)
        pages.append(page)
        if not isinstance(resp, RoomMessagesResponse):
            break
        page.update(start=resp.start, end=resp.end, count=len(resp.chunk))
        ids.extend(e.event_id for e in resp.chunk)
        events.extend(resp.chunk)
        if resp.end is None or not resp.chunk:
            break
        token = resp.end
    return ids, pages, events


async def room_flow(alice: AsyncClient, bob: AsyncClient, version: str,
                    out: dict[str, Any]) -> None:
    tag = f"v{version.replace('.', '_')}"

    async def step(name: str, body: Callable[[dict[str, Any]], Awaitable[None]]) -> bool:
        entry: dict[str, Any] = {}
        out[name] = entry
        try:
            await body(entry)
        except Exception:  # recorded; later steps still run where they can
            entry["exception"] = traceback.format_exc()
            return False
        return True

    # 1. Create, invite (seen by bob in /sync), join.
    created = await alice.room_create(name=f"Room {version}", room_version=version)
    out["create"] = describe(created)
    if not isinstance(created, RoomCreateResponse):
        return
    room_id = created.room_id
    out["room_id"] = room_id
    ids: dict[str, str | None] = {}

    async def create_state(e: dict[str, Any]) -> None:
        resp = await alice.room_get_state_event(room_id, "m.room.create")
        e.update(describe(resp))
        if isinstance(resp, RoomGetStateEventResponse):
            e["content"] = resp.content
        state = await alice.room_get_state(room_id)
        e["state"] = describe(state)
        if isinstance(state, RoomGetStateResponse):
            create = [ev for ev in state.events if ev.get("type") == "m.room.create"]
            e["event_id"] = ids["create"] = create[0]["event_id"] if create else None
            e["has_room_id"] = bool(create) and create[0].get("room_id") == room_id
        if ids.get("create"):
            got = await alice.room_get_event(room_id, ids["create"])
            e["fetch"] = describe(got)
            # alice's first /sync with the room: its timeline starts with the create event
            synced = await sync(alice)
            room = synced.rooms.join.get(room_id)
            timeline = [ev.event_id for ev in room.timeline.events] if room else []
            e["in_sync_timeline"] = ids["create"] in timeline

    await step("create_state", create_state)

    invited = await alice.room_invite(room_id, bob.user_id)
    out["invite"] = describe(invited)
    if not isinstance(invited, RoomInviteResponse):
        return
    resp = await sync(bob)
    out["bob_invite_in_sync"] = room_id in resp.rooms.invite
    joined = await bob.join(room_id)
    out["join"] = describe(joined)
    if not isinstance(joined, JoinResponse):
        return
    out["join"]["room_id"] = joined.room_id
    await sync(alice, full_state=True)
    await sync(bob, full_state=True)
    out["members_seen"] = {
        "alice": sorted(alice.rooms[room_id].users) if room_id in alice.rooms else None,
        "bob": sorted(bob.rooms[room_id].users) if room_id in bob.rooms else None}

    # 2. Both send; alice sets a topic that bob reads back.
    sends: list[dict[str, Any]] = []
    out["sends"] = sends
    ids["a1"] = await send(alice, room_id, text(f"hello from alice {tag}"), sends, "a1")
    ids["b1"] = await send(bob, room_id, text(f"hello from bob {tag}"), sends, "b1")
    ids["b_secret"] = await send(bob, room_id, text(f"zanzibar oops {tag}"), sends, "b_secret")
    ids["a2"] = await send(alice, room_id, text(f"second from alice {tag}"), sends, "a2")

    async def topic(e: dict[str, Any]) -> None:
        resp = await alice.room_put_state(room_id, "m.room.topic", {"topic": f"Topic {tag}"})
        e["put"] = describe(resp)
        if isinstance(resp, RoomPutStateResponse):
            ids["topic"] = resp.event_id
        got = await bob.room_get_state_event(room_id, "m.room.topic")
        e["bob_get"] = describe(got)
        if isinstance(got, RoomGetStateEventResponse):
            e["bob_get"]["content"] = got.content
        await sync(bob)
        e["bob_room_topic"] = bob.rooms[room_id].topic if room_id in bob.rooms else None

    await step("topic", topic)

    # 3. alice redacts bob's message: fetched again it is a RedactedEvent, content {}.
    async def redact(e: dict[str, Any]) -> None:
        target = ids["b_secret"]
        assert target is not None
        resp = await alice.room_redact(room_id, target, reason="too much")
        e["redact"] = describe(resp)
        if isinstance(resp, RoomRedactResponse):
            ids["redaction"] = resp.event_id
        got = await bob.room_get_event(room_id, target)
        e["fetch"] = describe(got)
        if isinstance(got, RoomGetEventResponse):
            src = got.event.source
            e["fetch"].update(
                event_class=type(got.event).__name__,
                content=src.get("content"),
                redacted_because_id=src.get("unsigned", {}).get("redacted_because",
                                                                {}).get("event_id"),
                redacter=getattr(got.event, "redacter", None),
                reason=getattr(got.event, "reason", None))

    await step("redact", redact)

    # 4. Edits and threads: the server bundles the aggregations on the originals.
    async def edit(e: dict[str, Any]) -> None:
        original = await send(alice, room_id, text(f"draft {tag}"), sends, "original")
        assert original is not None
        ids["original"] = original
        replacement = {
            "msgtype": "m.text", "body": f"* final {tag}",
            "m.new_content": {"msgtype": "m.text", "body": f"final {tag}"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original}}
        ids["edit"] = await send(alice, room_id, replacement, sends, "edit")
        got = await bob.room_get_event(room_id, original)
        e["fetch"] = describe(got)
        if isinstance(got, RoomGetEventResponse):
            e["fetch"]["body"] = getattr(got.event, "body", None)
            e["fetch"]["relations"] = relations(got.event)

    await step("edit", edit)

    async def thread(e: dict[str, Any]) -> None:
        root = await send(alice, room_id, text(f"thread root {tag}"), sends, "root")
        assert root is not None
        ids["root"] = root
        for client, label in ((bob, "reply_bob"), (alice, "reply_alice")):
            ids[label] = await send(client, room_id, {
                "msgtype": "m.text", "body": f"{label} {tag}",
                "m.relates_to": {"rel_type": "m.thread", "event_id": root,
                                 "is_falling_back": True,
                                 "m.in_reply_to": {"event_id": root}}}, sends, label)
        for client, who in ((alice, "alice"), (bob, "bob")):
            got = await client.room_get_event(room_id, root)
            e[f"fetch_{who}"] = describe(got)
            if isinstance(got, RoomGetEventResponse):
                e[f"fetch_{who}"]["relations"] = relations(got.event)
        threads = [ev.event_id async for ev in alice.room_get_threads(room_id)]
        e["threads"] = threads
        related = [ev.event_id async for ev in bob.room_get_event_relations(room_id, root)]
        e["relations_list"] = related

    await step("thread", thread)

    # 5. History: backwards from now, forwards from the start, and bounded by a token.
    async def history(e: dict[str, Any]) -> None:
        back_ids, back_pages, back_events = await paginate(bob, room_id, MessageDirection.back)
        e["back"] = {"ids": back_ids, "pages": back_pages}
        fwd_ids, fwd_pages, _ = await paginate(bob, room_id, MessageDirection.front)
        e["forward"] = {"ids": fwd_ids, "pages": fwd_pages}
        e["forward_is_reverse_of_back"] = fwd_ids == list(reversed(back_ids))
        e["first_type"] = (back_events[-1].source.get("type") if back_events else None)
        # the newest page again, from the token of bob's latest /sync (dir=b).
        synced = await sync(bob)
        again, _, _ = await paginate(bob, room_id, MessageDirection.back,
                                     start=synced.next_batch)
        e["back_from_sync_next_batch"] = {"ids": again, "expected": back_ids}
        # forwards from the end token of the newest backwards page: that page again.
        if back_pages and back_pages[0].get("end"):
            again, _, _ = await paginate(bob, room_id, MessageDirection.front,
                                         start=back_pages[0]["end"])
            e["forward_from_back_token"] = {"ids": again,
                                            "expected": list(reversed(back_ids[:PAGE]))}
        by_id = {ev.event_id: ev for ev in back_events}
        e["has_all_sent"] = sorted(k for k, v in ids.items() if v and v not in by_id)
        secret = by_id.get(ids["b_secret"] or "")
        e["redacted_in_history"] = (None if secret is None else {
            "event_class": type(secret).__name__, "content": secret.source.get("content")})
        root = by_id.get(ids.get("root") or "")
        e["root_relations_in_messages"] = relations(root) if root is not None else None
        original = by_id.get(ids.get("original") or "")
        e["original_relations_in_messages"] = (relations(original)
                                               if original is not None else None)
        # ``to``: forwards from the beginning up to the end token of the newest page
        # stops exactly before that page's events.
        first = back_pages[0] if back_pages else {}
        if first.get("end"):
            bounded, pages, _ = await paginate(bob, room_id, MessageDirection.front,
                                               end=first["end"])
            e["bounded_forward"] = {"ids": bounded, "pages": pages,
                                    "expected": list(reversed(back_ids[PAGE:]))}
        # and backwards from the end token of the forward run's next-to-last page:
        # every event the forward run had served up to there (a token is a position
        # between events, valid in either direction).
        if len(fwd_pages) >= 2 and fwd_pages[-2].get("end"):
            again, pages, _ = await paginate(bob, room_id, MessageDirection.back,
                                             start=fwd_pages[-2]["end"])
            served = sum(p.get("count", 0) for p in fwd_pages[:-1])
            e["back_from_forward_token"] = {
                "ids": again, "expected": list(reversed(fwd_ids[:served]))}

    await step("history", history)

    # 5b. /context around alice's second message, then /messages on from its tokens:
    # ``start`` continues backwards right before the window, ``end`` forwards right after.
    async def context(e: dict[str, Any]) -> None:
        chron = list(reversed(out.get("history", {}).get("back", {}).get("ids", [])))
        target = ids.get("a2")
        assert target in chron, "a2 missing from the history"
        resp = await bob.room_context(room_id, target, limit=4)
        e["context"] = describe(resp)
        if not isinstance(resp, RoomContextResponse):
            return
        window = ([ev.event_id for ev in reversed(resp.events_before)]
                  + [getattr(resp.event, "event_id", None)]
                  + [ev.event_id for ev in resp.events_after])
        first, last = chron.index(window[0]), chron.index(window[-1])
        e["window"] = {"ids": window, "expected": chron[first:last + 1]}
        if resp.start:
            page = await bob.room_messages(room_id, start=resp.start,
                                           direction=MessageDirection.back, limit=PAGE)
            e["back_from_start"] = {
                "ids": [ev.event_id for ev in getattr(page, "chunk", [])],
                "expected": list(reversed(chron[max(0, first - PAGE):first])),
                "response": describe(page)}
        if resp.end:
            page = await bob.room_messages(room_id, start=resp.end,
                                           direction=MessageDirection.front, limit=PAGE)
            e["forward_from_end"] = {
                "ids": [ev.event_id for ev in getattr(page, "chunk", [])],
                "expected": chron[last + 1:last + 1 + PAGE], "response": describe(page)}

    await step("context", context)

    # 6. Search: bob finds alice's words; the redacted message is not found.
    async def search(e: dict[str, Any]) -> None:
        def body(term: str) -> dict[str, Any]:
            return {"search_categories": {"room_events": {
                "search_term": term, "filter": {"rooms": [room_id]},
                "order_by": "recent"}}}

        for name, term in (("hello", "hello"), ("redacted", "zanzibar"),
                           ("edited", "final"), ("thread", "reply_bob")):
            status, data = await raw(bob, "POST", "search", body(term))
            res = data.get("search_categories", {}).get("room_events", {}) \
                if isinstance(data, dict) else {}
            e[name] = {"status": status,
                       "ids": [r.get("result", {}).get("event_id")
                               for r in res.get("results", [])],
                       "count": res.get("count"),
                       "highlights": res.get("highlights"),
                       "error": data if status != 200 else None}

    await step("search", search)

    # 7. bob leaves and forgets; forgetting while joined is refused first.
    async def leave(e: dict[str, Any]) -> None:
        early = await bob.room_forget(room_id)
        e["forget_while_joined"] = describe(early)
        resp = await bob.room_leave(room_id)
        e["leave"] = describe(resp)
        e["leave"]["ok"] = isinstance(resp, RoomLeaveResponse)
        synced = await sync(bob)
        e["in_leave_section"] = room_id in synced.rooms.leave
        member = await alice.room_get_state_event(room_id, "m.room.member", bob.user_id)
        e["membership_seen_by_alice"] = (member.content.get("membership") if isinstance(
            member, RoomGetStateEventResponse) else describe(member))
        resp = await bob.room_forget(room_id)
        e["forget"] = describe(resp)
        e["forget"]["ok"] = isinstance(resp, RoomForgetResponse)
        status, joined_rooms = await raw(bob, "GET", "joined_rooms")
        e["joined_rooms_has_room"] = [status, room_id in joined_rooms.get("joined_rooms", [])]
        full = await bob.sync(timeout=0, full_state=True, since=None)
        if isinstance(full, SyncResponse):
            e["initial_sync_sections"] = [name for name, section in (
                ("join", full.rooms.join), ("invite", full.rooms.invite),
                ("leave", full.rooms.leave)) if room_id in section]

    await step("leave", leave)
    out["ids"] = ids


async def scenario(homeserver: str, token: str, summary: dict[str, Any]) -> None:
    alice = await register(homeserver, token, "roomalice")
    bob = await register(homeserver, token, "roombob")
    try:
        summary["users"] = {"alice": alice.user_id, "bob": bob.user_id}
        await sync(alice)
        await sync(bob)
        rooms: dict[str, Any] = {}
        summary["rooms"] = rooms
        for version in VERSIONS:
            out: dict[str, Any] = {}
            rooms[version] = out
            try:
                await room_flow(alice, bob, version, out)
            except Exception:
                out["exception"] = traceback.format_exc()
    finally:
        await alice.close()
        await bob.close()


def main(argv: list[str]) -> int:
    homeserver, token = argv
    return run_scenario(lambda summary: scenario(homeserver, token, summary))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
