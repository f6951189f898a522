"""A real client end to end: matrix-nio against the real server process.

nio runs on asyncio, so its half (``tests/support/nio_scenario.py``) runs in its own Python
process and reports a JSON summary; this test starts the server, runs it and asserts on
every step. No Trio is involved on the client side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import nio_scenario as sc
from tests.support.nio_harness import context_of, nio_server, run_scenario

pytestmark = pytest.mark.slow

TOKEN = "nio-token-5678"



def test_matrix_nio_end_to_end(tmp_path: Path) -> None:
    with nio_server(tmp_path, TOKEN) as url:
        summary = run_scenario("nio_scenario", url, TOKEN)
        check(summary, context_of(summary))


def check(s: dict[str, Any], context: str) -> None:
    user_id = f"@{sc.USERNAME}:test.local"

    # 1. Registration with the token: a 401 challenge offering the token stage, then
    # an account with an access token, and the nio client logged in as it.
    reg = s["register"]
    assert reg["challenge"]["type"] == "RegisterInteractiveResponse", context
    assert reg["challenge"]["http_status"] == 401, context
    assert sc.TOKEN_STAGE in reg["challenge"]["stages"], context
    assert reg["challenge"]["has_session"], context
    assert reg["result"]["type"] == "RegisterResponse", context
    assert reg["result"]["user_id"] == user_id and reg["result"]["has_token"], context
    assert reg["client_logged_in"], context
    ids = s["ids"]
    assert ids["first_device"] == reg["result"]["device_id"], context

    # 2. Password login on a second client: a new device.
    assert s["login"]["type"] == "LoginResponse", context
    assert s["login"]["user_id"] == user_id and s["login"]["new_device"], context

    # 3. whoami on both clients names the user and each client's own device.
    who = s["whoami"]
    assert "exception" not in who, context
    assert who["second"] == {"type": "WhoamiResponse", "http_status": 200,
                             "user_id": user_id, "device_id": ids["second_device"],
                             "is_guest": False}, context
    assert who["first"]["device_id"] == ids["first_device"], context

    # 4. Profile: set on one client, read back on the other.
    prof = s["profile"]
    assert "exception" not in prof, context
    assert prof["set_displayname"]["ok"] and prof["set_avatar"]["ok"], context
    assert prof["get_displayname"]["displayname"] == sc.DISPLAY_NAME, context
    assert prof["get_avatar"]["avatar_url"] == sc.AVATAR, context
    assert prof["get_profile"]["type"] == "ProfileGetResponse", context
    assert (prof["get_profile"]["displayname"], prof["get_profile"]["avatar_url"]) == (
        sc.DISPLAY_NAME, sc.AVATAR), context

    # 5. Devices: both listed with their names; a rename shows up for the other client.
    dev = s["devices"]
    assert "exception" not in dev, context
    assert dev["list"]["type"] == "DevicesResponse", context
    assert dev["list"]["devices"] == {ids["first_device"]: sc.DEVICE_NAME,
                                      ids["second_device"]: "nio phone"}, context
    assert dev["update"]["ok"], context
    assert dev["after"]["devices"][ids["first_device"]] == sc.NEW_DEVICE_NAME, context

    # 6. Global account data: written by one client, read back by the other; an unset
    # type is 404; m.direct is what nio's list_direct_rooms() parses.
    ad = s["account_data"]
    assert "exception" not in ad, context
    assert ad["put_custom"] == [200, {}], context
    assert ad["get_custom"] == [200, sc.CUSTOM_CONTENT], context
    assert ad["get_unset_status"] == 404, context
    assert ad["put_direct"] == [200, {}], context
    assert ad["list_direct_rooms"]["type"] == "DirectRoomsResponse", context
    assert ad["list_direct_rooms"]["matches"], context

    # 7. Logout: the old token is refused, the other device is unaffected and the
    # logged-out device is gone.
    out = s["logout"]
    assert "exception" not in out, context
    assert out["logout"]["ok"] and out["client_token_cleared"], context
    assert out["old_token_whoami"] == {
        "type": "WhoamiError", "http_status": 401, "errcode": "M_UNKNOWN_TOKEN",
        "message": out["old_token_whoami"]["message"]}, context
    assert out["other_device_whoami"]["type"] == "WhoamiResponse", context
    assert out["devices_after"] == [ids["first_device"]], context
