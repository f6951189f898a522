"""The ``push/gateway`` job: delivers queued notifications to users' push gateways.

Notifications arrive on the gateway service's bounded channel once their event is
stored. Each is delivered in a task of its own (a slow gateway or a pusher in
backoff holds up nobody else), at most ``max_concurrent`` at once: the job takes
nothing more off the channel while that many are in flight, so memory stays
bounded by the channel plus the tasks. One httpx client (one connection pool)
serves every gateway for the job's lifetime.
"""

from __future__ import annotations

import logging

import httpx
import trio

from conduwuit.services.push.gateway import PushGateway, PushItem

log = logging.getLogger(__name__)

MAX_CONCURRENT = 64


async def run(gateway: PushGateway, max_concurrent: int = MAX_CONCURRENT) -> None:
    limiter = trio.CapacityLimiter(max_concurrent)
    async with gateway.client() as client, trio.open_nursery() as nursery:
        while True:
            item = await gateway.receive.receive()
            token = object()
            await limiter.acquire_on_behalf_of(token)
            nursery.start_soon(_deliver, gateway, client, item, limiter, token)


async def _deliver(gateway: PushGateway, client: httpx.AsyncClient, item: PushItem,
                   limiter: trio.CapacityLimiter, token: object) -> None:
    try:
        await gateway.deliver(client, item)
    except Exception:  # one bad notification must not end the job
        log.exception("push of %s to %s failed", item.event.event_id, item.user_id)
    finally:
        limiter.release_on_behalf_of(token)
