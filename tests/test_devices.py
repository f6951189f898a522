"""Devices: list, rename, delete with UIA, last-seen batching."""

from __future__ import annotations

import httpx

from conduwuit.server import Server
from tests.support.users import LoggedIn, make_user
from tests.test_login import auth, login, uia

V3 = "/_matrix/client/v3"


async def test_list_get_rename(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    r = await client.get(f"{V3}/devices", headers=auth(alice))
    [device] = r.json()["devices"]
    assert device["device_id"] == alice.device_id
    assert device["display_name"] == "test device"
    assert device["last_seen_ip"] == "127.0.0.1" and device["last_seen_ts"] > 0
    url = f"{V3}/devices/{alice.device_id}"
    r = await client.put(url, json={"display_name": "Laptop"}, headers=auth(alice))
    assert r.status_code == 200
    r = await client.get(url, headers=auth(alice))
    assert r.json()["display_name"] == "Laptop"
    r = await client.put(url, json={"display_name": "x" * 101}, headers=auth(alice))
    assert (r.status_code, r.json()["errcode"]) == (400, "M_TOO_LARGE")
    r = await client.put(url, json={"display_name": 5}, headers=auth(alice))
    assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON")
    for method in ("GET", "PUT"):
        r = await client.request(method, f"{V3}/devices/NOPE", json={"display_name": "a"},
                                 headers=auth(alice))
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")


async def test_other_users_devices_are_invisible(client: httpx.AsyncClient,
                                                 server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    r = await client.get(f"{V3}/devices/{alice.device_id}", headers=auth(bob))
    assert r.status_code == 404


async def test_delete_device_revokes_its_token(client: httpx.AsyncClient,
                                               server: Server) -> None:
    alice = await make_user(server, "alice", "pw")
    phone = (await login(client, user="alice", password="pw")).json()
    r = await uia(client, f"{V3}/devices/{phone['device_id']}", alice, {}, method="DELETE")
    assert r.status_code == 200, r.text
    r = await client.get(f"{V3}/account/whoami", headers=auth(phone["access_token"]))
    assert r.status_code == 401
    r = await client.request("DELETE", f"{V3}/devices/NOPE", json={}, headers=auth(alice))
    assert r.status_code == 404


async def test_delete_devices(client: httpx.AsyncClient, server: Server) -> None:
    alice: LoggedIn = await make_user(server, "alice", "pw")
    ids = [(await login(client, user="alice", password="pw")).json()["device_id"]
           for _ in range(2)]
    r = await uia(client, f"{V3}/delete_devices", alice, {"devices": ids}, password="bad")
    assert (r.status_code, r.json()["errcode"]) == (401, "M_FORBIDDEN")
    r = await uia(client, f"{V3}/delete_devices", alice, {"devices": "all"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON")
    r = await uia(client, f"{V3}/delete_devices", alice, {"devices": ids})
    assert r.status_code == 200
    r = await client.get(f"{V3}/devices", headers=auth(alice))
    assert [d["device_id"] for d in r.json()["devices"]] == [alice.device_id]


async def test_last_seen_is_batched(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    assert server.services is not None
    devices = server.services.devices
    devices.flush_last_seen()
    stored_before = server.services.store.tree("userdeviceid_metadata").count()
    await client.get(f"{V3}/account/whoami", headers=auth(alice))
    # Seen in memory (and shown by GET /devices) but not yet written.
    assert devices.flush_last_seen() == 1
    assert devices.flush_last_seen() == 0
    assert server.services.store.tree("userdeviceid_metadata").count() == stored_before
