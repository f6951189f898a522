"""Push rules API, default-rule behaviour end to end, pushers API and /notifications."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_rooms import create
from tests.test_sync import sync
from tests.test_unread import message, receipt, trio_room, unread

V3 = "/_matrix/client/v3"
RULES = f"{V3}/pushrules/global"
GATEWAY = "https://push.example.org/_matrix/push/v1/notify"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(make_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=30) as client:
        yield client


def ids(rules: list[dict[str, Any]]) -> list[str]:
    return [r["rule_id"] for r in rules]


async def notifications(client: httpx.AsyncClient, user: LoggedIn,
                        **params: Any) -> dict[str, Any]:
    r = await client.get(f"{V3}/notifications", params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def latest_actions(client: httpx.AsyncClient, user: LoggedIn,
                         event_id: str) -> list[Any] | None:
    """The actions of the user's notification for ``event_id`` (None: not notified)."""
    for item in (await notifications(client, user, limit=100))["notifications"]:
        if item["event"]["event_id"] == event_id:
            return list(item["actions"])
    return None


async def state(client: httpx.AsyncClient, user: LoggedIn, room: str, event_type: str,
                content: dict[str, Any], state_key: str = "") -> str:
    r = await client.put(f"{V3}/rooms/{room}/state/{event_type}/{state_key}", json=content,
                         headers=user.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


async def send_event(client: httpx.AsyncClient, user: LoggedIn, room: str, event_type: str,
                     content: dict[str, Any], txn: str) -> str:
    r = await client.put(f"{V3}/rooms/{room}/send/{event_type}/{txn}", json=content,
                         headers=user.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


# --- the rules API ---------------------------------------------------------------------


async def test_get_rules_shows_the_defaults(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    r = await client.get(f"{V3}/pushrules/", headers=alice.headers)
    assert r.status_code == 200
    ruleset = r.json()["global"]
    assert ids(ruleset["override"])[:2] == [".m.rule.master", ".m.rule.suppress_notices"]
    for rule_id in (".m.rule.is_user_mention", ".m.rule.is_room_mention",
                    ".m.rule.suppress_edits", ".m.rule.tombstone"):
        assert rule_id in ids(ruleset["override"])
    assert ruleset["content"][0]["pattern"] == "alice"
    r = await client.get(f"{RULES}/", headers=alice.headers)
    assert r.json() == ruleset
    r = await client.get(f"{RULES}/override/.m.rule.master", headers=alice.headers)
    assert r.json()["enabled"] is False and r.json()["default"] is True
    r = await client.get(f"{RULES}/override/.m.rule.master/enabled", headers=alice.headers)
    assert r.json() == {"enabled": False}
    r = await client.get(f"{RULES}/underride/.m.rule.message/actions", headers=alice.headers)
    assert r.json() == {"actions": ["notify"]}
    r = await client.get(f"{V3}/pushrules/", )
    assert r.status_code == 401


async def test_user_rule_crud_and_ordering(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    h = alice.headers

    async def put(kind: str, rule_id: str, body: dict[str, Any], **params: str) -> httpx.Response:
        return await client.put(f"{RULES}/{kind}/{quote(rule_id, safe='')}", json=body,
                                params=params, headers=h)

    assert (await put("content", "nocake", {"pattern": "cake*lie",
                                            "actions": ["notify"]})).status_code == 200
    r = await client.get(f"{RULES}/content/nocake", headers=h)
    assert r.json() == {"rule_id": "nocake", "default": False, "enabled": True,
                        "actions": ["notify"], "pattern": "cake*lie"}
    # New rules go first among the user's rules of their kind; before/after place them.
    assert (await put("content", "b", {"pattern": "b", "actions": []})).status_code == 200
    assert (await put("content", "c", {"pattern": "c", "actions": []},
                      after="nocake")).status_code == 200
    assert (await put("content", "a", {"pattern": "a", "actions": []},
                      before="b")).status_code == 200
    content = (await client.get(f"{RULES}/", headers=h)).json()["content"]
    assert ids(content) == ["a", "b", "nocake", "c", ".m.rule.contains_user_name"]
    # Updating keeps the place (and a disabled rule stays disabled).
    r = await client.put(f"{RULES}/content/b/enabled", json={"enabled": False}, headers=h)
    assert r.status_code == 200
    assert (await put("content", "b", {"pattern": "bee", "actions": ["notify"]})).status_code \
        == 200
    content = (await client.get(f"{RULES}/", headers=h)).json()["content"]
    assert ids(content)[:4] == ["a", "b", "nocake", "c"]
    assert content[1]["pattern"] == "bee" and content[1]["enabled"] is False
    # Overrides: after the master rule, before the server's own overrides.
    cond = [{"kind": "event_match", "key": "content.body", "pattern": "secret"}]
    assert (await put("override", "quiet", {"conditions": cond, "actions": []})).status_code \
        == 200
    override = (await client.get(f"{RULES}/", headers=h)).json()["override"]
    assert ids(override)[:3] == [".m.rule.master", "quiet", ".m.rule.suppress_notices"]
    # Room and sender rules are named by the room or user they match.
    assert (await put("room", "!room:test.local", {"actions": []})).status_code == 200
    assert (await put("sender", "@spam:test.local", {"actions": []})).status_code == 200
    # Delete, and 404 afterwards.
    r = await client.delete(f"{RULES}/content/nocake", headers=h)
    assert r.status_code == 200
    r = await client.get(f"{RULES}/content/nocake", headers=h)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    # The rules are account data: /sync shows them.
    events = (await sync(client, alice))["account_data"]["events"]
    [pushed] = [e for e in events if e["type"] == "m.push_rules"]
    assert ids(pushed["content"]["global"]["content"])[:3] == ["a", "b", "c"]


async def test_default_rules_change_enabled_and_actions(client: httpx.AsyncClient,
                                                        server: Server) -> None:
    alice, bob, _carol, room = await trio_room(client, server)
    h = bob.headers
    r = await client.put(f"{RULES}/underride/.m.rule.message/actions",
                         json={"actions": ["notify", {"set_tweak": "highlight"}]}, headers=h)
    assert r.status_code == 200
    r = await client.get(f"{RULES}/underride/.m.rule.message", headers=h)
    assert r.json()["actions"] == ["notify", {"set_tweak": "highlight"}]
    assert r.json()["default"] is True
    await message(client, alice, room, "hello")
    assert await unread(client, bob, room) == (1, 1)
    # Disabling the rule silences plain messages for bob only.
    r = await client.put(f"{RULES}/underride/.m.rule.message/enabled", json={"enabled": False},
                         headers=h)
    assert r.status_code == 200
    await message(client, alice, room, "hello again")
    assert await unread(client, bob, room) == (1, 1)
    assert (await unread(client, _carol, room)) == (2, 0)
    # The master rule silences everything.
    r = await client.put(f"{RULES}/override/.m.rule.master/enabled", json={"enabled": True},
                         headers=_carol.headers)
    await message(client, alice, room, f"{_carol.user_id} look")
    assert await unread(client, _carol, room) == (2, 0)


async def test_user_rules_drive_the_counts(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, carol, room = await trio_room(client, server)
    r = await client.put(f"{RULES}/content/lunch", json={
        "pattern": "lunch", "actions": ["notify", {"set_tweak": "highlight"}]},
        headers=bob.headers)
    assert r.status_code == 200
    r = await client.put(f"{RULES}/sender/{quote(alice.user_id)}", json={"actions": []},
                         headers=carol.headers)
    assert r.status_code == 200
    await message(client, alice, room, "lunch anyone?")
    assert await unread(client, bob, room) == (1, 1)
    assert await unread(client, carol, room) == (0, 0)  # alice is muted for carol
    r = await client.put(f"{RULES}/room/{quote(room)}", json={"actions": []},
                         headers=bob.headers)
    assert r.status_code == 200
    await message(client, alice, room, "plain")
    assert await unread(client, bob, room) == (1, 1)  # the room rule mutes the room...
    await message(client, alice, room, "lunch now")
    assert await unread(client, bob, room) == (2, 2)  # ...after the content rules
    r = await client.put(f"{RULES}/override/cond", json={"conditions": [
        {"kind": "event_property_is", "key": "content.msgtype", "value": "m.emote"},
        {"kind": "room_member_count", "is": ">2"},
        {"kind": "sender_notification_permission", "key": "room"}],
        "actions": ["notify", {"set_tweak": "highlight"}]}, headers=carol.headers)
    assert r.status_code == 200
    # bob's power is 0: no match, .m.rule.message notifies without highlight; alice
    # has 100: the override matches, and outranks carol's sender rule muting alice.
    await message(client, bob, room, "waves", msgtype="m.emote")
    await message(client, alice, room, "dances", msgtype="m.emote")
    assert await unread(client, carol, room) == (2, 1)


async def test_rule_errors(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    h = alice.headers

    async def put(path: str, body: Any, **params: str) -> tuple[int, str]:
        r = await client.put(f"{RULES}/{path}", json=body, params=params, headers=h)
        return r.status_code, r.json().get("errcode", "")

    assert await put("bogus/x", {"actions": []}) == (400, "M_INVALID_PARAM")
    assert await put("override/.mine", {"actions": []}) == (400, "M_INVALID_PARAM")
    assert await put("content/x", {"actions": []}) == (400, "M_MISSING_PARAM")
    assert await put("content/x", {"pattern": 5, "actions": []}) == (400, "M_INVALID_PARAM")
    assert await put("override/x", {"conditions": "no", "actions": []}) \
        == (400, "M_INVALID_PARAM")
    assert await put("override/x", {"conditions": [{"kind": "event_match", "key": "type"}],
                                    "actions": []}) == (400, "M_INVALID_PARAM")
    assert await put("override/x", {"conditions": [{"kind": "room_member_count", "is": "~2"}],
                                    "actions": []}) == (400, "M_INVALID_PARAM")
    assert await put("override/x", {"conditions": [{"kind": "event_property_is", "key": "a",
                                                    "value": [1]}],
                                    "actions": []}) == (400, "M_INVALID_PARAM")
    assert await put("override/x", {"conditions": []}) == (400, "M_MISSING_PARAM")
    assert await put("override/x", {"actions": ["explode"]}) == (400, "M_INVALID_PARAM")
    assert await put("override/x", {"actions": [{"value": 1}]}) == (400, "M_INVALID_PARAM")
    assert await put("room/not-a-room", {"actions": []}) == (400, "M_INVALID_PARAM")
    assert await put("sender/not-a-user", {"actions": []}) == (400, "M_INVALID_PARAM")
    assert await put("override/x", {"actions": []}, before="missing") == (400, "M_UNKNOWN")
    assert await put("override/x", {"actions": []}, after=".m.rule.master") \
        == (400, "M_INVALID_PARAM")
    # Unknown condition kinds are kept (they never match); historical actions too.
    assert await put("override/fine", {"conditions": [{"kind": "org.example.future"}],
                                       "actions": ["dont_notify"]}) == (200, "")
    for method, path in (("GET", "override/nope"), ("DELETE", "override/nope"),
                         ("GET", "override/nope/enabled"), ("GET", "override/nope/actions")):
        r = await client.request(method, f"{RULES}/{path}", headers=h)
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), path
    r = await client.put(f"{RULES}/override/nope/enabled", json={"enabled": True}, headers=h)
    assert r.status_code == 404
    r = await client.put(f"{RULES}/override/nope/actions", json={"actions": []}, headers=h)
    assert r.status_code == 404
    r = await client.put(f"{RULES}/override/fine/enabled", json={"enabled": "yes"}, headers=h)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")
    r = await client.put(f"{RULES}/override/fine/enabled", json={}, headers=h)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_MISSING_PARAM")
    r = await client.put(f"{RULES}/override/fine/actions", json={"actions": "notify"}, headers=h)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")
    r = await client.put(f"{RULES}/override/fine/actions", json={}, headers=h)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_MISSING_PARAM")
    r = await client.delete(f"{RULES}/override/.m.rule.master", headers=h)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")
    r = await client.get(f"{RULES}/bogus/x", headers=h)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")
    # Clients may not write m.push_rules through the account data API.
    r = await client.put(f"{V3}/user/{alice.user_id}/account_data/m.push_rules",
                         json={"global": {}}, headers=h)
    assert r.status_code == 405


# --- the default rules, end to end (spec examples) ---------------------------------------


async def test_default_rules_as_the_spec_describes(client: httpx.AsyncClient,
                                                   server: Server) -> None:
    alice, bob, carol, room = await trio_room(client, server)
    sound = {"set_tweak": "sound", "value": "default"}
    highlight = {"set_tweak": "highlight"}
    # A plain message in a group room: notify, no sound.
    plain = await message(client, alice, room, "hello")
    assert await latest_actions(client, bob, plain) == ["notify"]
    # A mention (m.mentions) highlights with a sound; the legacy body rule too.
    mention = await message(client, alice, room, "hi",
                            **{"m.mentions": {"user_ids": [bob.user_id]}})
    assert await latest_actions(client, bob, mention) == ["notify", sound, highlight]
    assert await latest_actions(client, carol, mention) == ["notify"]
    by_name = await message(client, alice, room, "bob: ping")
    assert await latest_actions(client, bob, by_name) == ["notify", sound, highlight]
    # With m.mentions present, names in the body no longer count.
    intentional = await message(client, alice, room, "bob again", **{"m.mentions": {}})
    assert await latest_actions(client, bob, intentional) == ["notify"]
    # Room mentions need the sender's power (notifications.room, 50 by default).
    everyone = await message(client, alice, room, "all", **{"m.mentions": {"room": True}})
    assert await latest_actions(client, carol, everyone) == ["notify", highlight]
    weak = await message(client, bob, room, "all", **{"m.mentions": {"room": True}})
    assert await latest_actions(client, carol, weak) == ["notify"]
    # Notices, edits and reactions are silent.
    notice = await message(client, alice, room, "beep", msgtype="m.notice")
    edit = await message(client, alice, room, "* hello", **{
        "m.new_content": {"msgtype": "m.text", "body": "hello"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": plain}})
    reaction = await send_event(client, alice, room, "m.reaction", {"m.relates_to": {
        "rel_type": "m.annotation", "event_id": plain, "key": "+1"}}, "r1")
    for event_id in (notice, edit, reaction):
        assert await latest_actions(client, bob, event_id) is None
    # Encrypted events in a group room notify without sound.
    encrypted = await send_event(client, alice, room, "m.room.encrypted",
                                 {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"}, "e1")
    assert await latest_actions(client, bob, encrypted) == ["notify"]
    # A tombstone highlights everyone.
    tombstone = await state(client, alice, room, "m.room.tombstone",
                            {"body": "moved", "replacement_room": "!new:test.local"})
    assert await latest_actions(client, carol, tombstone) == ["notify", highlight]


async def test_one_to_one_rooms_and_invites(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="trusted_private_chat", invite=[bob.user_id],
                        is_direct=True)
    invites = (await notifications(client, bob))["notifications"]
    assert [n["event"]["type"] for n in invites] == ["m.room.member"]
    assert invites[0]["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}]
    r = await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
    assert r.status_code == 200
    sound = {"set_tweak": "sound", "value": "default"}
    dm = await message(client, alice, room, "psst")
    assert await latest_actions(client, bob, dm) == ["notify", sound]
    secret = await send_event(client, alice, room, "m.room.encrypted",
                              {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"}, "e1")
    assert await latest_actions(client, bob, secret) == ["notify", sound]


# --- /notifications ------------------------------------------------------------------------


async def test_notifications_pages_and_read_flags(client: httpx.AsyncClient,
                                                  server: Server) -> None:
    alice, bob, _carol, room = await trio_room(client, server)
    sent = [await message(client, alice, room, f"m{i}" + (" bob" if i % 2 else ""))
            for i in range(5)]
    first = await notifications(client, bob, limit=2)
    assert [n["event"]["event_id"] for n in first["notifications"]] == sent[:2:-1][:2]
    item = first["notifications"][0]
    assert item["room_id"] == room and item["read"] is False and isinstance(item["ts"], int)
    assert "room_id" not in item["event"]
    second = await notifications(client, bob, limit=2, **{"from": first["next_token"]})
    third = await notifications(client, bob, limit=2, **{"from": second["next_token"]})
    got = [n["event"]["event_id"] for page in (first, second, third)
           for n in page["notifications"]]
    assert got == sent[::-1]
    assert "next_token" not in third
    highlights = await notifications(client, bob, only="highlight")
    assert [n["event"]["event_id"] for n in highlights["notifications"]] == [sent[3], sent[1]]
    # A receipt marks everything up to its event read; counts in /sync follow.
    await receipt(client, bob, room, sent[2])
    assert await unread(client, bob, room) == (2, 1)
    flags = [n["read"] for n in (await notifications(client, bob))["notifications"]]
    assert flags == [False, False, True, True, True]
    for bad in ({"limit": "x"}, {"limit": "-1"}, {"from": "nope"}):
        r = await client.get(f"{V3}/notifications", params=bad, headers=bob.headers)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM"), bad
    # Old records are pruned: each user keeps their newest ones.
    assert server.services is not None
    records = server.services.push.notifications
    assert records.prune(keep_per_user=5) == 0
    assert records.prune(keep_per_user=2) == 3 + 3  # bob's and carol's oldest three
    kept = (await notifications(client, bob))["notifications"]
    assert [n["event"]["event_id"] for n in kept] == sent[:2:-1]


# --- pushers ---------------------------------------------------------------------------------


def pusher_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "http", "app_id": "com.example.app.ios", "pushkey": "APA91b",
        "app_display_name": "Mat Rix", "device_display_name": "iPhone 9", "lang": "en",
        "profile_tag": "xxyyzz", "data": {"url": GATEWAY, "format": "event_id_only"}}
    body.update(overrides)
    return body


async def test_pushers_set_list_append_and_remove(client: httpx.AsyncClient,
                                                  server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    r = await client.post(f"{V3}/pushers/set", json=pusher_body(), headers=alice.headers)
    assert r.status_code == 200, r.text
    r = await client.get(f"{V3}/pushers", headers=alice.headers)
    expected = {k: v for k, v in pusher_body().items()}
    assert r.json() == {"pushers": [expected]}
    # Updating keeps one pusher.
    r = await client.post(f"{V3}/pushers/set", json=pusher_body(lang="de"),
                          headers=alice.headers)
    [shown] = (await client.get(f"{V3}/pushers", headers=alice.headers)).json()["pushers"]
    assert shown["lang"] == "de"
    # Another user with the same app and key: append keeps alice's, the default drops it.
    r = await client.post(f"{V3}/pushers/set", json=pusher_body(append=True),
                          headers=bob.headers)
    assert r.status_code == 200
    assert len((await client.get(f"{V3}/pushers", headers=alice.headers)).json()["pushers"]) \
        == 1
    r = await client.post(f"{V3}/pushers/set", json=pusher_body(), headers=bob.headers)
    assert (await client.get(f"{V3}/pushers", headers=alice.headers)).json()["pushers"] == []
    assert len((await client.get(f"{V3}/pushers", headers=bob.headers)).json()["pushers"]) == 1
    # kind null removes; removing what is not there is fine.
    for _ in range(2):
        r = await client.post(f"{V3}/pushers/set", json={
            "kind": None, "app_id": "com.example.app.ios", "pushkey": "APA91b"},
            headers=bob.headers)
        assert r.status_code == 200
    assert (await client.get(f"{V3}/pushers", headers=bob.headers)).json()["pushers"] == []


async def test_pushers_go_with_their_device(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    r = await client.post(f"{V3}/pushers/set", json=pusher_body(), headers=alice.headers)
    assert r.status_code == 200
    r = await client.post(f"{V3}/logout", headers=alice.headers)
    assert r.status_code == 200
    assert server.services is not None
    assert server.services.push.pushers.for_user(alice.user_id) == []


async def test_pusher_errors(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")

    async def post(body: dict[str, Any]) -> tuple[int, str]:
        r = await client.post(f"{V3}/pushers/set", json=body, headers=alice.headers)
        return r.status_code, r.json().get("errcode", "")

    full = pusher_body()
    assert await post({k: v for k, v in full.items() if k != "kind"}) \
        == (400, "M_MISSING_PARAM")
    assert await post({k: v for k, v in full.items() if k != "pushkey"}) \
        == (400, "M_MISSING_PARAM")
    assert await post({k: v for k, v in full.items() if k not in ("lang", "data")}) \
        == (400, "M_MISSING_PARAM")
    assert await post(pusher_body(data={})) == (400, "M_MISSING_PARAM")
    assert await post(pusher_body(kind="email")) == (400, "M_INVALID_PARAM")
    assert await post(pusher_body(kind=5)) == (400, "M_INVALID_PARAM")
    assert await post(pusher_body(app_id="x" * 65)) == (400, "M_INVALID_PARAM")
    assert await post(pusher_body(pushkey="k" * 513)) == (400, "M_INVALID_PARAM")
    assert await post(pusher_body(data="url")) == (400, "M_INVALID_PARAM")
    for url in ("ftp://push.example.org/_matrix/push/v1/notify",
                "https://push.example.org/notify", "not a url", "https:///_matrix/push/v1/notify"):
        assert await post(pusher_body(data={"url": url})) == (400, "M_INVALID_PARAM"), url
    assert await post(pusher_body(data={"url": GATEWAY, "format": "full"})) \
        == (400, "M_INVALID_PARAM")
    assert await post(pusher_body(append="yes")) == (400, "M_INVALID_PARAM")
    assert await post(pusher_body(lang=1)) == (400, "M_INVALID_PARAM")
    r = await client.get(f"{V3}/pushers", headers=alice.headers)
    assert r.json() == {"pushers": []}
    r = await client.get(f"{V3}/pushers")
    assert r.status_code == 401
