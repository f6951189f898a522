"""POST /search: the word index, ranking, filters, pagination, context, state, groups."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conduwuit.server import Server
from conduwuit.services.rooms.search import searchable_words, words
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_relations import redact, send, text
from tests.test_rooms import create, q

V3 = "/_matrix/client/v3"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(make_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=30) as client:
        yield client


async def search(client: httpx.AsyncClient, user: LoggedIn, term: str,
                 next_batch: str | None = None, **criteria: Any) -> dict[str, Any]:
    params = {"next_batch": next_batch} if next_batch is not None else {}
    r = await client.post(f"{V3}/search", params=params, headers=user.headers, json={
        "search_categories": {"room_events": {"search_term": term, **criteria}}})
    assert r.status_code == 200, r.text
    return dict(r.json()["search_categories"]["room_events"])


def bodies(found: dict[str, Any]) -> list[str]:
    return [r["result"]["content"]["body"] for r in found["results"]]


def test_words() -> None:
    assert words("Hello, WORLD! héllo_wörld 42x") == ["hello", "world", "héllo", "wörld", "42x"]
    assert words("a" * 51 + " ok") == ["ok"]
    # The spec's keys, each in its own event type only.
    assert searchable_words("m.room.name", {"name": "Big Room", "body": "b"}) == ["big", "room"]
    assert searchable_words("m.room.message", {"name": "not indexed", "topic": "nor"}) == []
    assert searchable_words("m.sticker", {"body": "not a message"}) == []
    assert searchable_words("m.room.topic", {"topic": "T"}, ["content.body"]) == []
    topic = {"topic": "Plain", "m.topic": {"m.text": [
        {"body": "Plain"}, {"body": "<b>Html</b>", "mimetype": "text/html"},
        {"body": "Other plain", "mimetype": "text/plain"}]}}
    assert searchable_words("m.room.topic", topic) == ["plain", "other", "plain"]


async def test_search_basics(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, name="Martian Chat", topic="All about Mars")
    secret = await create(client, bob)
    await send(client, alice, room, text("Martians are coming"))
    await send(client, alice, room, text("martians martians everywhere"))
    await send(client, alice, room, text("men and martians"))
    await send(client, alice, room, text("nothing to see"))
    await send(client, bob, secret, text("martians in bob's private room"))

    found = await search(client, alice, "Martians")
    assert found["count"] == 3 and found["highlights"] == ["martians"]
    # Ranked by the share of the event's words that match, ties by recency.
    assert bodies(found) == ["martians martians everywhere", "men and martians",
                             "Martians are coming"]
    assert all(r["result"]["room_id"] == room for r in found["results"])
    assert found["results"][0]["rank"] > found["results"][1]["rank"]
    assert "next_batch" not in found and "state" not in found and "groups" not in found

    recent = await search(client, alice, "martians", order_by="recent")
    assert bodies(recent) == ["men and martians", "martians martians everywhere",
                              "Martians are coming"]
    # Every term must occur, as a whole word.
    assert bodies(await search(client, alice, "MEN, martians!")) == ["men and martians"]
    assert (await search(client, alice, "martian", keys=["content.body"]))["count"] == 0
    assert (await search(client, alice, "  ...  "))["results"] == []
    # Room names and topics are searchable, and `keys` narrows where words are looked for.
    assert [r["result"]["type"] for r in (await search(client, alice, "mars"))["results"]] == [
        "m.room.topic"]
    assert (await search(client, alice, "mars", keys=["content.body"]))["count"] == 0
    named = await search(client, alice, "martian", keys=["content.name"])
    assert [r["result"]["content"]["name"] for r in named["results"]] == ["Martian Chat"]
    # Bob only sees his own room's match.
    assert bodies(await search(client, bob, "martians")) == ["martians in bob's private room"]


async def test_search_filter_and_pagination(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    first = await create(client, alice, preset="public_chat")
    second = await create(client, alice, preset="public_chat")
    for room in (first, second):
        r = await client.post(f"{V3}/join/{q(room)}", json={}, headers=bob.headers)
        assert r.status_code == 200
    for i in range(3):
        await send(client, alice, first, text(f"word alice {i}"))
        await send(client, bob, second, text(f"word bob {i}"))
    await send(client, alice, first, {"msgtype": "m.image", "body": "word image",
                                      "url": "mxc://x/y"})
    await send(client, alice, first, {"body": "word sticker", "url": "mxc://x/y"}, "m.sticker")

    assert (await search(client, alice, "word"))["count"] == 7
    only_first = await search(client, alice, "word", filter={"rooms": [first]})
    assert only_first["count"] == 4
    assert (await search(client, alice, "word", filter={"not_rooms": [first]}))["count"] == 3
    by_bob = await search(client, alice, "word", filter={"senders": [bob.user_id]})
    assert {r["result"]["sender"] for r in by_bob["results"]} == {bob.user_id}
    assert (await search(client, alice, "word",
                         filter={"not_senders": [bob.user_id]}))["count"] == 4
    assert (await search(client, alice, "word", filter={"types": ["m.sticker"]}))["count"] == 0
    assert (await search(client, alice, "word", filter={"not_types": ["m.room.*"]}))[
        "count"] == 0
    assert (await search(client, alice, "word", filter={"types": ["m.room.*"]}))["count"] == 7
    assert bodies(await search(client, alice, "word", filter={"contains_url": True})) == [
        "word image"]
    assert (await search(client, alice, "word", filter={"contains_url": False}))["count"] == 6

    for order in ("recent", "rank"):
        seen: list[str] = []
        token: str | None = None
        while True:
            page = await search(client, alice, "word", token, order_by=order,
                                filter={"limit": 3})
            assert len(page["results"]) <= 3 and page["count"] == 7
            seen += [r["result"]["event_id"] for r in page["results"]]
            token = page.get("next_batch")
            if token is None:
                break
        assert len(seen) == len(set(seen)) == 7, order


async def test_search_context_state_groups(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, name="Context room", preset="public_chat")
    r = await client.post(f"{V3}/join/{q(room)}", json={}, headers=bob.headers)
    assert r.status_code == 200
    r = await client.put(f"{V3}/rooms/{q(room)}/state/m.room.member/{q(bob.user_id)}",
                         json={"membership": "join", "displayname": "Bobby"},
                         headers=bob.headers)
    assert r.status_code == 200, r.text
    before = [await send(client, alice, room, text(f"before {i}")) for i in range(3)]
    hit = await send(client, bob, room, text("the needle"))
    after = [await send(client, alice, room, text(f"after {i}")) for i in range(3)]

    found = await search(client, alice, "needle", include_state=True,
                         event_context={"before_limit": 2, "after_limit": 1,
                                        "include_profile": True},
                         groupings={"group_by": [{"key": "room_id"}, {"key": "sender"}]})
    result = found["results"][0]
    assert result["result"]["event_id"] == hit
    context = result["context"]
    assert [e["event_id"] for e in context["events_before"]] == [before[2], before[1]]
    assert [e["event_id"] for e in context["events_after"]] == [after[0]]
    assert context["profile_info"][bob.user_id] == {"displayname": "Bobby"}
    assert set(context["profile_info"]) == {alice.user_id, bob.user_id}
    # The tokens page on through /messages.
    r = await client.get(f"{V3}/rooms/{q(room)}/messages",
                         params={"from": context["start"], "dir": "b", "limit": 1},
                         headers=alice.headers)
    assert [e["event_id"] for e in r.json()["chunk"]] == [before[0]]
    r = await client.get(f"{V3}/rooms/{q(room)}/messages",
                         params={"from": context["end"], "dir": "f", "limit": 1},
                         headers=alice.headers)
    assert [e["event_id"] for e in r.json()["chunk"]] == [after[1]]

    state_types = {e["type"] for e in found["state"][room]}
    assert {"m.room.create", "m.room.name", "m.room.member"} <= state_types
    assert found["groups"] == {
        "room_id": {room: {"results": [hit], "order": 1}},
        "sender": {bob.user_id: {"results": [hit], "order": 1}},
    }
    # Context defaults to five each way, without profiles.
    plain = await search(client, alice, "needle", event_context={})
    assert len(plain["results"][0]["context"]["events_before"]) == 5
    assert "profile_info" not in plain["results"][0]["context"]
    empty = await search(client, alice, "nowhere", groupings={"group_by": [{"key": "sender"}]})
    assert empty["groups"] == {"sender": {}} and empty["results"] == []


async def test_redacted_events_are_not_found(client: httpx.AsyncClient,
                                             server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice)
    gone = await send(client, alice, room, text("forget this secret"))
    await send(client, alice, room, text("another secret"))
    await redact(client, alice, room, gone)
    assert bodies(await search(client, alice, "secret")) == ["another secret"]
    assert (await search(client, alice, "forget"))["count"] == 0


async def test_left_rooms_are_not_searched(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice)
    await send(client, alice, room, text("goodbye words"))
    assert (await search(client, alice, "goodbye"))["count"] == 1
    r = await client.post(f"{V3}/rooms/{q(room)}/leave", json={}, headers=alice.headers)
    assert r.status_code == 200, r.text
    assert (await search(client, alice, "goodbye"))["count"] == 0


async def test_encrypted_rooms_are_not_searched(client: httpx.AsyncClient,
                                                server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice)
    await send(client, alice, room, text("plaintext before encryption"))
    assert (await search(client, alice, "plaintext"))["count"] == 1
    r = await client.put(f"{V3}/rooms/{q(room)}/state/m.room.encryption/",
                         json={"algorithm": "m.megolm.v1.aes-sha2"}, headers=alice.headers)
    assert r.status_code == 200, r.text
    assert (await search(client, alice, "plaintext"))["count"] == 0


async def test_search_refusals(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice)
    for i in range(3):
        await send(client, alice, room, text(f"paged {i}"))

    async def refused(body: Any, status: int, errcode: str, *,
                      params: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None) -> None:
        r = await client.post(f"{V3}/search", params=params or {},
                              headers=alice.headers if headers is None else headers,
                              json=body)
        assert (r.status_code, r.json()["errcode"]) == (status, errcode), (body, r.text)

    def events(**criteria: Any) -> dict[str, Any]:
        return {"search_categories": {"room_events": {"search_term": "paged", **criteria}}}

    await refused(events(), 401, "M_MISSING_TOKEN", headers={})
    await refused({}, 400, "M_MISSING_PARAM")
    await refused({"search_categories": []}, 400, "M_BAD_JSON")
    await refused({"search_categories": {"room_events": "x"}}, 400, "M_BAD_JSON")
    await refused({"search_categories": {"room_events": {}}}, 400, "M_MISSING_PARAM")
    await refused(events(search_term=7), 400, "M_BAD_JSON")
    await refused(events(keys="content.body"), 400, "M_BAD_JSON")
    await refused(events(keys=["content.url"]), 400, "M_INVALID_PARAM")
    await refused(events(order_by=1), 400, "M_BAD_JSON")
    await refused(events(order_by="oldest"), 400, "M_INVALID_PARAM")
    await refused(events(filter=[]), 400, "M_BAD_JSON")
    await refused(events(filter={"senders": ["alice"]}), 400, "M_INVALID_PARAM")
    await refused(events(filter={"limit": "3"}), 400, "M_BAD_JSON")
    await refused(events(event_context=True), 400, "M_BAD_JSON")
    await refused(events(event_context={"before_limit": "5"}), 400, "M_BAD_JSON")
    await refused(events(event_context={"after_limit": -1}), 400, "M_INVALID_PARAM")
    await refused(events(event_context={"include_profile": "yes"}), 400, "M_BAD_JSON")
    await refused(events(include_state="yes"), 400, "M_BAD_JSON")
    await refused(events(groupings=[]), 400, "M_BAD_JSON")
    await refused(events(groupings={"group_by": {}}), 400, "M_BAD_JSON")
    await refused(events(groupings={"group_by": ["room_id"]}), 400, "M_BAD_JSON")
    await refused(events(groupings={"group_by": [{"key": 1}]}), 400, "M_BAD_JSON")
    await refused(events(groupings={"group_by": [{"key": "type"}]}), 400, "M_INVALID_PARAM")
    await refused(events(), 400, "M_INVALID_PARAM", params={"next_batch": "garbage"})
    # A token only continues the ordering it came from.
    r = await client.post(f"{V3}/search", headers=alice.headers,
                          json=events(order_by="recent", filter={"limit": 1}))
    token = r.json()["search_categories"]["room_events"]["next_batch"]
    await refused(events(order_by="rank"), 400, "M_INVALID_PARAM", params={"next_batch": token})
    r = await client.post(f"{V3}/search", headers=alice.headers, content=b"{not json")
    assert (r.status_code, r.json()["errcode"]) == (400, "M_NOT_JSON")
    # room_events is the only category; others are ignored, not refused.
    r = await client.post(f"{V3}/search", headers=alice.headers,
                          json={"search_categories": {"org.example.files": {}}})
    assert r.status_code == 200 and r.json() == {"search_categories": {}}


async def test_search_index_survives_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        room = await create(client, alice)
        await send(client, alice, room, text("durable words"))
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        assert bodies(await search(client, alice, "durable")) == ["durable words"]
