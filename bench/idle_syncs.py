"""Message sends stay fast while 1,000 long-polling /sync requests wait.

Starts the server, registers users, parks N idle `/sync?timeout=60000` requests
(each on its own connection, all users in one room so every send wakes them),
then measures send latency p50/p99 of messages into a *different* room while the
long-polls wait. Target: p99 under 50 ms with 1,000 waiting. Results in
bench/results/idle_syncs.json.
"""

from __future__ import annotations

import statistics
import sys
import time

import httpx
import trio

from bench.common import (
    machine,
    measure_against_server,
    write_result,
)

TOKEN = "bench-token"
WAITERS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
USERS = 20
SENDS = 200


async def register(client: httpx.AsyncClient, name: str) -> str:
    body = {"username": name, "password": "pw"}
    first = (await client.post("/_matrix/client/v3/register", json=body)).json()
    for stage in ({"type": "m.login.registration_token", "token": TOKEN},
                  {"type": "m.login.dummy"}):
        r = await client.post("/_matrix/client/v3/register",
                              json={**body, "auth": {**stage, "session": first["session"]}})
    return str(r.json()["access_token"])


async def measure(base: str) -> dict[str, object]:
    limits = httpx.Limits(max_connections=WAITERS + 50, max_keepalive_connections=WAITERS + 50)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        tokens = [await register(client, f"idle{i}") for i in range(USERS)]
        sender = tokens[0]
        auth = {"Authorization": f"Bearer {sender}"}
        busy = (await client.post("/_matrix/client/v3/createRoom", json={},
                                  headers=auth)).json()["room_id"]
        quiet = (await client.post("/_matrix/client/v3/createRoom",
                                   json={"preset": "public_chat"}, headers=auth)).json()["room_id"]
        nexts = []
        for token in tokens:
            h = {"Authorization": f"Bearer {token}"}
            await client.post(f"/_matrix/client/v3/join/{quiet}", json={}, headers=h)
            nexts.append((await client.get("/_matrix/client/v3/sync", headers=h)).json()
                         ["next_batch"])
        latencies: list[float] = []
        async def wait(token: str, since: str) -> None:
            await client.get("/_matrix/client/v3/sync",
                             params={"since": since, "timeout": "60000"},
                             headers={"Authorization": f"Bearer {token}"})

        async with trio.open_nursery() as nursery:
            for i in range(WAITERS):
                nursery.start_soon(wait, tokens[i % USERS], nexts[i % USERS])
            await trio.sleep(10)  # let every long-poll reach the server and park
            for i in range(SENDS):
                began = time.perf_counter()
                r = await client.put(f"/_matrix/client/v3/rooms/{busy}/send/m.room.message/b{i}",
                                     json={"msgtype": "m.text", "body": "x"}, headers=auth)
                r.raise_for_status()
                latencies.append((time.perf_counter() - began) * 1000)
            nursery.cancel_scope.cancel()
    ordered = sorted(latencies)
    return {"waiting_syncs": WAITERS, "sends": SENDS,
            "send_p50_ms": round(statistics.median(ordered), 1),
            "send_p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 1),
            "target_p99_ms": 50}


def main() -> None:
    figures = measure_against_server(measure, TOKEN)
    write_result("idle_syncs", {"machine": machine(), **figures})


if __name__ == "__main__":
    main()
