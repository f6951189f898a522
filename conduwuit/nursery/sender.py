"""The ``sender/federation`` job: drains the per-destination queues as transactions.

The queues and the backoff state live in the service (``services/federation/sender.py``);
this loop only schedules. Each destination that has items, is not in flight and is not
backing off gets one task, which sends its oldest items as transactions (at most 50
PDUs and 100 EDUs each) one after the other until the queue is empty or a transaction
fails. So there is never more than one transaction in flight per destination, and a
capacity limiter bounds how many destinations are served at once. The loop sleeps until
something is queued, a task ends, or the earliest backoff runs out.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from conduwuit.services.federation.sender import Sender

log = logging.getLogger(__name__)


async def run(sender: Sender) -> None:
    await sender.startup()
    limiter = trio.CapacityLimiter(sender.parallel)
    async with trio.open_nursery() as nursery:
        while True:
            for destination in sender.take_due():
                nursery.start_soon(drain, sender, destination, limiter,
                                   name=f"sender {destination}")
            await sender.wait_for_work()


async def drain(sender: Sender, destination: str, limiter: trio.CapacityLimiter) -> None:
    """Send ``destination``'s queue, one transaction at a time, until empty or failing."""
    try:
        async with limiter:
            while True:
                txn = sender.next_transaction(destination)
                if txn is None:
                    return
                if not await sender.send_transaction(txn):
                    return
                log.debug("federation sender: %s accepted %s (%d PDUs, %d EDUs)",
                          destination, txn.txn_id, len(txn.pdus), len(txn.edus))
    finally:
        sender.release(destination)
