"""Relations: the index, /relations pagination and recursion, /threads, bundled aggregations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_rooms import create, q

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(make_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=30) as client:
        yield client


_txn = iter(range(1_000_000))


async def send(client: httpx.AsyncClient, user: LoggedIn, room: str, content: dict[str, Any],
               event_type: str = "m.room.message") -> str:
    r = await client.put(f"{V3}/rooms/{q(room)}/send/{event_type}/txn{next(_txn)}",
                         json=content, headers=user.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


def text(body: str, **extra: Any) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, **extra}


def rel(rel_type: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": rel_type, "event_id": target, **extra}}


def reaction(target: str, key: str) -> dict[str, Any]:
    return rel("m.annotation", target, key=key)


def edit(target: str, body: str) -> dict[str, Any]:
    return {**text(f"* {body}"), "m.new_content": text(body), **rel("m.replace", target)}


async def relations(client: httpx.AsyncClient, user: LoggedIn, room: str, event_id: str,
                    *path: str, **params: Any) -> dict[str, Any]:
    url = f"{V1}/rooms/{q(room)}/relations/{q(event_id)}"
    for part in path:
        url += f"/{q(part)}"
    r = await client.get(url, params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def get_event(client: httpx.AsyncClient, user: LoggedIn, room: str,
                    event_id: str) -> dict[str, Any]:
    r = await client.get(f"{V3}/rooms/{q(room)}/event/{q(event_id)}", headers=user.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def redact(client: httpx.AsyncClient, user: LoggedIn, room: str, event_id: str) -> None:
    r = await client.put(f"{V3}/rooms/{q(room)}/redact/{q(event_id)}/red{next(_txn)}",
                         json={}, headers=user.headers)
    assert r.status_code == 200, r.text


def ids(page: dict[str, Any]) -> list[str]:
    return [e["event_id"] for e in page["chunk"]]


async def two_members(client: httpx.AsyncClient,
                      server: Server) -> tuple[LoggedIn, LoggedIn, str]:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat")
    r = await client.post(f"{V3}/join/{q(room)}", json={}, headers=bob.headers)
    assert r.status_code == 200, r.text
    return alice, bob, room


async def test_relations_filtered_by_type(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, room = await two_members(client, server)
    root = await send(client, alice, room, text("root"))
    like = await send(client, bob, room, reaction(root, "👍"), "m.reaction")
    ref = await send(client, bob, room, {**text("see above"), **rel("m.reference", root)})
    reply = await send(client, bob, room, {**text("in thread"), **rel("m.thread", root)})
    custom = await send(client, bob, room, {**text("x"), **rel("org.example.rel", root)})
    # A rich reply is not a relation, nor is a relation to nothing well-formed.
    await send(client, bob, room, text("re", **{"m.relates_to": {
        "m.in_reply_to": {"event_id": root}}}))
    await send(client, bob, room, text("bad", **{"m.relates_to": {"rel_type": "m.thread"}}))

    page = await relations(client, alice, room, root)
    assert ids(page) == [custom, reply, ref, like]  # newest first
    assert "next_batch" not in page and "prev_batch" not in page
    assert "recursion_depth" not in page
    assert ids(await relations(client, alice, room, root, "m.annotation")) == [like]
    assert ids(await relations(client, alice, room, root, "m.thread")) == [reply]
    assert ids(await relations(client, alice, room, root, "m.annotation", "m.reaction")) == [
        like]
    assert ids(await relations(client, alice, room, root, "m.annotation",
                               "m.room.message")) == []
    assert ids(await relations(client, alice, room, root, "m.reference",
                               "m.room.message")) == [ref]
    # Unstable prefix, as older clients call it.
    r = await client.get(f"/_matrix/client/unstable/rooms/{q(room)}/relations/{q(root)}",
                         headers=alice.headers)
    assert r.status_code == 200 and len(r.json()["chunk"]) == 4
    # An event nothing relates to answers an empty chunk.
    assert ids(await relations(client, alice, room, like)) == []


async def test_relations_pagination(client: httpx.AsyncClient, server: Server) -> None:
    alice, _, room = await two_members(client, server)
    root = await send(client, alice, room, text("root"))
    replies = [await send(client, alice, room, {**text(f"r{i}"), **rel("m.thread", root)})
               for i in range(5)]
    seen: list[str] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"from": token} if token else {})}
        page = await relations(client, alice, room, root, **params)
        if token is not None:
            assert page["prev_batch"] == token
        seen += ids(page)
        token = page.get("next_batch")
        if token is None:
            break
    assert seen == list(reversed(replies))

    forward = await relations(client, alice, room, root, dir="f", limit=3)
    assert ids(forward) == replies[:3]
    rest = await relations(client, alice, room, root, dir="f", **{"from": forward[
        "next_batch"]})
    assert ids(rest) == replies[3:]
    assert "next_batch" not in rest

    # `to` bounds the walk; a /sync-style "s" token is accepted as `from`.
    first = await relations(client, alice, room, root, limit=2)
    bounded = await relations(client, alice, room, root, to=first["next_batch"])
    assert ids(bounded) == list(reversed(replies))[:1]
    r = await client.get("/_matrix/client/v3/sync", headers=alice.headers)
    since = r.json()["next_batch"]
    page = await relations(client, alice, room, root, **{"from": since})
    assert ids(page) == list(reversed(replies))


async def test_relations_recurse(client: httpx.AsyncClient, server: Server) -> None:
    alice, _, room = await two_members(client, server)
    root = await send(client, alice, room, text("root"))
    child = await send(client, alice, room, {**text("child"), **rel("m.reference", root)})
    grandchild = await send(client, alice, room, {**text("gc"), **rel("m.reference", child)})
    great = await send(client, alice, room, {**text("ggc"), **rel("m.thread", grandchild)})
    too_deep = await send(client, alice, room, {**text("gggc"), **rel("m.reference", great)})

    assert ids(await relations(client, alice, room, root)) == [child]
    page = await relations(client, alice, room, root, recurse="true")
    assert ids(page) == [great, grandchild, child]  # three levels, not the fourth
    assert too_deep not in ids(page)
    assert page["recursion_depth"] == 3
    page = await relations(client, alice, room, root, "m.reference", recurse="true")
    assert ids(page) == [grandchild, child]
    page = await relations(client, alice, room, root, recurse="true", dir="f", limit=2)
    assert ids(page) == [child, grandchild]
    page = await relations(client, alice, room, root, recurse="true", dir="f",
                           **{"from": page["next_batch"]})
    assert ids(page) == [great]
    page = await relations(client, alice, room, root, recurse="false")
    assert ids(page) == [child] and page["recursion_depth"] == 1


async def test_relations_refusals(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, room = await two_members(client, server)
    carol = await make_user(server, "carol")
    root = await send(client, alice, room, text("root"))
    other_room = await create(client, alice)
    elsewhere = await send(client, alice, other_room, text("elsewhere"))
    base = f"{V1}/rooms/{q(room)}/relations"

    async def refused(url: str, user: LoggedIn | None, status: int, errcode: str,
                      **params: Any) -> None:
        headers = user.headers if user is not None else {}
        r = await client.get(url, params=params, headers=headers)
        assert (r.status_code, r.json()["errcode"]) == (status, errcode), r.text

    await refused(f"{base}/{q(root)}", None, 401, "M_MISSING_TOKEN")
    await refused(f"{base}/{q(root)}", carol, 403, "M_FORBIDDEN")
    await refused(f"{V1}/rooms/{q('!nope:test.local')}/relations/{q(root)}", alice, 404,
                  "M_NOT_FOUND")
    await refused(f"{base}/{q('$unknown')}", alice, 404, "M_NOT_FOUND")
    await refused(f"{base}/{q(elsewhere)}", alice, 404, "M_NOT_FOUND")
    await refused(f"{base}/{q(root)}/m.thread", bob, 400, "M_INVALID_PARAM", dir="up")
    await refused(f"{base}/{q(root)}", bob, 400, "M_INVALID_PARAM", limit="many")
    await refused(f"{base}/{q(root)}", bob, 400, "M_INVALID_PARAM", **{"from": "x1"})
    await refused(f"{base}/{q(root)}/m.thread/m.room.message", bob, 400, "M_INVALID_PARAM",
                  to="later")
    await refused(f"{base}/{q(root)}", bob, 400, "M_INVALID_PARAM", recurse="yes")


async def test_bundled_aggregations(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, room = await two_members(client, server)
    root = await send(client, alice, room, text("root"))
    await send(client, alice, room, {**text("mine"), **rel("m.thread", root)})
    latest = await send(client, alice, room, {**text("latest"), **rel("m.thread", root)})
    first_edit = await send(client, alice, room, edit(root, "root v2"))
    last_edit = await send(client, alice, room, edit(root, "root v3"))
    await send(client, bob, room, edit(root, "not bob's to edit"))  # other sender: ignored
    await send(client, alice, room, {**text("no new content"), **rel("m.replace", root)})
    ref = await send(client, bob, room, {**text("ref"), **rel("m.reference", root)})
    await send(client, bob, room, reaction(root, "🎉"), "m.reaction")  # never bundled
    edit_of_latest = await send(client, alice, room, edit(latest, "latest v2"))

    event = await get_event(client, alice, room, root)
    bundle = event["unsigned"]["m.relations"]
    assert set(bundle) == {"m.thread", "m.replace", "m.reference"}
    thread = bundle["m.thread"]
    assert thread["count"] == 2 and thread["current_user_participated"] is True
    assert thread["latest_event"]["event_id"] == latest
    # The latest event carries its own bundle (its edit), but no nested thread.
    assert thread["latest_event"]["unsigned"]["m.relations"]["m.replace"]["event_id"] == (
        edit_of_latest)
    replace = bundle["m.replace"]  # the whole latest edit, as served (spec v1.7+)
    assert replace["event_id"] == last_edit and replace["sender"] == alice.user_id
    assert replace["content"]["m.new_content"]["body"] == "root v3"
    assert {"origin_server_ts", "type", "room_id", "unsigned"} <= set(replace)
    assert first_edit != last_edit
    assert bundle["m.reference"] == {"chunk": [{"event_id": ref}]}
    assert event["content"]["body"] == "root"  # edits are not applied by the server

    as_bob = (await get_event(client, bob, room, root))["unsigned"]["m.relations"]
    assert as_bob["m.thread"]["current_user_participated"] is False

    # The same bundle reaches /messages and /sync.
    r = await client.get(f"{V3}/rooms/{q(room)}/messages", params={"limit": 50},
                         headers=bob.headers)
    served = {e["event_id"]: e for e in r.json()["chunk"]}
    assert served[root]["unsigned"]["m.relations"]["m.thread"]["count"] == 2
    r = await client.get(f"{V3}/sync", params={"filter": '{"room":{"timeline":{"limit":50}}}'},
                         headers=bob.headers)
    timeline = r.json()["rooms"]["join"][room]["timeline"]["events"]
    synced = {e["event_id"]: e for e in timeline}
    assert synced[root]["unsigned"]["m.relations"]["m.reference"]["chunk"] == [
        {"event_id": ref}]
    # Events with no relations carry no bundle.
    assert "m.relations" not in served[ref]["unsigned"]


async def test_redacted_relations_disappear(client: httpx.AsyncClient,
                                            server: Server) -> None:
    alice, bob, room = await two_members(client, server)
    root = await send(client, alice, room, text("root"))
    kept = await send(client, bob, room, {**text("kept"), **rel("m.thread", root)})
    gone = await send(client, bob, room, {**text("gone"), **rel("m.thread", root)})
    edit_id = await send(client, alice, room, edit(root, "v2"))
    await redact(client, bob, room, gone)
    await redact(client, alice, room, edit_id)

    assert ids(await relations(client, alice, room, root)) == [kept]
    bundle = (await get_event(client, alice, room, root))["unsigned"]["m.relations"]
    assert set(bundle) == {"m.thread"}
    assert bundle["m.thread"]["count"] == 1
    assert bundle["m.thread"]["latest_event"]["event_id"] == kept

    # A redacted original carries no m.replace, even with a live edit.
    other = await send(client, alice, room, text("other"))
    await send(client, alice, room, edit(other, "other v2"))
    await redact(client, alice, room, other)
    unsigned = (await get_event(client, alice, room, other))["unsigned"]
    assert "m.replace" not in unsigned.get("m.relations", {})

    # A thread whose every reply is redacted is no longer listed.
    await redact(client, bob, room, kept)
    r = await client.get(f"{V1}/rooms/{q(room)}/threads", headers=alice.headers)
    assert r.json()["chunk"] == []


async def test_threads_list(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, room = await two_members(client, server)
    first = await send(client, alice, room, text("first root"))
    second = await send(client, bob, room, text("second root"))
    third = await send(client, bob, room, text("third root"))
    await send(client, bob, room, {**text("a"), **rel("m.thread", first)})
    await send(client, bob, room, {**text("b"), **rel("m.thread", second)})
    await send(client, bob, room, {**text("c"), **rel("m.thread", third)})
    await send(client, alice, room, {**text("d"), **rel("m.thread", second)})  # bumps it

    url = f"{V1}/rooms/{q(room)}/threads"
    r = await client.get(url, headers=alice.headers)
    assert r.status_code == 200, r.text
    chunk = r.json()["chunk"]
    assert [e["event_id"] for e in chunk] == [second, third, first]
    assert chunk[0]["unsigned"]["m.relations"]["m.thread"]["count"] == 2
    assert "next_batch" not in r.json()

    r = await client.get(url, params={"include": "participated"}, headers=alice.headers)
    assert [e["event_id"] for e in r.json()["chunk"]] == [second, first]

    r = await client.get(url, params={"limit": 2}, headers=alice.headers)
    assert [e["event_id"] for e in r.json()["chunk"]] == [second, third]
    r = await client.get(url, params={"from": r.json()["next_batch"]}, headers=alice.headers)
    assert [e["event_id"] for e in r.json()["chunk"]] == [first]
    assert "next_batch" not in r.json()

    r = await client.get(f"/_matrix/client/unstable/org.matrix.msc3856/rooms/{q(room)}/threads",
                         headers=bob.headers)
    assert r.status_code == 200 and len(r.json()["chunk"]) == 3


async def test_threads_refusals(client: httpx.AsyncClient, server: Server) -> None:
    alice, _, room = await two_members(client, server)
    carol = await make_user(server, "carol")
    url = f"{V1}/rooms/{q(room)}/threads"
    cases: list[tuple[LoggedIn | None, dict[str, str], int, str]] = [
        (None, {}, 401, "M_MISSING_TOKEN"),
        (carol, {}, 403, "M_FORBIDDEN"),
        (alice, {"include": "mine"}, 400, "M_INVALID_PARAM"),
        (alice, {"limit": "ten"}, 400, "M_INVALID_PARAM"),
        (alice, {"from": "token"}, 400, "M_INVALID_PARAM"),
    ]
    for user, params, status, errcode in cases:
        r = await client.get(url, params=params, headers=user.headers if user else {})
        assert (r.status_code, r.json()["errcode"]) == (status, errcode), (params, r.text)
    r = await client.get(f"{V1}/rooms/{q('!nope:test.local')}/threads", headers=alice.headers)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")


async def test_relations_survive_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        room = await create(client, alice)
        root = await send(client, alice, room, text("root"))
        reply = await send(client, alice, room, {**text("reply"), **rel("m.thread", root)})
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        assert ids(await relations(client, alice, room, root)) == [reply]
        r = await client.get(f"{V1}/rooms/{q(room)}/threads", headers=alice.headers)
        assert [e["event_id"] for e in r.json()["chunk"]] == [root]


@pytest.mark.parametrize("version", ["1", "3", "11", "12"])
async def test_relations_in_each_event_id_format(client: httpx.AsyncClient, server: Server,
                                                 version: str) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice, room_version=version)
    root = await send(client, alice, room, text("root"))
    replies = [await send(client, alice, room, {**text(f"r{i}"), **rel("m.thread", root)})
               for i in range(10)]  # v3 ids are standard base64: some hold a '/'
    assert ids(await relations(client, alice, room, root, "m.thread")) == replies[::-1]
    bundle = (await get_event(client, alice, room, root))["unsigned"]["m.relations"]
    assert bundle["m.thread"]["count"] == 10
