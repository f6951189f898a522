"""The key-fetch job: fetches other servers' signing keys for whoever needs them.

Requests (:class:`KeyFetch`) arrive on the key service's bounded channel; the key
service guarantees at most one per server is in flight. Whatever is queued when the
job looks is served together as one batch, in a task of its own, so many servers are
fetched at once and a slow server holds up nobody else. For each batch the notaries
(``trusted_servers``) are asked first or last as ``query_trusted_key_servers_first``
(``..._on_join`` while joining) says, in queries of at most
``trusted_server_batch_size`` servers; the servers themselves are asked directly (each
its own request, concurrently) unless ``only_query_trusted_key_servers``. Every answer
is verified before it is cached (see ``services/federation/keys.py``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import trio

from conduwuit.services.federation.keys import KeyFetch, ServerSigningKeys

log = logging.getLogger(__name__)

MAX_CONCURRENT = 64  # key requests in flight at once, over all servers
MAX_BATCH = 1024  # requests taken off the channel into one batch


async def run(keys: ServerSigningKeys, max_concurrent: int = MAX_CONCURRENT) -> None:
    limiter = trio.CapacityLimiter(max_concurrent)
    receive = keys.fetch_requests
    async with trio.open_nursery() as nursery:
        while True:
            batch = [await receive.receive()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            nursery.start_soon(serve_batch, keys, batch, limiter)


def phases(keys: ServerSigningKeys, fetch: KeyFetch) -> Sequence[str]:
    """Where to ask for ``fetch``'s keys, in order: "notary", "direct" or both."""
    config = keys.config
    if fetch.direct_only:
        return ("direct",)
    if config.only_query_trusted_key_servers:
        return ("notary",) if config.trusted_servers else ()
    if not config.trusted_servers:
        return ("direct",)
    first = (config.query_trusted_key_servers_first
             or (fetch.joining and config.query_trusted_key_servers_first_on_join))
    return ("notary", "direct") if first else ("direct", "notary")


async def serve_batch(keys: ServerSigningKeys, batch: list[KeyFetch],
                      limiter: trio.CapacityLimiter) -> None:
    try:
        plans = {id(f): phases(keys, f) for f in batch}
        for step in range(2):
            due = [(f, plans[id(f)][step]) for f in batch
                   if len(plans[id(f)]) > step and not keys.satisfied(f)]
            notary = [f for f, where in due if where == "notary"]
            direct = [f for f, where in due if where == "direct"]
            async with trio.open_nursery() as nursery:
                if notary:
                    nursery.start_soon(_ask_notaries, keys, notary, limiter)
                for fetch in direct:
                    nursery.start_soon(_ask_server, keys, fetch, limiter)
    finally:
        for fetch in batch:
            keys.finish(fetch)


async def _ask_server(keys: ServerSigningKeys, fetch: KeyFetch,
                      limiter: trio.CapacityLimiter) -> None:
    async with limiter:
        try:
            await keys.fetch_direct(fetch.server)
        except Exception:  # one broken answer must not stop the other servers' fetches
            log.exception("fetching the keys of %s failed", fetch.server)


async def _ask_notaries(keys: ServerSigningKeys, fetches: list[KeyFetch],
                        limiter: trio.CapacityLimiter) -> None:
    size = max(1, keys.config.trusted_server_batch_size)
    for notary in keys.config.trusted_servers:
        remaining = [f for f in fetches if not keys.satisfied(f) and f.server != notary]
        if not remaining:
            return
        async with trio.open_nursery() as nursery:
            for start in range(0, len(remaining), size):
                chunk = remaining[start:start + size]
                nursery.start_soon(functools.partial(_ask_notary, keys, notary, chunk, limiter))


async def _ask_notary(keys: ServerSigningKeys, notary: str, chunk: list[KeyFetch],
                      limiter: trio.CapacityLimiter) -> None:
    async with limiter:
        try:
            await keys.query_notary(notary, chunk)
        except Exception:
            log.exception("querying notary %s for %d servers failed", notary, len(chunk))
