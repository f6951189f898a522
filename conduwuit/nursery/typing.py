"""The ``typing/expiry`` job: ends typing notifications whose period ran out.

One timer for every room and user: the service keeps a heap of deadlines; this
job sleeps until the earliest one (or until an earlier one is added), stops the
users whose period ended, and each stop wakes the room's waiting syncs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conduwuit.services.typing import Typing

log = logging.getLogger(__name__)


async def run(typing: Typing) -> None:
    while True:
        expired = typing.expire_due()
        if expired:
            log.debug("typing: %d expired", expired)
        await typing.wait_for_change(typing.next_deadline())
