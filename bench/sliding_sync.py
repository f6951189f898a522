"""Simplified sliding sync (MSC4186): first response in 500 rooms, updates to 100 long-polls.

Starts the server, registers a user in ROOMS rooms (one message each) and measures the
time to the first sliding sync response of an Element X style request (the 20 most
recent rooms, ``timeline_limit`` 1, its room-list ``required_state``, every extension),
on a fresh connection each time; then the same for the whole list in one window.

Then CONNECTIONS connections long-poll (that user plus CONNECTIONS - 1 others, all in
one shared room) and a sender posts UPDATES messages there one at a time: per-update
latency is from the start of the send to the arrival of the response carrying it, on
every connection. Results in bench/results/sliding_sync.json.
Usage: python -m bench.sliding_sync [rooms] [connections]
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import httpx
import trio

from bench.common import machine, measure_against_server, write_result

TOKEN = "bench-token"
ROOMS = int(sys.argv[1]) if len(sys.argv) > 1 else 500
CONNECTIONS = int(sys.argv[2]) if len(sys.argv) > 2 else 100
UPDATES = 20
FIRST_RUNS = 7
SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
V3 = "/_matrix/client/v3"
ROOM_LIST_STATE = [
    ["m.room.encryption", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
    ["m.room.name", ""], ["m.room.topic", ""], ["m.room.avatar", ""],
    ["m.room.canonical_alias", ""], ["m.room.power_levels", ""], ["m.room.create", ""],
    ["m.room.join_rules", ""], ["m.room.history_visibility", ""],
]
EXTENSIONS = {"to_device": {"enabled": True}, "e2ee": {"enabled": True},
              "account_data": {"enabled": True}, "receipts": {"enabled": True},
              "typing": {"enabled": True}}


def request_body(end: int) -> dict[str, Any]:
    return {"conn_id": "room-list", "extensions": EXTENSIONS,
            "lists": {"all_rooms": {"ranges": [[0, end]], "timeline_limit": 1,
                                    "required_state": ROOM_LIST_STATE}}}


async def register(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    body = {"username": name, "password": "pw"}
    first = (await client.post(f"{V3}/register", json=body)).json()
    for stage in ({"type": "m.login.registration_token", "token": TOKEN},
                  {"type": "m.login.dummy"}):
        r = await client.post(f"{V3}/register",
                              json={**body, "auth": {**stage, "session": first["session"]}})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1] * 1000, 2),
            "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2), "n": len(ordered)}


async def measure(base: str) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=CONNECTIONS + 20,
                          max_keepalive_connections=CONNECTIONS + 20)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        big = await register(client, "big")
        setup = time.perf_counter()
        for i in range(ROOMS):
            room = (await client.post(f"{V3}/createRoom", json={"name": f"Room {i}"},
                                      headers=big)).json()["room_id"]
            await client.put(f"{V3}/rooms/{room}/send/m.room.message/t{i}",
                             json={"msgtype": "m.text", "body": f"m{i}"}, headers=big)
        setup_s = time.perf_counter() - setup

        async def first_response(end: int) -> tuple[list[float], int]:
            times, size = [], 0
            for _ in range(FIRST_RUNS):
                began = time.perf_counter()
                r = await client.post(SS, json=request_body(end), headers=big)
                times.append(time.perf_counter() - began)
                assert r.status_code == 200, r.text
                size = len(r.content)
            return times, size

        top20, top20_bytes = await first_response(19)
        everything, everything_bytes = await first_response(ROOMS - 1)

        # CONNECTIONS long-polling connections, all in one shared room.
        hub = (await client.post(f"{V3}/createRoom", json={"preset": "public_chat"},
                                 headers=big)).json()["room_id"]
        users = [big] + [await register(client, f"poll{i}") for i in range(CONNECTIONS - 1)]
        for headers in users[1:]:
            await client.post(f"{V3}/join/{hub}", json={}, headers=headers)
        sender = users[-1]
        sent_at: dict[str, float] = {}
        latencies: list[float] = []
        big_latencies: list[float] = []
        ready = trio.Semaphore(0)
        done = trio.Event()

        async def poller(index: int, headers: dict[str, str]) -> None:
            body = request_body(19)
            r = await client.post(SS, json=body, headers=headers)
            pos = r.json()["pos"]
            ready.release()
            while not done.is_set():
                r = await client.post(SS, json=body, headers=headers,
                                      params={"pos": pos, "timeout": 30000})
                arrived = time.perf_counter()
                answer = r.json()
                pos = answer["pos"]
                for event in answer["rooms"].get(hub, {}).get("timeline", []):
                    text = event.get("content", {}).get("body")
                    if text in sent_at:
                        latencies.append(arrived - sent_at[text])
                        if index == 0:
                            big_latencies.append(arrived - sent_at[text])

        send_times: list[float] = []
        async with trio.open_nursery() as nursery:
            for index, headers in enumerate(users):
                nursery.start_soon(poller, index, headers)
            for _ in users:
                await ready.acquire()
            await trio.sleep(1)
            for n in range(UPDATES):
                text = f"update {n}"
                sent_at[text] = time.perf_counter()
                await client.put(f"{V3}/rooms/{hub}/send/m.room.message/u{n}",
                                 json={"msgtype": "m.text", "body": text}, headers=sender)
                send_times.append(time.perf_counter() - sent_at[text])
                await trio.sleep(0.5)
            await trio.sleep(2)
            done.set()
            # One last message releases every waiting poll.
            await client.put(f"{V3}/rooms/{hub}/send/m.room.message/end",
                             json={"msgtype": "m.text", "body": "end"}, headers=sender)
        return {
            "rooms": ROOMS, "connections": CONNECTIONS, "updates": UPDATES,
            "setup_seconds": round(setup_s, 1),
            "first_response_top20": {**summary(top20), "bytes": top20_bytes},
            "first_response_all_rooms": {**summary(everything), "bytes": everything_bytes},
            "update_latency_all_connections": summary(latencies),
            "update_latency_user_in_all_rooms": summary(big_latencies),
            "send_latency": summary(send_times),
            "deliveries_expected": UPDATES * CONNECTIONS,
        }


def main() -> None:
    result = {"machine": machine(), **measure_against_server(measure, TOKEN)}
    write_result("sliding_sync", result)


if __name__ == "__main__":
    main()
