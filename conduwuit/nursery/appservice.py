"""The ``appservice/transactions`` job: drains the per-AS queues as transactions.

Queues, the transaction records and backoff live in the service
(``services/appservices/sender.py``); this loop only schedules. Each application
service with queued items that is not in flight and not backing off gets one task,
which sends its transactions one after the other until the queue is empty or one
fails. So at most one transaction is in flight per AS; the number of application
services is small (operator-registered), so no further bound is needed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from conduwuit.services.appservices.sender import AppserviceSender

log = logging.getLogger(__name__)


async def run(sender: AppserviceSender) -> None:
    await sender.startup()
    async with trio.open_nursery() as nursery:
        while True:
            for appservice_id in sender.take_due():
                nursery.start_soon(drain, sender, appservice_id,
                                   name=f"appservice {appservice_id}")
            await sender.wait_for_work()


async def drain(sender: AppserviceSender, appservice_id: str) -> None:
    """Send ``appservice_id``'s queue, one transaction at a time, until empty or failing."""
    try:
        while True:
            txn = sender.next_transaction(appservice_id)
            if txn is None:
                return
            if not await sender.send_transaction(txn):
                return
            log.debug("appservice sender: %s accepted %s (%d events, %d ephemeral)",
                      appservice_id, txn.txn_id, len(txn.events), len(txn.ephemeral))
    finally:
        sender.release(appservice_id)
