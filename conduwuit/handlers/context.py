"""Access to the running server's services from inside a request."""

from __future__ import annotations

from typing import cast

from quart import current_app
from quart_trio import QuartTrio

from conduwuit.services import Services


class MatrixApp(QuartTrio):
    """The Quart app of one listener set; carries the services it serves."""

    services: Services


def services() -> Services:
    return cast(MatrixApp, current_app).services
