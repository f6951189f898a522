"""ASGI middleware that sits between Hypercorn and the Quart app."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

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


class KeepEncodedSlashes:
    """Route on the raw path so that ``%2F`` inside an id stays inside one segment.

    ASGI servers hand apps a percent-decoded ``path``, which turns a v3 event id
    such as ``$abc/def`` (sent as ``$abc%2Fdef``) into two path segments. We
    rebuild ``path`` from ``raw_path`` decoding every escape except ``%2F`` and
    ``%25``; the URL converters (see ``app.py``) then decode those two inside
    each matched value, so a literal ``%`` can never be decoded twice.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and b"%" in raw:
            scope = dict(scope)
            scope["path"] = _decode_keeping_slashes(raw.split(b"?", 1)[0])
        await self.app(scope, receive, send)


def _decode_keeping_slashes(raw: bytes) -> str:
    parts = re.split(rb"(%2[fF]|%25)", raw)
    decoded = b"".join(p.upper() if p.startswith(b"%") and len(p) == 3 and p[1:2] == b"2"
                       and p[2:3] in b"fF5" else unquote_to_bytes(p) for p in parts)
    return decoded.decode("utf-8", "replace")
