"""Per-request access lines and request metrics, and the ASGI app of the metrics listener.

:func:`install` adds two hooks to the Matrix app: one access line per request
(request id, method, path, status, latency; at debug level, where conduwuit
logs its requests too) and, when metrics are on, the counters and histograms
of :class:`~conduwuit.metrics.RequestMetrics` under the route template.

:class:`MetricsApp` is all the metrics listener serves: ``GET /metrics``. It
runs in a Hypercorn ``serve()`` of its own bound to ``metrics_address``, so
the Matrix listeners never answer ``/metrics`` and a firewall can keep the two
apart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from quart import Response, g, request

from conduwuit import sentry
from conduwuit.metrics import CONTENT_TYPE, UNMATCHED, RequestMetrics

from .context import MatrixApp
from .middleware import Message, Receive, Scope, Send

log = logging.getLogger("conduwuit.access")


def install(app: MatrixApp, requests: RequestMetrics | None) -> None:
    """Time every request from before the first ``before_request`` hook to its response."""

    tracing = sentry.active()

    async def start_timer() -> None:
        g.started = time.perf_counter()
        if tracing:
            g.transaction = sentry.RequestTransaction(request.method, _route())

    async def finish(response: Response) -> Response:
        started = g.get("started")
        seconds = time.perf_counter() - started if started is not None else 0.0
        route = _route()
        transaction = g.get("transaction")
        if transaction is not None:
            transaction.finish(response.status_code)
        if requests is not None:
            requests.observe(request.method, route, response.status_code, seconds)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request %s %s %s -> %d in %.1f ms", g.get("request_id", "?"),
                      request.method, request.path, response.status_code, seconds * 1000)
        return response

    # First, so the OPTIONS preflight and the early 413 of app.py are timed too.
    app.before_request_funcs.setdefault(None, []).insert(0, start_timer)
    app.after_request(finish)


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED


class MetricsApp:
    """A bare ASGI app: ``GET /metrics`` renders the scrape, anything else is 404."""

    def __init__(self, render: Callable[[], Awaitable[str]]) -> None:
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            await _answer(send, 404, b"Not found: metrics are at /metrics\n")
        elif scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"Method not allowed\n")
        else:
            body = (await self.render()).encode()
            await _answer(send, 200, b"" if scope["method"] == "HEAD" else body,
                          content_type=CONTENT_TYPE, length=len(body))


async def _answer(send: Send, status: int, body: bytes, *,
                  content_type: str = "text/plain; charset=utf-8",
                  length: int | None = None) -> None:
    headers = [(b"content-type", content_type.encode()),
               (b"content-length", str(len(body) if length is None else length).encode()),
               (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
