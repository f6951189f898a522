"""The admin room with a real client: matrix-nio (its own process) sends commands of every
group to the bot of a real server process and reads the replies from /sync; a non-admin's
commands are not run; a banned room evicts and refuses; media deletion removes the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.nio_harness import context_of, nio_server, run_scenario

pytestmark = pytest.mark.slow

TOKEN = "nio-admin-token-1357"


def body_of(reply: Any) -> str:
    return str(reply.get("body")) if isinstance(reply, dict) else ""


def test_admin_room_driven_by_matrix_nio(tmp_path: Path) -> None:
    with nio_server(tmp_path, TOKEN) as url:
        s = run_scenario("nio_admin_scenario", url, TOKEN)
    where = context_of(s)
    assert "exception" not in s, where
    assert s["alice_joined"], where
    replies = s["replies"]
    for name, reply in replies.items():
        assert isinstance(reply, dict), f"no reply to {name}\n{where}"
        assert reply["sender"] == "@conduit:test.local" and reply["msgtype"] == "m.notice"
        assert reply["format"] == "org.matrix.custom.html" and reply["formatted_body"]
    assert "@alice:test.local" in body_of(replies["users"]), where
    assert "joined member(s)" in body_of(replies["rooms"]), where
    assert "incoming federation disabled" in body_of(replies["federation"]), where
    jobs = body_of(replies["server"])
    for job in ("admin/commands", "sender/federation", "devices/last-seen", "typing/expiry"):
        assert f"`{job}`: **running**" in jobs, where
    assert body_of(replies["debug"]) == "hello from nio", where
    assert "appservice(s)" in body_of(replies["appservices"]), where
    assert "create-user" in body_of(replies["help"]), where
    assert body_of(replies["bad"]).startswith("**Error**: Unknown command"), where
    assert body_of(replies["media"]).startswith("Deleted 1 file(s)"), where
    assert s["download_failed"], where
    # Non-admins: a refusal, nothing run.
    assert s["bob_join_admin_room"]["type"] == "JoinResponse", where
    assert body_of(s["bob_reply"]) == "Only server admins may run admin commands.", where
    assert "mallory" not in body_of(s["users_after_bob"]), where
    # The banned room.
    assert s["bob_join_before"]["type"] == "JoinResponse", where
    assert "2 local user(s) made to leave" in body_of(s["ban_reply"]), where
    assert s["members_after_ban"]["status"] == 403, where  # alice is out too
    assert not s["bob_join_after_ok"] and s["bob_join_after"].get("errcode") == "M_FORBIDDEN"
    assert s["invite_after"]["status"] == 403, where
    assert s["bob_rooms"] == [s["admin_room"]], where
