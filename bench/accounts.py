"""Register and login throughput and latency against a real server process.

Both are dominated by argon2id: registration hashes once, login verifies once.
The argon2 cost per verify is measured on its own first, so the figures can be
read against it. Run: `python -m bench.accounts` (results in bench/results/).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
import trio

from bench.common import (
    machine,
    measure_against_server,
    write_result,
)
from conduwuit.services.passwords import Passwords

USERS = 40
CONCURRENCY = 8
TOKEN = "bench-token"
PASSWORD = "bench password"


async def argon2_cost(samples: int = 10) -> float:
    passwords = Passwords()
    digest = await passwords.hash(PASSWORD)
    began = time.perf_counter()
    for _ in range(samples):
        await passwords.verify(digest, PASSWORD)
    return (time.perf_counter() - began) / samples


async def register(client: httpx.AsyncClient, name: str) -> None:
    body = {"username": name, "password": PASSWORD}
    first = await client.post("/_matrix/client/v3/register", json=body)
    auth = {"type": "m.login.registration_token", "token": TOKEN,
            "session": first.json()["session"]}
    await client.post("/_matrix/client/v3/register", json={**body, "auth": auth})
    dummy = {"type": "m.login.dummy", "session": auth["session"]}
    r = await client.post("/_matrix/client/v3/register", json={**body, "auth": dummy})
    r.raise_for_status()


async def login(client: httpx.AsyncClient, name: str) -> None:
    r = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": name},
        "password": PASSWORD})
    r.raise_for_status()


Operation = Callable[[httpx.AsyncClient, str], Awaitable[None]]


async def run_many(op: Operation, base_url: str, names: list[str]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    limiter = trio.Semaphore(CONCURRENCY)

    async def one(client: httpx.AsyncClient, name: str) -> None:
        async with limiter:
            began = time.perf_counter()
            await op(client, name)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client, \
            trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(one, client, name)
    return len(names) / (time.perf_counter() - began), latencies


def summary(rate: float, latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"per_second": round(rate, 2),
            "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 1)}


async def measure(base_url: str) -> dict[str, object]:
    names = [f"bench{i}" for i in range(USERS)]
    reg = await run_many(register, base_url, names)
    log = await run_many(login, base_url, names)
    return {"register": summary(*reg), "login": summary(*log)}


def main() -> None:
    cost = trio.run(argon2_cost)
    figures = measure_against_server(measure, TOKEN)
    write_result("accounts", {
        "machine": machine(),
        "users": USERS, "concurrency": CONCURRENCY,
        "argon2_verify_ms": round(cost * 1000, 1),
        "argon2_params": "argon2id t=2 m=19 MiB p=1, at most 2 at once",
        **figures,
    })


if __name__ == "__main__":
    main()
