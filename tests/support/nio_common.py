"""What every matrix-nio scenario needs: response summaries, a client config, raw calls."""

from __future__ import annotations

import asyncio
import json
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from nio import Api, AsyncClient, AsyncClientConfig, ErrorResponse, RegisterResponse


def describe(resp: object) -> dict[str, Any]:
    """The response class and, for errors, what the server said."""
    out: dict[str, Any] = {"type": type(resp).__name__}
    transport = getattr(resp, "transport_response", None)
    if transport is not None:
        out["http_status"] = transport.status
    if isinstance(resp, ErrorResponse):
        out.update(errcode=resp.status_code, message=resp.message)
    return out


def config(request_timeout: float = 20) -> AsyncClientConfig:
    """Few retries, so a failing step fails fast instead of retrying forever."""
    return AsyncClientConfig(max_timeouts=1, max_limit_exceeded=0,
                             request_timeout=request_timeout, max_timeout_retry_wait_time=1)


async def raw(client: AsyncClient, method: str, path: str, body: Any = None,
              **query: str) -> tuple[int, Any]:
    """A request nio has no method for, through its public ``AsyncClient.send``."""
    headers = {"Authorization": f"Bearer {client.access_token}",
               "Content-Type": "application/json"}
    resp = await client.send(method, Api._build_path(path.strip("/").split("/"), query),
                             None if body is None else Api.to_json(body), headers)
    try:
        parsed = await resp.json(content_type=None)
    except ValueError:
        parsed = await resp.text()
    return resp.status, parsed


async def register(homeserver: str, token: str, name: str, password: str,
                   client_config: AsyncClientConfig | None = None) -> AsyncClient:
    """A new account through nio's own token registration, logged in."""
    client = AsyncClient(homeserver, config=client_config or config())
    resp = await client.register_with_token(name, password, token, f"{name}'s nio")
    if not isinstance(resp, RegisterResponse):
        await client.close()
        raise AssertionError(f"registering {name}: {describe(resp)}")
    return client


def run_scenario(scenario: Callable[[dict[str, Any]], Awaitable[None]]) -> int:
    """Run a scenario that fills a summary and print it as JSON for the test to read;
    an exception is reported in the summary, so the test shows where it stopped."""
    summary: dict[str, Any] = {}
    try:
        asyncio.run(scenario(summary))  # type: ignore[arg-type]
    except Exception:
        summary["exception"] = traceback.format_exc()
    print(json.dumps(summary, ensure_ascii=False, sort_keys=True, default=str))
    return 0
