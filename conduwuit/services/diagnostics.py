"""Facts about the running server and knobs the admin room turns at run time."""

from __future__ import annotations

import logging
import time

import attrs

from conduwuit import __version__
from conduwuit.log import log_control

log = logging.getLogger(__name__)

SERVER_NAME = "conduwuit"


@attrs.define
class Diagnostics:
    started_at: float = attrs.field(factory=time.time)

    @property
    def version(self) -> str:
        return __version__

    def uptime(self) -> float:
        return time.time() - self.started_at

    def log_filter(self) -> str:
        return log_control.current

    def set_log_filter(self, text: str) -> None:
        """Change the ``log`` filter of the running process; ValueError if invalid."""
        log_control.set_filter(text)
        log.info("log filter changed to %r", text)
