"""Federation benchmarks: joining a big room on Synapse, and inbound transaction throughput.

    python -m bench.federation [--members 500] [--pdus 2000]

1. ``join``: a room of ``--members`` users is prepared on a real Synapse (loopback, TLS),
   then our user joins it over federation: the time from ``POST /join`` to its answer
   (make_join, send_join, verifying and storing the state and auth chain) and until
   ``/members`` lists everyone.
2. ``inbound``: a fake server on loopback sends ``--pdus`` messages in transactions of 50
   PDUs (each signed, linked by prev_events) to our ``/send``; PDUs accepted per second.

Results go to bench/results/federation.json with the machine noted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import trio
import trustme

from bench.common import RESULTS, machine
from conduwuit.services.rooms.timeline import Draft
from tests.support.config import make_config
from tests.support.fakefed import fake_servers, federation_options, signed_request
from tests.support.inprocess import base_url, running_server
from tests.support.synapse import Synapse, synapse_python
from tests.support.users import make_user
from tests.test_federation_synapse import _our_tls_config, _register


async def _prepare_synapse_room(syn: httpx.AsyncClient, members: int) -> tuple[str, float]:
    owner = await _register(syn, "owner")
    headers = {"Authorization": f"Bearer {owner['access_token']}"}
    r = await syn.post("/_matrix/client/v3/createRoom", headers=headers,
                       json={"preset": "public_chat"})
    room_id = str(r.json()["room_id"])
    began = time.perf_counter()
    limiter = trio.CapacityLimiter(8)

    async def member(n: int) -> None:
        async with limiter:
            user = await _register(syn, f"member{n}")
            r = await syn.post(f"/_matrix/client/v3/join/{room_id}", json={},
                               headers={"Authorization": f"Bearer {user['access_token']}"})
            assert r.status_code == 200, r.text

    async with trio.open_nursery() as nursery:
        for n in range(members - 1):
            nursery.start_soon(member, n)
    return room_id, time.perf_counter() - began


async def bench_join(members: int, workdir: Path) -> dict[str, Any]:
    python = await trio.to_thread.run_sync(synapse_python)
    ca = trustme.CA()
    synapse = Synapse(workdir / "synapse", python, ca)
    await trio.to_thread.run_sync(synapse.start)
    try:
        ours, config, trusted = _our_tls_config(workdir, ca)
        async with running_server(config) as server, \
                httpx.AsyncClient(base_url=synapse.client_url, timeout=300) as syn, \
                httpx.AsyncClient(base_url=f"https://{ours}", verify=trusted,
                                  timeout=300) as us:
            room_id, prepared_s = await _prepare_synapse_room(syn, members)
            alice = await make_user(server, "alice")
            began = time.perf_counter()
            r = await us.post(f"/_matrix/client/v3/join/{room_id}",
                              params={"server_name": synapse.server_name}, json={},
                              headers=alice.headers)
            joined_s = time.perf_counter() - began
            assert r.status_code == 200, r.text
            r = await us.get(f"/_matrix/client/v3/rooms/{room_id}/joined_members",
                             headers=alice.headers)
            listed = len(r.json()["joined"])
            listed_s = time.perf_counter() - began
    finally:
        await trio.to_thread.run_sync(synapse.stop)
    return {"members_on_synapse": members, "prepare_s": round(prepared_s, 1),
            "join_answer_s": round(joined_s, 3), "members_listed": listed,
            "members_listed_s": round(listed_s, 3)}


async def bench_inbound(pdus: int, workdir: Path) -> dict[str, Any]:
    (workdir / "inbound").mkdir()
    config = make_config(workdir / "inbound", **federation_options())
    async with fake_servers(workdir, 1) as fakes, running_server(config) as server, \
            httpx.AsyncClient(base_url=base_url(server), timeout=120) as client:
        services = server.services
        assert services is not None
        fake = fakes[0]
        alice = await make_user(server, "alice")
        r = await client.post("/_matrix/client/v3/createRoom", headers=alice.headers,
                              json={"preset": "public_chat"})
        room_id = r.json()["room_id"]
        version = services.rooms.events.room_version(room_id)
        assert version is not None
        bob = f"@bob:{fake.name}"
        state = services.rooms.state.current(room_id)
        join = services.rooms.timeline.template(
            room_id, version, state, Draft(bob, "m.room.member", {"membership": "join"}, bob))
        join_id, join_pdu = fake.sign_pdu(join, version)
        assert await services.federation.ingest.receive(fake.name, join_pdu) == (join_id, None)
        # A chain of messages, each on top of the previous one, built before timing.
        base = services.rooms.timeline.template(
            room_id, version, services.rooms.state.current(room_id),
            Draft(bob, "m.room.message", {"msgtype": "m.text", "body": "0"}))
        chain: list[dict[str, Any]] = []
        prev, depth = base["prev_events"], base["depth"]
        for n in range(pdus):
            pdu = {**base, "content": {"msgtype": "m.text", "body": f"message {n}"},
                   "prev_events": prev, "depth": depth, "origin_server_ts": base[
                       "origin_server_ts"] + n}
            event_id, signed = fake.sign_pdu(pdu, version)
            chain.append(signed)
            prev, depth = [event_id], depth + 1
        ours = services.config.server_name
        began = time.perf_counter()
        for index in range(0, pdus, 50):
            body = {"origin": fake.name, "origin_server_ts": int(time.time() * 1000),
                    "pdus": chain[index:index + 50], "edus": []}
            r = await signed_request(client, fake, "PUT",
                                     f"/_matrix/federation/v1/send/bench{index}",
                                     destination=ours, body=body)
            assert r.status_code == 200, r.text
            errors = [v for v in r.json()["pdus"].values() if v]
            assert not errors, errors[:3]
        elapsed = time.perf_counter() - began
    return {"pdus": pdus, "seconds": round(elapsed, 2), "pdus_per_second": round(pdus / elapsed)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--pdus", type=int, default=2000)
    parser.add_argument("--only", choices=("join", "inbound"))
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine()}
    with TemporaryDirectory() as tmp:
        if args.only in (None, "inbound"):
            results["inbound"] = await bench_inbound(args.pdus, Path(tmp))
            print("inbound:", results["inbound"])
        if args.only in (None, "join"):
            results["join"] = await bench_join(args.members, Path(tmp))
            print("join:", results["join"])
    (RESULTS / "federation.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    trio.run(main)
