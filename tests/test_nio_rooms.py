"""Rooms end to end with a real client: two matrix-nio clients against the server process.

The nio half (``tests/support/nio_rooms_scenario.py``) runs in its own asyncio process and
prints a JSON summary; this test starts the real server, runs it and checks every step of
every room version, collecting all the problems of one run before failing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import nio_rooms_scenario as sc
from tests.support.nio_harness import context_of, nio_server, run_scenario

pytestmark = pytest.mark.slow

TOKEN = "nio-rooms-token-2468"



def test_rooms_driven_by_matrix_nio(tmp_path: Path) -> None:
    with nio_server(tmp_path, TOKEN) as url:
        summary = run_scenario("nio_rooms_scenario", url, TOKEN)
        problems = check(summary)
        assert not problems, "\n".join(problems) + "\n\n" + context_of(summary)


class Checker:
    """Soft assertions: every failed expectation is recorded, none stops the check."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def expect(self, where: str, ok: bool, detail: Any = None) -> bool:
        if not ok:
            self.problems.append(f"{where}: {json.dumps(detail, ensure_ascii=False)[:1500]}")
        return ok

    def equal(self, where: str, got: Any, want: Any) -> bool:
        return self.expect(where, got == want, {"got": got, "want": want})

    def same_ids(self, where: str, got: list[str] | None, want: list[str] | None) -> bool:
        """Two event id sequences; a mismatch is reported as what is missing or extra."""
        got, want = got or [], want or []
        return self.expect(where, got == want, {
            "missing": [i for i in want if i not in got],
            "extra": [i for i in got if i not in want],
            "same_set_other_order": sorted(got) == sorted(want) and got != want,
            "lengths": [len(got), len(want)]})


def check(s: dict[str, Any]) -> list[str]:
    c = Checker()
    if not c.expect("scenario", "exception" not in s, s.get("exception")):
        return c.problems
    alice, bob = s["users"]["alice"], s["users"]["bob"]
    for version in sc.VERSIONS:
        room = s["rooms"].get(version, {})
        check_room(c, f"v{version}", version, room, alice, bob)
    return c.problems


def ok(step: Any, kind: str) -> bool:
    return isinstance(step, dict) and step.get("type") == kind


def check_room(c: Checker, v: str, version: str, r: dict[str, Any], alice: str,
               bob: str) -> None:
    if not c.expect(f"{v} flow", "exception" not in r, r.get("exception")):
        return
    # Creation, invite and join.
    if not c.expect(f"{v} create", ok(r.get("create"), "RoomCreateResponse"), r.get("create")):
        return
    room_id = r["room_id"]
    if version == "12":
        # v12: the room id is the create event's reference hash, no server part.
        c.expect(f"{v} room id", ":" not in room_id, room_id)
    else:
        c.expect(f"{v} room id", room_id.endswith(":test.local"), room_id)
    cs = r.get("create_state", {})
    c.expect(f"{v} create state", "exception" not in cs, cs.get("exception"))
    content = cs.get("content", {})
    c.equal(f"{v} create room_version", content.get("room_version"), version)
    # From v11 on the create event has no ``creator`` (the sender is the creator).
    c.equal(f"{v} create creator", content.get("creator"),
            None if int(version) >= 11 else alice)
    if version == "12":
        c.equal(f"{v} create event id", cs.get("event_id"), "$" + room_id[1:])
    c.expect(f"{v} create event in /state has room_id", cs.get("has_room_id"), cs)
    c.expect(f"{v} GET /event of the create event", ok(cs.get("fetch"), "RoomGetEventResponse"),
             cs.get("fetch"))
    c.expect(f"{v} create event in the first /sync timeline", cs.get("in_sync_timeline"), cs)

    c.expect(f"{v} invite", ok(r.get("invite"), "RoomInviteResponse"), r.get("invite"))
    c.expect(f"{v} invite seen in bob's /sync", r.get("bob_invite_in_sync"), r)
    if not c.expect(f"{v} join", ok(r.get("join"), "JoinResponse"), r.get("join")):
        return
    c.equal(f"{v} join room_id", r["join"].get("room_id"), room_id)
    c.equal(f"{v} members seen by nio", r.get("members_seen"),
            {"alice": sorted([alice, bob]), "bob": sorted([alice, bob])})

    # Messages and state.
    for entry in r.get("sends", []):
        c.expect(f"{v} send {entry.get('label')}", ok(entry, "RoomSendResponse"), entry)
    topic = r.get("topic", {})
    c.expect(f"{v} topic", "exception" not in topic, topic.get("exception"))
    c.expect(f"{v} topic put", ok(topic.get("put"), "RoomPutStateResponse"), topic.get("put"))
    c.equal(f"{v} topic read by bob", topic.get("bob_get", {}).get("content"),
            {"topic": f"Topic v{version}"})
    c.equal(f"{v} topic in bob's nio room", topic.get("bob_room_topic"), f"Topic v{version}")

    # Redaction: the event comes back redacted, content {}, with redacted_because.
    red = r.get("redact", {})
    c.expect(f"{v} redact", "exception" not in red, red.get("exception"))
    c.expect(f"{v} redact sent", ok(red.get("redact"), "RoomRedactResponse"), red.get("redact"))
    fetch = red.get("fetch", {})
    c.equal(f"{v} redacted fetch", {k: fetch.get(k) for k in (
        "type", "event_class", "content", "redacter", "reason", "redacted_because_id")}, {
        "type": "RoomGetEventResponse", "event_class": "RedactedEvent", "content": {},
        "redacter": alice, "reason": "too much",
        "redacted_because_id": r.get("ids", {}).get("redaction")})

    # Edits: the original, fetched, carries its latest replacement (spec v1.7: the
    # whole edit event under unsigned.m.relations.m.replace; content left unchanged).
    ids = r.get("ids", {})
    edit = r.get("edit", {})
    c.expect(f"{v} edit", "exception" not in edit, edit.get("exception"))
    efetch = edit.get("fetch", {})
    c.equal(f"{v} edited original body", efetch.get("body"), f"draft v{version}")
    replace = (efetch.get("relations") or {}).get("m.replace") or {}
    c.equal(f"{v} bundled m.replace", [replace.get("event_id"),
                                       replace.get("content", {}).get("m.new_content")],
            [ids.get("edit"), {"msgtype": "m.text", "body": f"final v{version}"}])

    # Threads: the root carries the thread summary, seen by both participants.
    thread = r.get("thread", {})
    c.expect(f"{v} thread", "exception" not in thread, thread.get("exception"))
    for who in ("alice", "bob"):
        summary = ((thread.get(f"fetch_{who}") or {}).get("relations") or {}).get(
            "m.thread") or {}
        c.equal(f"{v} bundled m.thread seen by {who}", [
            summary.get("count"), summary.get("current_user_participated"),
            (summary.get("latest_event") or {}).get("event_id")],
            [2, True, ids.get("reply_alice")])
    c.equal(f"{v} /threads", thread.get("threads"), [ids.get("root")])
    c.equal(f"{v} /relations of the root", sorted(thread.get("relations_list") or []),
            sorted([ids.get("reply_alice"), ids.get("reply_bob")]))

    check_history(c, v, version, r.get("history", {}), ids)

    ctx = r.get("context", {})
    c.expect(f"{v} context", "exception" not in ctx, ctx.get("exception"))
    c.expect(f"{v} /context", ok(ctx.get("context"), "RoomContextResponse"), ctx.get("context"))
    for name in ("window", "back_from_start", "forward_from_end"):
        got = ctx.get(name)
        if c.expect(f"{v} context {name} ran", got is not None, sorted(ctx)):
            c.same_ids(f"{v} context {name}", got.get("ids"), got.get("expected"))

    # Search: bob finds both greetings and the edit; not the redacted message.
    search = r.get("search", {})
    c.expect(f"{v} search", "exception" not in search, search.get("exception"))
    for name, want in (("hello", [ids.get("b1"), ids.get("a1")]),
                       ("redacted", []), ("edited", [ids.get("edit")]),
                       ("thread", [ids.get("reply_bob")])):
        got = search.get(name, {})
        c.equal(f"{v} search {name}", [got.get("status"), sorted(got.get("ids") or []),
                                       got.get("count")],
                [200, sorted(i for i in want if i), len(want)])

    # Leave and forget.
    leave = r.get("leave", {})
    c.expect(f"{v} leave", "exception" not in leave, leave.get("exception"))
    early = leave.get("forget_while_joined", {})
    c.equal(f"{v} forget while joined", [early.get("http_status"), early.get("errcode")],
            [400, "M_UNKNOWN"])
    c.expect(f"{v} leave", (leave.get("leave") or {}).get("ok"), leave.get("leave"))
    c.expect(f"{v} leave in /sync", leave.get("in_leave_section"), leave)
    c.equal(f"{v} bob's membership seen by alice", leave.get("membership_seen_by_alice"),
            "leave")
    c.expect(f"{v} forget", (leave.get("forget") or {}).get("ok"), leave.get("forget"))
    c.equal(f"{v} joined_rooms after leaving", leave.get("joined_rooms_has_room"), [200, False])
    c.equal(f"{v} forgotten room in an initial /sync", leave.get("initial_sync_sections"), [])


def check_history(c: Checker, v: str, version: str, h: dict[str, Any],
                  ids: dict[str, Any]) -> None:
    c.expect(f"{v} history", "exception" not in h, h.get("exception"))
    back = h.get("back", {})
    pages = back.get("pages", [])
    c.expect(f"{v} /messages dir=b pages", bool(pages) and all(
        ok(p, "RoomMessagesResponse") for p in pages), pages)
    # Full pages carry an end token; the last (the room's beginning) has none.
    c.expect(f"{v} /messages dir=b end tokens",
             bool(pages) and pages[-1].get("end") is None
             and all(p.get("end") for p in pages[:-1]), pages)
    c.equal(f"{v} every sent event in /messages", h.get("has_all_sent"), [])
    c.equal(f"{v} oldest event is the create event", h.get("first_type"), "m.room.create")
    c.same_ids(f"{v} dir=f from the beginning is dir=b reversed",
               h.get("forward", {}).get("ids"), list(reversed(back.get("ids") or [])))
    c.equal(f"{v} redacted event in /messages", h.get("redacted_in_history"),
            {"event_class": "RedactedEvent", "content": {}})
    root = (h.get("root_relations_in_messages") or {}).get("m.thread") or {}
    c.equal(f"{v} bundled m.thread in /messages", [root.get("count"), (
        root.get("latest_event") or {}).get("event_id")], [2, ids.get("reply_alice")])
    replace = (h.get("original_relations_in_messages") or {}).get("m.replace") or {}
    c.equal(f"{v} bundled m.replace in /messages", replace.get("event_id"), ids.get("edit"))
    for name in ("back_from_sync_next_batch", "bounded_forward", "forward_from_back_token",
                 "back_from_forward_token"):
        got = h.get(name)
        if c.expect(f"{v} {name} ran", got is not None, sorted(h)):
            c.same_ids(f"{v} {name}", got.get("ids"), got.get("expected"))
