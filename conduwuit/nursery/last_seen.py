"""Writes devices' last-seen address and time in batches instead of once per request."""

from __future__ import annotations

import logging

import trio

from conduwuit.services.devices import Devices

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 30.0


async def run(devices: Devices, interval: float = FLUSH_INTERVAL) -> None:
    try:
        while True:
            await trio.sleep(interval)
            devices.flush_last_seen()
    finally:
        # Shutdown cancels us; what was seen since the last flush is still written.
        with trio.CancelScope(shield=True):
            written = devices.flush_last_seen()
            log.debug("last-seen: flushed %d updates at stop", written)
