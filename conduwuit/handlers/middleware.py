"""ASGI middleware that sits between Hypercorn and the Quart app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ShieldFinalSend:
    """Shield the last body chunk of every HTTP response from cancellation.

    Under Hypercorn's trio worker, quart-trio cancels its per-request nursery
    while Hypercorn is still inside ``send()`` for the final chunk. Hypercorn
    restarts the connection's keep-alive timer from inside that call, so the
    timer is born cancelled: idle connections never close, hold shutdown until
    the grace period, and a connection reused after an early 413 hangs.
    Finishing that one send under a shield lets Hypercorn's bookkeeping run.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def shielded_send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
                return
            await send(message)

        await self.app(scope, receive, shielded_send)
