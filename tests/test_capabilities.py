"""GET /capabilities over a real server, with the settings that change its answer."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conduwuit.handlers.client import capabilities
from conduwuit.protocol.room_versions import DEFAULT_ROOM_VERSION
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import make_user

# Room versions 1-12 are all stable in the spec and all supported here.
STABLE = {str(v): "stable" for v in range(1, 13)}


@pytest.mark.parametrize("prefix", ["/_matrix/client/v3", "/_matrix/client/r0"])
async def test_default_capabilities(tmp_path: Path, prefix: str) -> None:
    async with running_server(make_config(tmp_path)) as server, httpx.AsyncClient(
        base_url=server.bound[0]
    ) as client:
        alice = await make_user(server, "alice")
        r = await client.get(f"{prefix}/capabilities", headers=alice.headers)
        assert r.status_code == 200, r.text
        caps = r.json()["capabilities"]
    assert caps["m.change_password"] == {"enabled": True}
    assert caps["m.set_displayname"] == {"enabled": True}
    assert caps["m.set_avatar_url"] == {"enabled": True}
    assert caps["m.profile_fields"] == {"enabled": True}
    assert caps["m.3pid_changes"] == {"enabled": False}
    assert caps["m.get_login_token"] == {"enabled": True}
    assert caps["m.forget_forced_upon_leave"] == {"enabled": False}
    versions = caps["m.room_versions"]
    assert versions == {"default": DEFAULT_ROOM_VERSION, "available": STABLE}


async def test_capabilities_follow_the_config(tmp_path: Path) -> None:
    config = make_config(tmp_path, login_via_existing_session=False, default_room_version="10",
                         allow_unstable_room_versions=False, forget_forced_upon_leave=True)
    async with running_server(config) as server, httpx.AsyncClient(
        base_url=server.bound[0]
    ) as client:
        alice = await make_user(server, "alice")
        r = await client.get("/_matrix/client/v3/capabilities", headers=alice.headers)
        caps = r.json()["capabilities"]
    assert caps["m.get_login_token"] == {"enabled": False}
    assert caps["m.forget_forced_upon_leave"] == {"enabled": True}
    assert caps["m.room_versions"] == {"default": "10", "available": STABLE}


async def test_capabilities_need_a_token(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as server, httpx.AsyncClient(
        base_url=server.bound[0]
    ) as client:
        r = await client.get("/_matrix/client/v3/capabilities")
        assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
        r = await client.get("/_matrix/client/v3/capabilities",
                             headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"


def test_unstable_versions_are_listed_only_when_allowed(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities, "UNSTABLE_ROOM_VERSIONS", frozenset({"12"}))
    allowed = make_config(tmp_path, allow_unstable_room_versions=True)
    assert capabilities.available_room_versions(allowed) == {**STABLE, "12": "unstable"}
    refused = make_config(tmp_path, allow_unstable_room_versions=False,
                          default_room_version="11")
    available = capabilities.available_room_versions(refused)
    assert "12" not in available and available["11"] == "stable"
