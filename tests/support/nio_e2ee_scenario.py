"""Two matrix-nio clients with encryption, plus a third device restoring keys from backup.

Run as ``python -m tests.support.nio_e2ee_scenario HOMESERVER_URL REGISTRATION_TOKEN
STORE_DIR``. It prints one JSON object on stdout describing every step; the test
(``tests/test_e2ee_nio.py``) starts the server and asserts on it.

1. alice and bob register (each on their own nio client with a crypto store) and upload
   device and one-time keys.
2. alice creates an encrypted room and invites bob, who joins; both query keys and
   verify (trust) each other's devices.
3. alice sends an encrypted message (nio claims a one-time key of bob's device, sends the
   room key to-device, then the megolm event); both see it decrypted as
   ``RoomMessageText``. bob answers and alice decrypts the answer.
4. Key backup. nio 0.26 has no server-side key backup, so that client part is done here
   with vodozemac's ``PkEncryption`` (the ``m.megolm_backup.v1.curve25519-aes-sha2``
   scheme) and nio's own session objects: alice's first device creates a backup version
   and uploads its megolm session; a third device of alice logs in, cannot decrypt the
   old message, restores the session from the server's backup and then decrypts it.

nio is asyncio-only: this module runs in its own process, never under Trio.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import vodozemac
from nio import (
    Api,
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    JoinResponse,
    LoginResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)
from nio.crypto.sessions import InboundGroupSession
from nio.event_builders import EnableEncryptionBuilder

from tests.support.nio_common import run_scenario

PASSWORD = "e2ee correct horse battery"
SECRET = "the eagle flies at midnight 🦅"
ANSWER = "understood, bringing snacks"
BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
MEGOLM = "m.megolm.v1.aes-sha2"
LONG_TIMELINE = {"room": {"timeline": {"limit": 50}}}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def describe(resp: object) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(resp).__name__}
    if isinstance(resp, ErrorResponse):
        out.update(errcode=resp.status_code, message=resp.message)
    return out


def config() -> AsyncClientConfig:
    return AsyncClientConfig(max_timeouts=1, max_limit_exceeded=0, request_timeout=20,
                             max_timeout_retry_wait_time=1, encryption_enabled=True,
                             store_sync_tokens=True)


async def raw(client: AsyncClient, method: str, path: str, body: Any = None,
              **query: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {client.access_token}",
               "Content-Type": "application/json"}
    resp = await client.send(method, Api._build_path(path.strip("/").split("/"), query),
                             None if body is None else Api.to_json(body), headers)
    return resp.status, await resp.json(content_type=None)


async def housekeeping(client: AsyncClient) -> None:
    """What ``sync_forever`` does between syncs: keys up, keys down, to-device out."""
    await client.send_to_device_messages()
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())


async def sync(client: AsyncClient, timeout: int = 0) -> SyncResponse:
    resp = await client.sync(timeout=timeout, sync_filter=LONG_TIMELINE)
    if not isinstance(resp, SyncResponse):
        raise AssertionError(f"sync failed: {describe(resp)}")
    await housekeeping(client)
    return resp


async def wait_for_text(client: AsyncClient, room_id: str, body: str,
                        seen: list[dict[str, Any]], rounds: int = 10) -> bool:
    """Sync until ``body`` shows up in the room; every timeline event is noted in ``seen``."""
    for _ in range(rounds):
        resp = await sync(client, timeout=2000)
        room = resp.rooms.join.get(room_id)
        for event in room.timeline.events if room is not None else []:
            if isinstance(event, (RoomMessageText, MegolmEvent)):
                seen.append({"type": type(event).__name__,
                             "body": getattr(event, "body", None),
                             "decrypted": bool(getattr(event, "decrypted", False))})
            if isinstance(event, RoomMessageText) and event.body == body:
                return True
    return False


async def register(homeserver: str, token: str, name: str, store: Path) -> AsyncClient:
    store.mkdir(parents=True, exist_ok=True)
    client = AsyncClient(homeserver, store_path=str(store), config=config())
    resp = await client.register_with_token(name, PASSWORD, token, f"{name}'s laptop")
    if not isinstance(resp, RegisterResponse):
        await client.close()
        raise AssertionError(f"registering {name}: {describe(resp)}")
    return client


def verify_all(client: AsyncClient, user_id: str) -> list[str]:
    verified = []
    for device in client.device_store.active_user_devices(user_id):
        client.verify_device(device)
        verified.append(device.id)
    return sorted(verified)


async def scenario(homeserver: str, token: str, store_dir: Path, summary: dict[str, Any]) -> None:
    alice = await register(homeserver, token, "alice", store_dir / "alice")
    bob = await register(homeserver, token, "bob", store_dir / "bob")
    third: AsyncClient | None = None
    try:
        summary["ids"] = {"alice": [alice.user_id, alice.device_id],
                          "bob": [bob.user_id, bob.device_id]}
        # 1. Keys up.
        uploads = {}
        for label, client in (("alice", alice), ("bob", bob)):
            resp = await client.keys_upload()
            uploads[label] = describe(resp)
            uploads[label]["counts"] = getattr(resp, "signed_curve25519_count", None)
            await sync(client)
        summary["keys_upload"] = uploads

        # 2. The encrypted room; verification both ways.
        created = await alice.room_create(name="Secret plans", invite=[bob.user_id],
                                          initial_state=[EnableEncryptionBuilder().as_dict()])
        summary["create"] = describe(created)
        assert isinstance(created, RoomCreateResponse), summary
        room_id = created.room_id
        await sync(bob)
        joined = await bob.join(room_id)
        summary["join"] = describe(joined)
        assert isinstance(joined, JoinResponse), summary
        for client in (alice, bob, alice, bob):
            await sync(client)
        summary["room_encrypted"] = {"alice": alice.rooms[room_id].encrypted,
                                     "bob": bob.rooms[room_id].encrypted}
        summary["verified"] = {"alice_verified": verify_all(alice, bob.user_id),
                               "bob_verified": verify_all(bob, alice.user_id)}

        # 3. alice writes, both read; bob answers, alice reads.
        sent = await alice.room_send(room_id, "m.room.message",
                                     {"msgtype": "m.text", "body": SECRET})
        summary["send"] = describe(sent)
        assert isinstance(sent, RoomSendResponse), summary
        status, event = await raw(bob, "GET", f"rooms/{room_id}/event/{sent.event_id}")
        summary["on_the_server"] = {"status": status, "type": event.get("type"),
                                    "algorithm": event.get("content", {}).get("algorithm"),
                                    "plaintext_visible": SECRET in json.dumps(event)}
        bob_seen: list[dict[str, Any]] = []
        alice_seen: list[dict[str, Any]] = []
        summary["bob_decrypted"] = await wait_for_text(bob, room_id, SECRET, bob_seen)
        summary["alice_decrypted_own"] = await wait_for_text(alice, room_id, SECRET,
                                                             alice_seen)
        answer = await bob.room_send(room_id, "m.room.message",
                                     {"msgtype": "m.text", "body": ANSWER})
        summary["answer"] = describe(answer)
        summary["alice_decrypted_answer"] = await wait_for_text(alice, room_id, ANSWER,
                                                                alice_seen)
        summary["bob_seen"], summary["alice_seen"] = bob_seen, alice_seen

        # 4. Backup by alice's first device, restore on a third device.
        recovery = vodozemac.PkDecryption()
        backup: dict[str, Any] = {}
        summary["backup"] = backup
        status, created_version = await raw(alice, "POST", "room_keys/version", {
            "algorithm": BACKUP_ALGORITHM,
            "auth_data": {"public_key": recovery.public_key.to_base64()}})
        backup["create"] = [status, created_version]
        version = created_version["version"]
        encrypt = vodozemac.PkEncryption.from_key(recovery.public_key)
        sessions: dict[str, Any] = {}
        assert alice.olm is not None
        for session in alice.olm.inbound_group_store:
            if session.room_id != room_id:
                continue
            payload = {"algorithm": MEGOLM, "sender_key": session.sender_key,
                       "sender_claimed_keys": {"ed25519": session.ed25519},
                       "forwarding_curve25519_key_chain": session.forwarding_chain,
                       "session_key": session.export_session(session.first_known_index)}
            message = encrypt.encrypt(json.dumps(payload).encode())
            sessions[session.id] = {
                "first_message_index": session.first_known_index, "forwarded_count": 0,
                "is_verified": True,
                "session_data": {"ciphertext": b64(message.ciphertext), "mac": b64(message.mac),
                                 "ephemeral": b64(message.ephemeral_key)}}
        backup["sessions_uploaded"] = len(sessions)
        backup["upload"] = list(await raw(alice, "PUT", "room_keys/keys",
                                          {"rooms": {room_id: {"sessions": sessions}}},
                                          version=version))

        (store_dir / "alice3").mkdir(parents=True, exist_ok=True)
        third = AsyncClient(homeserver, alice.user_id, store_path=str(store_dir / "alice3"),
                            config=config())
        login = await third.login(PASSWORD, device_name="alice's new phone")
        backup["third_login"] = describe(login)
        assert isinstance(login, LoginResponse), summary
        backup["third_device_is_new"] = login.device_id != alice.device_id
        resp = await sync(third)
        room = resp.rooms.join.get(room_id)
        undecryptable = [e for e in (room.timeline.events if room else [])
                         if isinstance(e, MegolmEvent)]
        backup["third_sees_undecryptable"] = len(undecryptable)
        status, current = await raw(third, "GET", "room_keys/version")
        backup["current_version"] = [status, current.get("version"), current.get("count")]
        status, stored = await raw(third, "GET", "room_keys/keys", version=current["version"])
        backup["download_status"] = status
        assert third.olm is not None
        restored = 0
        for session_id, data in stored["rooms"].get(room_id, {}).get("sessions", {}).items():
            enc = data["session_data"]
            plain = json.loads(recovery.decrypt(vodozemac.Message.from_base64(
                enc["ciphertext"], enc["mac"], enc["ephemeral"])))
            session = InboundGroupSession.import_session(
                plain["session_key"], plain["sender_claimed_keys"]["ed25519"],
                plain["sender_key"], room_id, plain["forwarding_curve25519_key_chain"])
            if session.id == session_id and third.olm.inbound_group_store.add(session):
                third.olm.save_inbound_group_session(session)
                restored += 1
        backup["restored"] = restored
        texts = []
        for event in undecryptable:
            decrypted = third.decrypt_event(event)
            texts.append([type(decrypted).__name__, getattr(decrypted, "body", None)])
        backup["third_decrypted"] = texts
    finally:
        for client in (alice, bob, third):
            if client is not None:
                await client.close()


def main(argv: list[str]) -> int:
    homeserver, token, store_dir = argv
    return run_scenario(lambda summary: scenario(homeserver, token, Path(store_dir), summary))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
