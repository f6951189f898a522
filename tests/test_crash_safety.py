"""Killing the process during a burst of sends loses no acknowledged event."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.support.config import free_port, write_config
from tests.support.process import ServerProcess

pytestmark = pytest.mark.slow

TOKEN = "crash-token"
V3 = "/_matrix/client/v3"


def _register(base: str, name: str) -> str:
    body = {"username": name, "password": "pw"}
    first = httpx.post(f"{base}{V3}/register", json=body).json()
    auth = {"type": "m.login.registration_token", "token": TOKEN, "session": first["session"]}
    httpx.post(f"{base}{V3}/register", json={**body, "auth": auth})
    done = httpx.post(f"{base}{V3}/register", json={
        **body, "auth": {"type": "m.login.dummy", "session": first["session"]}})
    return str(done.json()["access_token"])


def test_sigkill_during_sends_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port, allow_registration=True,
                          registration_token=TOKEN)
    base = f"http://127.0.0.1:{port}"
    server = ServerProcess(tmp_path, ["-c", str(config)], module="conduwuit")
    acknowledged: list[str] = []
    try:
        server.wait_for("READY=1")
        token = _register(base, "alice")
        headers = {"Authorization": f"Bearer {token}"}
        room = httpx.post(f"{base}{V3}/createRoom", json={}, headers=headers).json()["room_id"]
        stop = threading.Event()

        def sender(index: int) -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=5) as client:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    try:
                        r = client.put(f"{V3}/rooms/{room}/send/m.room.message/{index}-{i}",
                                       json={"msgtype": "m.text", "body": f"{index}-{i}"})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        acknowledged.append(r.json()["event_id"])

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        server.signal(signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(10)
        server.wait()
    finally:
        server.close()
    assert len(acknowledged) > 20

    again = ServerProcess(tmp_path, ["-c", str(config)], module="conduwuit")
    try:
        again.wait_for("READY=1")
        login = httpx.post(f"{base}{V3}/login", json={"type": "m.login.password",
                                                     "user": "alice", "password": "pw"})
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        with httpx.Client(base_url=base, headers=headers) as client:
            for event_id in acknowledged:
                r = client.get(f"{V3}/rooms/{room}/event/{quote(event_id, safe='')}")
                assert r.status_code == 200, event_id
            # The timeline is whole: paginating back reaches the create event, with
            # every acknowledged event on the way and nothing twice.
            seen: list[str] = []
            token_from = None
            while True:
                params = {"dir": "b", "limit": "500", **({"from": token_from} if token_from
                                                          else {})}
                page = client.get(f"{V3}/rooms/{room}/messages", params=params).json()
                seen += [e["event_id"] for e in page["chunk"]]
                if "end" not in page:
                    break
                token_from = page["end"]
            assert len(seen) == len(set(seen))
            assert set(acknowledged) <= set(seen)
            r = client.put(f"{V3}/rooms/{room}/send/m.room.message/after",
                           json={"msgtype": "m.text", "body": "still works"})
            assert r.status_code == 200
        again.signal()
        assert again.wait() == 0
    finally:
        again.close()
