"""Start the real server process and watch its log and notify socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``python -m tests.support.launch`` (or ``-m conduwuit``) with a notify socket."""

    def __init__(self, workdir: Path, args: list[str], *, module: str = "tests.support.launch",
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.notify_path = str(workdir / f"notify-{time.monotonic_ns()}.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.log_path = workdir / f"server-{time.monotonic_ns()}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUWUIT_",
                                                                              "CONDUIT_"))}
        full_env.update({"NOTIFY_SOCKET": self.notify_path, "PYTHONPATH": str(REPO)})
        full_env.update(env or {})
        self.log_file = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=workdir, env=full_env,
            stdout=self.log_file, stderr=subprocess.STDOUT,
        )
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float = 20.0) -> None:
        """Block until the notify socket delivers ``line`` (e.g. READY=1)."""
        deadline = time.monotonic() + timeout
        while line not in self.messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"no {line!r} from the server; log:\n{self.log()}")
            self.notify.settimeout(min(remaining, 0.2))
            try:
                data = self.notify.recv(65536)
            except TimeoutError:
                continue
            self.messages.extend(data.decode().split("\n"))

    def collect(self) -> list[str]:
        """Every notify line received so far, including ones not yet read."""
        self.notify.setblocking(False)
        try:
            while True:
                self.messages.extend(self.notify.recv(65536).decode().split("\n"))
        except BlockingIOError:
            pass
        finally:
            self.notify.setblocking(True)
        return self.messages

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()
        self.notify.close()
