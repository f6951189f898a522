"""Federation with a real Synapse on loopback: keys, signed requests, queries both ways.

Both servers are named by IP literal and port and serve TLS with self-signed
certificates; each is told not to check the other's certificate and not to block
loopback addresses. Synapse comes from PyPI (``tests/support/synapse.py`` caches the
venv); the test is skipped, loudly, only when Synapse cannot be installed.
"""

from __future__ import annotations

import io
import ssl
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
import trustme
from PIL import Image

from conduwuit.config import Config
from conduwuit.protocol import signing
from conduwuit.services.federation.keys import KeyFetch
from conduwuit.services.media import media_key
from tests.support.config import free_port, make_config
from tests.support.fakefed import federation_options
from tests.support.inprocess import running_server
from tests.support.synapse import Synapse, SynapseUnavailable, synapse_python
from tests.support.users import make_user

pytestmark = pytest.mark.slow


async def _synapse_or_skip() -> Path:
    try:
        return await trio.to_thread.run_sync(synapse_python)
    except SynapseUnavailable as exc:
        message = (f"SYNAPSE UNAVAILABLE - the federation acceptance test did NOT run: {exc}")
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)


async def _register(client: httpx.AsyncClient, username: str) -> dict[str, Any]:
    body = {"username": username, "password": "a good password",
            "auth": {"type": "m.login.dummy"}, "initial_device_display_name": "phone"}
    r = await client.post("/_matrix/client/v3/register", json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def _device_keys(user_id: str, device_id: str) -> dict[str, Any]:
    key = signing.generate_signing_key(device_id)
    body = {"user_id": user_id, "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"ed25519:{device_id}": signing.verify_key_base64(key),
                     f"curve25519:{device_id}": signing.verify_key_base64(
                         signing.generate_signing_key("c"))}}
    return signing.sign_json(body, user_id, key)


async def test_federation_with_synapse(tmp_path: Path) -> None:
    python = await _synapse_or_skip()
    ca = trustme.CA()
    synapse = Synapse(tmp_path / "synapse", python, ca)
    await trio.to_thread.run_sync(synapse.start)
    try:
        await _scenario(tmp_path, synapse, ca)
    except BaseException:
        print(synapse.log_tail())
        raise
    finally:
        await trio.to_thread.run_sync(synapse.stop)


def _our_tls_config(tmp_path: Path, ca: trustme.CA) -> tuple[str, Config, ssl.SSLContext]:
    """Our server name (an IP literal with port), its TLS config, and a context trusting it."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "ours.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "ours.key"))
    port = free_port()
    ours = f"127.0.0.1:{port}"
    (tmp_path / "ours").mkdir()
    config = make_config(tmp_path / "ours", server_name=ours, port=port,
                         tls={"certs": str(tmp_path / "ours.pem"),
                              "key": str(tmp_path / "ours.key")},
                         **federation_options())
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    return ours, config, trusted


async def _scenario(tmp_path: Path, synapse: Synapse, ca: trustme.CA) -> None:
    ours, config, trusted = _our_tls_config(tmp_path, ca)
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=f"https://{ours}", verify=trusted, timeout=60) as us, \
            httpx.AsyncClient(base_url=synapse.client_url, timeout=60) as syn, \
            httpx.AsyncClient(base_url=f"https://{synapse.server_name}", verify=trusted,
                              timeout=60) as syn_federation:
        assert server.services is not None
        services = server.services

        # Our side: alice with a display name and a room with an alias.
        alice = await make_user(server, "alice")
        r = await us.put(f"/_matrix/client/v3/profile/{alice.user_id}/displayname",
                         json={"displayname": "Alice of conduwuit"}, headers=alice.headers)
        assert r.status_code == 200, r.text
        r = await us.post("/_matrix/client/v3/createRoom", headers=alice.headers,
                          json={"room_alias_name": "hall", "preset": "public_chat"})
        assert r.status_code == 200, r.text
        our_room = r.json()["room_id"]

        # Synapse's side: bob with a display name, device keys and an aliased room.
        bob = await _register(syn, "bob")
        bob_headers = {"Authorization": f"Bearer {bob['access_token']}"}
        r = await syn.put(f"/_matrix/client/v3/profile/{bob['user_id']}/displayname",
                          json={"displayname": "Bob of Synapse"}, headers=bob_headers)
        assert r.status_code == 200, r.text
        r = await syn.post("/_matrix/client/v3/createRoom", headers=bob_headers,
                           json={"room_alias_name": "lobby", "preset": "public_chat"})
        assert r.status_code == 200, r.text
        synapse_room = r.json()["room_id"]
        bob_keys = _device_keys(bob["user_id"], bob["device_id"])
        r = await syn.post("/_matrix/client/v3/keys/upload", headers=bob_headers,
                           json={"device_keys": bob_keys})
        assert r.status_code == 200, r.text

        # 1. Synapse fetches our keys, verifies them and vouches for them as a notary.
        # (Synapse fetches on a cache miss only when key ids are named.)
        own = services.server_keys
        r = await syn_federation.post("/_matrix/key/v2/query",
                                      json={"server_keys": {ours: {own.key_id: {
                                          "minimum_valid_until_ts": 0}}}})
        assert r.status_code == 200, r.text
        [entry] = r.json()["server_keys"]
        assert entry["server_name"] == ours
        assert entry["verify_keys"] == {own.key_id: {"key": own.verify_key_base64}}
        signing.verify_json(entry, ours, own.key_id, own.verify_key_base64)
        synapse_keys = (await syn_federation.get("/_matrix/key/v2/server")).json()
        for kid, value in synapse_keys["verify_keys"].items():
            signing.verify_json(entry, synapse.server_name, kid, value["key"])

        # 2. A Synapse client reads our user's profile: Synapse signs a federation
        #    query, we fetch Synapse's key to check it, and answer.
        r = await syn.get(f"/_matrix/client/v3/profile/{quote(alice.user_id)}",
                          headers=bob_headers)
        assert r.status_code == 200, r.text
        assert r.json()["displayname"] == "Alice of conduwuit"
        r = await syn.get(f"/_matrix/client/v3/profile/{quote(alice.user_id)}/displayname",
                          headers=bob_headers)
        assert r.json() == {"displayname": "Alice of conduwuit"}
        cached = services.federation.keys.cached(synapse.server_name)
        assert set(cached) == set(synapse_keys["verify_keys"])

        # 3. A Synapse client resolves our alias over federation.
        alias = f"#hall:{ours}"
        r = await syn.get(f"/_matrix/client/v3/directory/room/{quote(alias, safe='')}",
                          headers=bob_headers)
        assert r.status_code == 200, r.text
        assert r.json()["room_id"] == our_room and ours in r.json()["servers"]

        # 4. Our client reads the Synapse user's profile (Synapse verifies our signature).
        r = await us.get(f"/_matrix/client/v3/profile/{quote(bob['user_id'])}",
                         headers=alice.headers)
        assert r.status_code == 200, r.text
        assert r.json()["displayname"] == "Bob of Synapse"
        r = await us.get(f"/_matrix/client/v3/profile/{quote(bob['user_id'])}/displayname")
        assert r.json() == {"displayname": "Bob of Synapse"}
        r = await us.get(f"/_matrix/client/v3/profile/@nobody:{synapse.server_name}")
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")

        # 5. We resolve a Synapse alias.
        queries = services.federation.queries
        found = await queries.resolve_alias(f"#lobby:{synapse.server_name}")
        assert found["room_id"] == synapse_room
        assert synapse.server_name in found["servers"]

        # 6. We query the Synapse user's device keys and devices.
        answer = await queries.keys_query(synapse.server_name, {bob["user_id"]: []})
        device = answer["device_keys"][bob["user_id"]][bob["device_id"]]
        assert device["keys"] == bob_keys["keys"]
        signing.verify_json(device, bob["user_id"], f"ed25519:{bob['device_id']}",
                            bob_keys["keys"][f"ed25519:{bob['device_id']}"])
        devices = await queries.user_devices(bob["user_id"])
        assert [d["device_id"] for d in devices["devices"]] == [bob["device_id"]]

        # 7. Synapse as our notary: our key service verifies its signatures too.
        keys = services.federation.keys
        keys.forget(synapse.server_name)
        await keys.query_notary(synapse.server_name,
                                [KeyFetch(synapse.server_name, frozenset(), 0)])
        assert set(keys.cached(synapse.server_name)) == set(synapse_keys["verify_keys"])


async def test_remote_media_from_synapse(tmp_path: Path) -> None:
    """A file uploaded on Synapse is fetched over authenticated federation media and cached.

    Our client downloads it through ``/_matrix/client/v1/media/download``; our server
    signs ``GET /_matrix/federation/v1/media/download/{mediaId}`` to Synapse and parses
    its multipart answer. Then Synapse is stopped and the file (and a thumbnail made from
    the cached copy) are still served: from the cache.
    """
    python = await _synapse_or_skip()
    ca = trustme.CA()
    synapse = Synapse(tmp_path / "synapse", python, ca)
    await trio.to_thread.run_sync(synapse.start)
    try:
        await _media_scenario(tmp_path, synapse, ca)
    except BaseException:
        print(synapse.log_tail())
        raise
    finally:
        await trio.to_thread.run_sync(synapse.stop)


def _png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(out, "PNG")
    return out.getvalue()


async def _media_scenario(tmp_path: Path, synapse: Synapse, ca: trustme.CA) -> None:
    ours, config, trusted = _our_tls_config(tmp_path, ca)
    picture = _png((640, 480))
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=f"https://{ours}", verify=trusted, timeout=60) as us, \
            httpx.AsyncClient(base_url=synapse.client_url, timeout=60) as syn:
        assert server.services is not None
        media = server.services.media
        alice = await make_user(server, "alice")
        bob = await _register(syn, "carol")
        bob_headers = {"Authorization": f"Bearer {bob['access_token']}"}
        r = await syn.post("/_matrix/media/v3/upload", params={"filename": "sunset.png"},
                           content=picture, headers={**bob_headers, "Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        server_name, media_id = r.json()["content_uri"].removeprefix("mxc://").split("/")
        assert server_name == synapse.server_name
        assert media.info(server_name, media_id) is None

        url = f"/_matrix/client/v1/media/download/{server_name}/{media_id}"
        r = await us.get(url, headers=alice.headers)
        assert r.status_code == 200, r.text
        assert r.content == picture
        assert r.headers["Content-Type"] == "image/png"
        assert "sunset.png" in r.headers["Content-Disposition"]
        info = media.info(server_name, media_id)
        assert info is not None and info.size == len(picture) and info.uploader is None
        assert info.content_type == "image/png" and info.filename == "sunset.png"
        assert media.files.path(media_key(server_name, media_id)).read_bytes() == picture

        # Media Synapse does not have: 404, and nothing cached.
        r = await us.get(f"/_matrix/client/v1/media/download/{server_name}/NoSuchMediaHere",
                         headers=alice.headers)
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), r.text
        assert media.info(server_name, "NoSuchMediaHere") is None

        # Synapse gone: the cached copy is served, and thumbnails are made from it.
        await trio.to_thread.run_sync(synapse.stop)
        r = await us.get(url, headers=alice.headers)
        assert r.status_code == 200 and r.content == picture, r.text
        r = await us.get(f"/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}",
                         params={"width": 96, "height": 96, "method": "scale"},
                         headers=alice.headers)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("image/")
        # ...while media never fetched cannot be (404, quickly, with the reason logged).
        r = await us.get(f"/_matrix/client/v1/media/download/{server_name}/NeverFetched",
                         headers=alice.headers)
        assert r.status_code == 404, r.text
