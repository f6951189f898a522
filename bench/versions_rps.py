"""Requests per second of GET /_matrix/client/versions: us vs a bare quart-trio app.

Both run as one process on the same Hypercorn settings; wrk (Debian package
`wrk`) makes the load. Rounds alternate between the two servers so that the
machine's background noise falls on both alike. Target: at least 70%.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import free_port, machine, server_cmd, start_until_ready, stop, write_result

ROUNDS = 3
DURATION = "8s"
CONNECTIONS = 32


def wrk(url: str) -> float:
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}", url],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def run_one(cmd: list[str], workdir: Path) -> float:
    port = free_port()
    env = {"CONDUWUIT_PORT": str(port), "CONDUWUIT_ADDRESS": "127.0.0.1",
           "CONDUWUIT_LOG": "warn", "CONDUWUIT_DATABASE_PATH": str(workdir / "db")}
    proc, _ = start_until_ready(cmd, env, workdir)
    try:
        url = f"http://127.0.0.1:{port}/_matrix/client/versions"
        subprocess.run(["wrk", "-t1", "-c4", "-d1s", url], capture_output=True, check=True)
        return wrk(url)
    finally:
        stop(proc)


def main() -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    ours: list[float] = []
    bare: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(ROUNDS):
            bare.append(run_one([sys.executable, "-m", "bench.bare_app"], work))
            ours.append(run_one(server_cmd(), work))
    ratio = statistics.median(ours) / statistics.median(bare)
    write_result("versions_rps", {
        "machine": machine(),
        "wrk": {"threads": 1, "connections": CONNECTIONS, "duration": DURATION},
        "bare_quart_trio_rps": bare,
        "conduwuit_rps": ours,
        "ratio_median": round(ratio, 3),
        "target_ratio": 0.7,
    })


if __name__ == "__main__":
    main()
