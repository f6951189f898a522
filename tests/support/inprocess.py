"""Run a whole server inside the test's own Trio nursery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from conduwuit.config import Config
from conduwuit.server import AppHook, Server
from conduwuit.systemd import Notifier


@asynccontextmanager
async def running_server(
    config: Config, *, app_hooks: list[AppHook] | None = None, notifier: Notifier | None = None
) -> AsyncIterator[Server]:
    """Start the server, yield it once every listener is bound, then shut it down."""
    server = Server(config, app_hooks=app_hooks or [], notifier=notifier or Notifier({}))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield server
        finally:
            server.shutdown("test finished")
    assert server.store is not None and server.store.closed


def base_url(server: Server, index: int = 0) -> str:
    return server.bound[index]
