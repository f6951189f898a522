"""HTTP from the homeserver to application services (the spec's HS -> AS API).

One pooled httpx client for every AS: requests time out after
``appservice_timeout`` and idle connections close after ``appservice_idle_timeout``.
Application services are configured by the operator, often on loopback, so the
``ip_range_denylist`` (meant for addresses users can name) does not apply to them.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import orjson
import trio

from conduwuit.config import Config

from .registration import AppserviceRegistration

log = logging.getLogger(__name__)

APP_PREFIX = "/_matrix/app/v1"
MAX_BODY = 64 * 1024  # of an answer we read (pings, queries, transactions)


class AppserviceUnreachable(Exception):
    """No HTTP answer: the connection failed or timed out."""

    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.timeout = timeout


@attrs.frozen
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@attrs.define
class AppserviceHttp:
    config: Config
    # The spec (v1.4+) puts the hs_token in the Authorization header only; the legacy
    # ``access_token`` query parameter is for application services older than that.
    legacy_query_token: bool = False
    _http: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._http is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=16,
                                  keepalive_expiry=float(self.config.appservice_idle_timeout))
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(float(self.config.appservice_timeout)), limits=limits,
                follow_redirects=False, trust_env=False,
                headers={"User-Agent": "conduwuit-py appservice"})
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def request(self, reg: AppserviceRegistration, method: str, path: str,
                      body: Any = None) -> Answer:
        """``method`` ``{url}/_matrix/app/v1{path}`` with the hs_token; raises
        :class:`AppserviceUnreachable` when there is no answer."""
        if reg.url is None:
            raise AppserviceUnreachable("the application service has no URL")
        params = {"access_token": reg.hs_token} if self.legacy_query_token else None
        content = orjson.dumps(body) if body is not None else None
        headers = {"Authorization": f"Bearer {reg.hs_token}"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        url = reg.url + APP_PREFIX + path
        try:
            async with self.client().stream(method, url, content=content, headers=headers,
                                            params=params) as response:
                data = b""
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_BODY:
                        data = data[:MAX_BODY]
                        break
                return Answer(response.status_code, data)
        except httpx.TimeoutException:
            raise AppserviceUnreachable("timed out", timeout=True) from None
        except (httpx.HTTPError, OSError, trio.BrokenResourceError) as exc:
            raise AppserviceUnreachable(str(exc) or type(exc).__name__) from None


def segment(value: str) -> str:
    """One URL path segment (user ids and aliases contain ``@ # :``)."""
    return quote(value, safe="")
