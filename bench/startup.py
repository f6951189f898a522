"""Time from process start to READY=1, on an empty database and on one with 100k keys.

Target: READY in under 1 s on an empty database.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench.common import free_port, machine, server_cmd, start_until_ready, stop, write_result
from conduwuit.store import Store
from conduwuit.store.keys import u64_be

RUNS = 5
KEYS = 100_000


def fill(path: Path) -> None:
    store = Store.open(path)
    try:
        tree = store.tree("userid_displayname")
        for start in range(0, KEYS, 5000):
            with store.batch() as batch:
                for i in range(start, start + 5000):
                    batch.put(tree, b"@user%08d:bench.local" % i, u64_be(i) * 8)
    finally:
        store.close()


def measure(db: Path, workdir: Path) -> list[float]:
    times = []
    for _ in range(RUNS):
        env = {"CONDUWUIT_DATABASE_PATH": str(db), "CONDUWUIT_PORT": str(free_port()),
               "CONDUWUIT_LOG": "warn", "CONDUWUIT_ADDRESS": "127.0.0.1"}
        proc, elapsed = start_until_ready(server_cmd(), env, workdir)
        stop(proc)
        times.append(elapsed)
    return times


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        empty = work / "empty"
        empty_times = measure(empty, work)
        full = work / "full"
        fill(full)
        full_times = measure(full, work)
    result = {
        "machine": machine(),
        "runs": RUNS,
        "empty_db_seconds": [round(t, 3) for t in empty_times],
        "empty_db_median": round(statistics.median(empty_times), 3),
        "db_100k_keys_seconds": [round(t, 3) for t in full_times],
        "db_100k_keys_median": round(statistics.median(full_times), 3),
        "target_empty_db_under_seconds": 1.0,
        "note": "first empty run also creates the database",
    }
    write_result("startup", result)


if __name__ == "__main__":
    main()
