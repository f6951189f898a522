"""What commands may use: the services, plus the server-level handles built in server.py.

The admin layer never imports ``conduwuit.server``; the server hands these in, so a
command can stop the server or list its jobs without a cycle between the modules.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from conduwuit.nursery.jobs import JobStatus
    from conduwuit.services import Services


@attrs.define
class AdminContext:
    services: Services
    # Every named job and its state (the server's Supervisor.statuses).
    job_statuses: Callable[[], list[JobStatus]]
    # Begins a graceful shutdown with the given reason (Server.shutdown).
    shutdown: Callable[[str], None]
    started_at: float = attrs.field(factory=time.time)
    # Re-reads the configuration and answers what changed (or why not); None: not supported.
    reload_config: Callable[[], Awaitable[str]] | None = None
    # Restarts the process after a graceful shutdown; None: not possible in-process.
    restart: Callable[[], None] | None = None
    # Set by a command that must run after its reply was sent (shutdown, restart).
    after_reply: list[Callable[[], None]] = attrs.field(factory=list)
