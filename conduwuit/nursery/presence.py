"""The ``presence/timers`` job: moves idle users to unavailable, then offline.

All users share one heap of due times in the service; this job sleeps until the
earliest (or until an earlier one is added) and applies what is due. Each move
is a presence change with its own stream position, which wakes the syncs of
the users sharing a room with the one who moved.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conduwuit.services.presence import Presence

log = logging.getLogger(__name__)


async def run(presence: Presence) -> None:
    while True:
        moved = presence.process_due()
        if moved:
            log.debug("presence: %d users went idle or offline", moved)
        await presence.wait_for_change(presence.next_due())
