"""A minimal JSON-answering ASGI app for fake peers on loopback (servers, gateways, bridges).

``json_app(handle)`` does the ASGI chores (lifespan, reading the whole body, a JSON answer
with its length); ``handle(scope, body)`` returns ``(status, payload)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

Handle = Callable[[dict[str, Any], bytes], Awaitable[tuple[int, Any]]]
AsgiApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def json_app(handle: Handle) -> AsgiApp:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, payload = await handle(scope, body)
        data = orjson.dumps(payload)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    return app


def headers_of(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in scope["headers"]}
