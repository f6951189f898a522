"""Live /sync with real clients: matrix-nio ``sync_forever`` loops see each other's changes.

The nio half (``tests/support/nio_sync_scenario.py``) runs in its own asyncio process:
alice (two devices) and bob keep long-polling /sync while one of them changes something;
the others' nio callbacks must receive it, parsed into nio's event classes, well before
the long-poll timeout. This test starts the real server, runs it and checks every change,
collecting all the problems of one run before failing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import nio_sync_scenario as sc
from tests.support.nio_harness import context_of, nio_server, run_scenario

pytestmark = pytest.mark.slow

TOKEN = "nio-sync-token-1357"

# Every change, and who must see it (labels as in the scenario's summary).
EXPECTED: dict[str, list[str]] = {
    "message_alice_to_bob": ["bob", "alice2", "alice"],
    "message_bob_to_alice": ["alice", "alice2"],
    "topic": ["bob"],
    "name": ["bob"],
    "typing_on": ["alice"],
    "typing_off": ["alice"],
    "typing_expires": ["alice_typing", "alice_expired"],
    "receipt_threaded_main": ["bob"],
    "read_markers_bob": ["alice_receipt", "bob_fully_read"],
    "read_markers_private": ["alice2_private_receipt", "alice2_fully_read"],
    "presence_online": ["bob"],
    "presence_unavailable": ["bob"],
    "tag_put": ["alice2"],
    "tag_delete": ["alice2"],
    "global_account_data": ["alice2"],
    "room_account_data": ["alice2"],
    "redaction": ["alice"],
    "invite": ["bob"],
    "join": ["alice"],
    "final_message": ["bob", "alice2"],
}



def test_two_nio_clients_see_each_other_live(tmp_path: Path) -> None:
    with nio_server(tmp_path, TOKEN,
                    # A 1 s floor on typing periods lets the scenario watch one expire.
                    typing_client_timeout_min_s=1) as url:
        summary = run_scenario("nio_sync_scenario", url, TOKEN)
        problems = check(summary)
        assert not problems, "\n".join(problems) + "\n\n" + context_of(summary)


def check(s: dict[str, Any]) -> list[str]:
    problems: list[str] = []

    def expect(where: str, ok: bool, detail: Any = None) -> None:
        if not ok:
            problems.append(f"{where}: {json.dumps(detail, ensure_ascii=False)[:2000]}")

    expect("scenario", "exception" not in s, s.get("exception"))
    for key in ("alice2_login", "create", "join"):
        expect(key, key in s and "Error" not in s[key]["type"], s.get(key))
    expect("initial sync", "initial_sync_error" not in s, s.get("initial_sync_error"))
    if problems:
        return problems
    alice, bob = s["users"]["alice"], s["users"]["bob"]

    checks = s.get("checks", {})
    for name, observers in EXPECTED.items():
        out = checks.get(name)
        if out is None:
            problems.append(f"{name}: never ran")
            continue
        expect(f"{name} raised", "exception" not in out, out.get("exception"))
        action = out.get("action", {})
        expect(f"{name} action", action.get("status", 200) == 200
               and "Error" not in action.get("type", ""), action)
        for label in observers:
            seen = out.get(label, {})
            # Arrival within sc.ARRIVAL_S of a LONG_POLL_MS long-poll: the server woke it.
            expect(f"{name}: {label} never saw it live", seen.get("arrived"), seen)

    # What nio did with what it received.
    expect("nio room state from /sync", s.get("bob_room_state") ==
           {"topic": "live topic", "name": "Renamed"}, s.get("bob_room_state"))
    expect("nio typing users", s.get("alice_typing_users") == [bob], s.get("alice_typing_users"))
    expect("nio member presence", s.get("bob_room_member_presence") == ["unavailable", "away"],
           s.get("bob_room_member_presence"))
    presence = s.get("bob_get_presence", {})
    expect("GET presence", [presence.get("type"), presence.get("presence"),
                            presence.get("status_msg")]
           == ["PresenceGetResponse", "unavailable", "away"], presence)

    # Shapes worth pinning beyond "nio parsed it".
    receipt = (checks.get("receipt_threaded_main", {}).get("bob", {}).get("item") or {})
    expect("threaded receipt shape", any(
        r["user_id"] == alice and r["thread_id"] == "main" and r["ts_is_int"]
        for r in receipt.get("receipts", [])), receipt)
    online = checks.get("presence_online", {}).get("bob", {}).get("item") or {}
    expect("presence shape", online.get("last_active_ago_is_int")
           and online.get("currently_active") is True, online)
    expect("status message", online.get("status_msg") == sc.STATUS, online)

    # Privacy: alice's account data and private receipt never reached bob.
    expect("bob saw alice's private data", s.get("bob_saw_alice_private") == [],
           s.get("bob_saw_alice_private"))
    expect("callback errors", not any(s.get("callback_errors", {}).values()),
           s.get("callback_errors"))
    expect("sync loops stopped", s.get("loops") == ["stopped"] * 3, s.get("loops"))
    return problems
