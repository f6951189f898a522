"""What reaches the disk and the log: no clear passwords, hashed tokens, and restarts."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from conduwuit.store import Store
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.test_register import TOKEN, V3, register

PASSWORD = "a very secret passphrase"


def all_bytes(store: Store) -> bytes:
    """Every key and value of every tree, concatenated."""
    raw = store._db  # reaching below the tree API on purpose: nothing may hide anywhere
    return b"".join(key + value for key, value in raw.iterator())


async def test_secrets_never_stored_or_logged_in_clear(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, allow_registration=True, registration_token=TOKEN)
    caplog.set_level(logging.DEBUG)
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        r = await register(client, username="alice", password=PASSWORD, refresh_token=True)
        reply = r.json()
        r = await client.post(f"{V3}/login", json={"type": "m.login.password", "user": "alice",
                                                   "password": PASSWORD})
        login_token = r.json()["access_token"]
        assert server.services is not None
        store = server.services.store
        content = all_bytes(store)
        for secret in (PASSWORD, reply["access_token"], reply["refresh_token"], login_token):
            assert secret.encode() not in content
            assert secret not in caplog.text
        stored_hash = store.tree("userid_password").get(b"@alice:test.local")
        assert stored_hash is not None and stored_hash.startswith(b"$argon2id$")


async def test_restart_keeps_accounts_devices_and_tokens(tmp_path: Path) -> None:
    config = make_config(tmp_path, allow_registration=True, registration_token=TOKEN)
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        reply = (await register(client, username="alice", password=PASSWORD,
                                initial_device_display_name="Phone")).json()
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        headers = {"Authorization": f"Bearer {reply['access_token']}"}
        r = await client.get(f"{V3}/account/whoami", headers=headers)
        assert r.json()["device_id"] == reply["device_id"]
        r = await client.get(f"{V3}/devices", headers=headers)
        [device] = r.json()["devices"]
        assert device["display_name"] == "Phone"
        assert device["last_seen_ts"] > 0
        r = await client.post(f"{V3}/login", json={"type": "m.login.password", "user": "alice",
                                                   "password": PASSWORD})
        assert r.status_code == 200
        assert server.services is not None
        assert server.services.users.is_admin("@alice:test.local")
