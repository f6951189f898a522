"""sd_notify(3) over ``$NOTIFY_SOCKET``, written out because it is eight lines.

Datagrams to a local socket never block in practice, so these are plain calls
from Trio tasks. Without ``NOTIFY_SOCKET`` every call is a no-op, which is what
running outside systemd should look like.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

import trio

log = logging.getLogger(__name__)


class Notifier:
    """Sends state lines to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading '@'; the kernel wants NUL.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> None:
        if not self.address:
            return
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(payload)
        except OSError as exc:
            # systemd going away must never take the server down with it.
            log.warning("sd_notify to %r failed: %s", self.address, exc)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def reloading(self, status: str = "Reloading the configuration") -> None:
        """``RELOADING=1`` with the ``MONOTONIC_USEC`` that ``Type=notify-reload`` requires.

        Follow it with :meth:`ready` once the reload is over (applied or not).
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    def stopping(self, status: str = "Shutting down") -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    async def run_watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` at half the interval systemd asked for.

        Runs as a job in the server's nursery: if the event loop stalls, the
        pings stop, which is exactly what the watchdog is meant to notice.
        """
        if not self.address or self.watchdog_interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval / 2)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None
