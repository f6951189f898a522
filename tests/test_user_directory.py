"""POST /user_directory/search: who can be found, matching, ranking, limits."""

from __future__ import annotations

from typing import Any

import httpx

from conduwuit.server import Server
from tests.support.users import LoggedIn, make_user
from tests.test_rooms import create

V3 = "/_matrix/client/v3"


async def search(client: httpx.AsyncClient, user: LoggedIn, **body: Any) -> dict[str, Any]:
    r = await client.post(f"{V3}/user_directory/search", json=body, headers=user.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def found(body: dict[str, Any]) -> list[str]:
    return [u["user_id"] for u in body["results"]]


async def named(client: httpx.AsyncClient, server: Server, localpart: str,
                name: str | None = None) -> LoggedIn:
    user = await make_user(server, localpart)
    if name is not None:
        r = await client.put(f"{V3}/profile/{user.user_id}/displayname",
                             json={"displayname": name}, headers=user.headers)
        assert r.status_code == 200, r.text
    return user


async def test_who_can_be_found(client: httpx.AsyncClient, server: Server) -> None:
    alice = await named(client, server, "alice", "Alice Liddell")
    bob = await named(client, server, "bob", "Bobby Tables")
    carol = await named(client, server, "carol", "Carol")
    dave = await named(client, server, "dave", "Dave Lonely")
    erin = await named(client, server, "erin", "Erin Reader")
    # alice and bob share a private room; carol is in a public room; dave in no room;
    # erin in a world-readable invite-only room.
    private = await create(client, alice, invite=[bob.user_id])
    assert (await client.post(f"{V3}/join/{private}", json={}, headers=bob.headers)).is_success
    await create(client, carol, preset="public_chat")
    await create(client, erin, initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}])
    await create(client, dave)
    assert found(await search(client, alice, search_term="bobby")) == [bob.user_id]
    assert found(await search(client, alice, search_term="CAROL")) == [carol.user_id]
    assert found(await search(client, alice, search_term="reader")) == [erin.user_id]
    assert found(await search(client, alice, search_term="lonely")) == []  # private, unshared
    assert found(await search(client, dave, search_term="bob")) == []  # shares nothing
    # A deactivated user disappears.
    assert server.services is not None
    server.services.users.deactivate(carol.user_id)
    assert found(await search(client, alice, search_term="carol")) == []


async def test_matching_ranking_and_fields(client: httpx.AsyncClient, server: Server) -> None:
    searcher = await named(client, server, "searcher")
    room = await create(client, searcher, preset="public_chat")
    users = {
        "zed": await named(client, server, "zed", "Anna Smith"),
        "anna": await named(client, server, "anna"),
        "joanna": await named(client, server, "joanna", "Jo"),
    }
    for user in users.values():
        assert (await client.post(f"{V3}/join/{room}", json={},
                                  headers=user.headers)).is_success
    await client.put(f"{V3}/profile/{users['zed'].user_id}/avatar_url",
                     json={"avatar_url": "mxc://test.local/zed"}, headers=users["zed"].headers)
    body = await search(client, searcher, search_term="anna")
    # Prefix matches first (with a display name before without), then the rest.
    assert found(body) == [users["zed"].user_id, users["anna"].user_id, users["joanna"].user_id]
    assert body["results"][0] == {"user_id": users["zed"].user_id, "display_name": "Anna Smith",
                                  "avatar_url": "mxc://test.local/zed"}
    assert body["limited"] is False
    body = await search(client, searcher, search_term="anna", limit=2)
    assert len(body["results"]) == 2 and body["limited"] is True
    # Matching the server name part of user ids works too.
    assert len(found(await search(client, searcher, search_term=":test.local"))) == 4


async def test_search_refusals(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    url = f"{V3}/user_directory/search"
    for body, expected in (({}, (400, "M_MISSING_PARAM")),
                           ({"search_term": 3}, (400, "M_BAD_JSON")),
                           ({"search_term": "a", "limit": "3"}, (400, "M_BAD_JSON")),
                           ({"search_term": "a", "limit": True}, (400, "M_BAD_JSON"))):
        r = await client.post(url, json=body, headers=alice.headers)
        assert (r.status_code, r.json()["errcode"]) == expected, body
    r = await client.post(url, json={"search_term": "a"})
    assert r.status_code == 401
