"""Shared bench plumbing: start a server process, wait for READY, note the machine."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def start_until_ready(args: list[str], env: dict[str, str], workdir: Path,
                      timeout: float = 30.0) -> tuple[subprocess.Popen[bytes], float]:
    """Start a process with a notify socket; return it and seconds until READY=1."""
    path = str(workdir / f"notify-{time.monotonic_ns()}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(timeout)
        began = time.perf_counter()
        full_env = {**os.environ, **env, "NOTIFY_SOCKET": path, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(args, env=full_env,
                                cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            data = notify.recv(65536).decode()
            if "READY=1" in data.split("\n"):
                return proc, time.perf_counter() - began


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path


def server_cmd() -> list[str]:
    return [sys.executable, "-m", "conduwuit"]


def measure_against_server(measure: Any, token: str) -> Any:
    """Start conduwuit on a fresh database open for registration with ``token``, run
    ``trio.run(measure, base_url)`` against it, stop it, and return what it measured."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        env = {"CONDUWUIT_PORT": str(port), "CONDUWUIT_ADDRESS": "127.0.0.1",
               "CONDUWUIT_LOG": "warn", "CONDUWUIT_DATABASE_PATH": str(work / "db"),
               "CONDUWUIT_ALLOW_REGISTRATION": "true", "CONDUWUIT_REGISTRATION_TOKEN": token}
        proc, _ = start_until_ready(server_cmd(), env, work)
        try:
            return trio.run(measure, f"http://127.0.0.1:{port}")
        finally:
            stop(proc)
