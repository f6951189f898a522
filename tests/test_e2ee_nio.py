"""End-to-end encryption with a real client: matrix-nio[e2e] (vodozemac) against the server.

The nio half (``tests/support/nio_e2ee_scenario.py``) runs in its own process on asyncio
and reports a JSON summary; this test starts the real server process and checks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import nio_e2ee_scenario as sc
from tests.support.nio_harness import context_of, nio_server, run_scenario

pytestmark = pytest.mark.slow

TOKEN = "nio-e2ee-token-4321"



def test_encrypted_conversation_and_backup_restore(tmp_path: Path) -> None:
    with nio_server(tmp_path, TOKEN) as url:
        summary = run_scenario("nio_e2ee_scenario", url, TOKEN, str(tmp_path / "stores"))
        check(summary, context_of(summary))


def check(s: dict[str, Any], context: str) -> None:
    assert "exception" not in s, context
    alice_id, alice_device = s["ids"]["alice"]
    bob_id, bob_device = s["ids"]["bob"]

    # Keys uploaded; the room is encrypted for both; each trusts the other's device.
    for label in ("alice", "bob"):
        assert s["keys_upload"][label]["type"] == "KeysUploadResponse", context
    assert s["room_encrypted"] == {"alice": True, "bob": True}, context
    assert s["verified"] == {"alice_verified": [bob_device],
                             "bob_verified": [alice_device]}, context

    # The server only ever held ciphertext.
    assert s["send"]["type"] == "RoomSendResponse", context
    assert s["on_the_server"] == {"status": 200, "type": "m.room.encrypted",
                                  "algorithm": "m.megolm.v1.aes-sha2",
                                  "plaintext_visible": False}, context

    # Both decrypt alice's message; alice decrypts bob's answer.
    assert s["bob_decrypted"] is True, context
    assert s["alice_decrypted_own"] is True, context
    assert s["answer"]["type"] == "RoomSendResponse", context
    assert s["alice_decrypted_answer"] is True, context
    assert {"type": "RoomMessageText", "body": sc.SECRET, "decrypted": True} in s["bob_seen"], \
        context
    assert not any(e["type"] == "MegolmEvent" for e in s["bob_seen"]), context

    # Backup: a third device of alice cannot read the message until it restores the key.
    b = s["backup"]
    assert b["create"] == [200, {"version": "1"}], context
    assert b["sessions_uploaded"] >= 1, context
    assert b["upload"][0] == 200 and b["upload"][1]["count"] == b["sessions_uploaded"], context
    assert b["third_login"]["type"] == "LoginResponse" and b["third_device_is_new"], context
    assert b["third_sees_undecryptable"] >= 1, context
    assert b["current_version"] == [200, "1", b["sessions_uploaded"]], context
    assert b["restored"] == b["sessions_uploaded"], context
    assert ["RoomMessageText", sc.SECRET] in b["third_decrypted"], context
    assert alice_id != bob_id
