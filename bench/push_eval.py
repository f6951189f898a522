"""Push evaluation cost per sent message in rooms of 100 and 1,000 local members.

Runs an in-process server (no HTTP in the measured path), joins N-1 members to a
public room through the services, then sends messages through the timeline (the
one write path) and reports, per send: the whole server-side send (wall time and
CPU time of the event-loop thread, the honest number on a shared machine), and the CPU
spent in the unread/push index writer (evaluation of every member's push rules,
counters, notification records). Usage::

    .venv/bin/python -m bench.push_eval [--members 100,1000] [--sends 100] [--profile]

Results are appended to bench/results/push_eval.md with the machine noted.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from bench.common import RESULTS, machine
from conduwuit.server import Server
from conduwuit.services.rooms.timeline import Draft
from tests.support.config import make_config
from tests.support.inprocess import running_server


def _wrap_timed(owner: list[Callable[..., None]], index: int,
                spent: list[float]) -> None:
    """Replace ``owner[index]`` (an index writer) by a timed version of itself."""
    inner = owner[index]

    def timed(*args: Any) -> None:
        began = time.thread_time()  # CPU of this thread: other load on the machine is not ours
        try:
            inner(*args)
        finally:
            spent.append(time.thread_time() - began)

    owner[index] = timed


async def one_room(server: Server, members: int, sends: int,
                   profile: bool) -> dict[str, Any]:
    services = server.services
    assert services is not None
    name = server.config.server_name
    alice = f"@alice:{name}"
    services.users.create(alice, "")
    room = await services.rooms.creation.create(alice, {"preset": "public_chat"})
    for i in range(members - 1):
        user_id = f"@m{i}:{name}"
        services.users.create(user_id, "")
        await services.rooms.actions.join(room, user_id)
    writers = services.rooms.timeline.index_writers
    position = next(i for i, w in enumerate(writers)
                    if getattr(w, "__name__", "") == "index_event")
    spent: list[float] = []
    _wrap_timed(writers, position, spent)  # type: ignore[arg-type]
    totals: list[float] = []
    cpus: list[float] = []
    profiler = cProfile.Profile() if profile else None
    for i in range(sends):
        draft = Draft(alice, "m.room.message", {"msgtype": "m.text", "body": f"hello m7 #{i}"})
        began, began_cpu = time.perf_counter(), time.thread_time()
        if profiler is not None:
            profiler.enable()
        await services.rooms.timeline.send(room, draft)
        if profiler is not None:
            profiler.disable()
        totals.append(time.perf_counter() - began)
        cpus.append(time.thread_time() - began_cpu)
    out: dict[str, Any] = {
        "members": members,
        "sends": sends,
        "send_ms_p50": statistics.median(totals) * 1000,
        "send_ms_mean": statistics.fmean(totals) * 1000,
        "cpu_ms_per_send": statistics.fmean(cpus) * 1000,
        "push_eval_ms_p50": statistics.median(spent) * 1000,
        "push_eval_ms_mean": statistics.fmean(spent) * 1000,
        "push_eval_us_per_member": statistics.fmean(spent) / max(1, members - 1) * 1e6,
    }
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        out["profile"] = text.getvalue()
    return out


async def run(member_counts: list[int], sends: int, profile: bool) -> list[dict[str, Any]]:
    results = []
    for members in member_counts:
        with tempfile.TemporaryDirectory() as tmp:
            async with running_server(make_config(Path(tmp))) as server:
                results.append(await one_room(server, members, sends, profile))
    return results


def report(results: list[dict[str, Any]], label: str) -> str:
    lines = [f"## {label} ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"machine: {machine()}", "",
             "| members | sends | send p50 ms | send mean ms | CPU ms/send "
             "| push eval p50 ms | push eval mean ms | push eval µs/member |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['members']} | {r['sends']} | {r['send_ms_p50']:.2f} "
                     f"| {r['send_ms_mean']:.2f} | {r['cpu_ms_per_send']:.2f} "
                     f"| {r['push_eval_ms_p50']:.2f} | {r['push_eval_ms_mean']:.2f} "
                     f"| {r['push_eval_us_per_member']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", default="100,1000")
    parser.add_argument("--sends", type=int, default=100)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--label", default="push evaluation per send")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    counts = [int(n) for n in args.members.split(",")]
    results = trio.run(run, counts, args.sends, args.profile)
    text = report(results, args.label)
    print(text)
    for r in results:
        if "profile" in r:
            print(r["profile"])
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with (RESULTS / "push_eval.md").open("a") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
