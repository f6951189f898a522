"""Run a matrix-nio scenario (its own asyncio process) against a real server process.

Every nio test does the same: start ``conduwuit`` with a registration token, wait
for READY, run ``python -m tests.support.<scenario> URL TOKEN ...``, read the JSON
summary it prints last, then stop the server with SIGTERM and check it exited 0
without a traceback.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.config import free_port, write_config
from tests.support.process import REPO, ServerProcess


@contextmanager
def nio_server(tmp_path: Path, token: str, **options: Any) -> Iterator[str]:
    """A server process open for registration with ``token``; yields its base URL."""
    port = free_port()
    config = write_config(tmp_path, port=port, allow_registration=True,
                          registration_token=token, **options)
    server = ServerProcess(tmp_path, ["-c", str(config)], module="conduwuit")
    try:
        server.wait_for("READY=1")
        yield f"http://127.0.0.1:{port}"
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.log()
        assert "Traceback" not in server.log(), server.log()
    finally:
        server.close()


def run_scenario(module: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """Run ``tests.support.<module>`` with ``args``; its last stdout line is the summary."""
    result = subprocess.run([sys.executable, "-m", f"tests.support.{module}", *args],
                            cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    summary: dict[str, Any] = json.loads(lines[-1])
    summary["_stderr"] = result.stderr
    return summary


def context_of(summary: dict[str, Any]) -> str:
    """The summary and the client's stderr tail, for assertion messages."""
    shown = {k: v for k, v in summary.items() if k != "_stderr"}
    return (json.dumps(shown, indent=1, ensure_ascii=False) + "\n"
            + summary["_stderr"][-5000:])
