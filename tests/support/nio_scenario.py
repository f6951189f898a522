"""A real Matrix client (matrix-nio, asyncio + aiohttp) driving a running server.

Run as ``python -m tests.support.nio_scenario HOMESERVER_URL REGISTRATION_TOKEN``. It walks
registration, login, whoami, profile, devices, account data and logout through nio's
``AsyncClient`` and prints one JSON object on stdout: for every step what nio returned
(its response class, and for errors the errcode, message and HTTP status). It never stops
early on a failed step unless later steps cannot run without it, so one run reports every
problem at once. ``tests/test_client_nio.py`` starts the server and asserts on the JSON.

nio is asyncio-only: this module must run in its own process, never under Trio.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from nio import (
    Api,
    AsyncClient,
    AsyncClientConfig,
    DevicesResponse,
    DirectRoomsResponse,
    ErrorResponse,
    LoginResponse,
    LogoutResponse,
    ProfileGetAvatarResponse,
    ProfileGetDisplayNameResponse,
    ProfileSetAvatarResponse,
    ProfileSetDisplayNameResponse,
    RegisterResponse,
    UpdateDeviceResponse,
    WhoamiResponse,
)
from nio.responses import RegisterInteractiveResponse

USERNAME = "niouser"
PASSWORD = "nio correct horse battery"
DISPLAY_NAME = "Nio Tester ✓"
AVATAR = "mxc://test.local/abc"
DEVICE_NAME = "nio laptop"
NEW_DEVICE_NAME = "nio laptop (renamed)"
CUSTOM_TYPE = "org.example.nio_test"
CUSTOM_CONTENT = {"answer": 42, "nested": {"list": [1, "two", None, True]}, "text": "ünï"}
DIRECT_CONTENT = {"@friend:test.local": ["!dm:test.local"]}
TOKEN_STAGE = "m.login.registration_token"


def describe(resp: object) -> dict[str, Any]:
    """The response class and, for errors, what the server said."""
    out: dict[str, Any] = {"type": type(resp).__name__}
    transport = getattr(resp, "transport_response", None)
    if transport is not None:
        out["http_status"] = transport.status
    if isinstance(resp, ErrorResponse):
        out.update(errcode=resp.status_code, message=resp.message)
    return out


def config() -> AsyncClientConfig:
    # Fail fast instead of nio's default of retrying connection errors forever.
    return AsyncClientConfig(max_timeouts=1, max_limit_exceeded=0, request_timeout=15,
                             max_timeout_retry_wait_time=1)


async def raw(client: AsyncClient, method: str, path: str,
              body: Any = None) -> tuple[int, Any]:
    """A request through nio's public low-level ``AsyncClient.send``.

    nio has no method for global account data (only ``list_direct_rooms`` reads one type),
    so the writes and the custom-type read go through here with nio's own path builder.
    """
    headers = {"Authorization": f"Bearer {client.access_token}",
               "Content-Type": "application/json"}
    data = None if body is None else Api.to_json(body)
    resp = await client.send(method, path, data, headers)
    try:
        parsed = await resp.json(content_type=None)
    except ValueError:
        parsed = await resp.text()
    return resp.status, parsed


async def register(homeserver: str, token: str, summary: dict[str, Any]) -> AsyncClient | None:
    client = AsyncClient(homeserver, config=config())
    # The challenge: the same first request nio's register_with_token sends.
    challenge = await client.register_interactive(
        USERNAME, PASSWORD, auth_dict={"initial_device_display_name": "matrix-nio"})
    step: dict[str, Any] = {"challenge": describe(challenge)}
    summary["register"] = step
    if not isinstance(challenge, RegisterInteractiveResponse):
        await client.close()
        return None
    step["challenge"].update(stages=challenge.stages, has_session=bool(challenge.session))
    # Our flow is Synapse's [token, dummy], which nio's one-call helper walks exactly.
    resp: Any = await client.register_with_token(USERNAME, PASSWORD, token, DEVICE_NAME)
    step["result"] = describe(resp)
    if not isinstance(resp, RegisterResponse):
        await client.close()
        return None
    step["result"].update(user_id=resp.user_id, device_id=resp.device_id,
                          has_token=bool(resp.access_token))
    step["client_logged_in"] = client.logged_in and client.user_id == resp.user_id
    return client


async def scenario(homeserver: str, token: str) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    first = await register(homeserver, token, summary)
    if first is None:
        return summary
    user_id = first.user_id
    first_device = first.device_id
    second = AsyncClient(homeserver, user_id, config=config())
    try:
        login = await second.login(PASSWORD, device_name="nio phone")
        summary["login"] = describe(login)
        if not isinstance(login, LoginResponse):
            return summary
        summary["login"].update(user_id=login.user_id, device_id=login.device_id,
                                new_device=login.device_id != first_device)
        old_token = login.access_token

        async def step(name: str, body: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
            out: dict[str, Any] = {}
            summary[name] = out
            try:
                await body(out)
            except Exception:  # reported in the summary; later steps still run
                out["exception"] = traceback.format_exc()

        async def whoami(out: dict[str, Any]) -> None:
            for label, client in (("second", second), ("first", first)):
                resp = await client.whoami()
                out[label] = describe(resp)
                if isinstance(resp, WhoamiResponse):
                    out[label].update(user_id=resp.user_id, device_id=resp.device_id,
                                      is_guest=resp.is_guest)

        async def profile(out: dict[str, Any]) -> None:
            resp: Any = await second.set_displayname(DISPLAY_NAME)
            out["set_displayname"] = describe(resp)
            out["set_displayname"]["ok"] = isinstance(resp, ProfileSetDisplayNameResponse)
            resp = await first.get_displayname()
            out["get_displayname"] = describe(resp)
            if isinstance(resp, ProfileGetDisplayNameResponse):
                out["get_displayname"]["displayname"] = resp.displayname
            resp = await second.set_avatar(AVATAR)
            out["set_avatar"] = describe(resp)
            out["set_avatar"]["ok"] = isinstance(resp, ProfileSetAvatarResponse)
            resp = await first.get_avatar()
            out["get_avatar"] = describe(resp)
            if isinstance(resp, ProfileGetAvatarResponse):
                out["get_avatar"]["avatar_url"] = resp.avatar_url
            resp = await second.get_profile()
            out["get_profile"] = describe(resp)
            if not isinstance(resp, ErrorResponse):
                out["get_profile"].update(displayname=resp.displayname,
                                          avatar_url=resp.avatar_url)

        async def devices(out: dict[str, Any]) -> None:
            resp: Any = await second.devices()
            out["list"] = describe(resp)
            if not isinstance(resp, DevicesResponse):
                return
            out["list"]["devices"] = {d.id: d.display_name for d in resp.devices}
            resp = await second.update_device(first_device,
                                              {"display_name": NEW_DEVICE_NAME})
            out["update"] = describe(resp)
            out["update"]["ok"] = isinstance(resp, UpdateDeviceResponse)
            resp = await first.devices()
            out["after"] = describe(resp)
            if isinstance(resp, DevicesResponse):
                out["after"]["devices"] = {d.id: d.display_name for d in resp.devices}

        async def account_data(out: dict[str, Any]) -> None:
            base = ["user", user_id, "account_data"]
            path = Api._build_path([*base, CUSTOM_TYPE])
            out["put_custom"] = await raw(second, "PUT", path, CUSTOM_CONTENT)
            out["get_custom"] = await raw(first, "GET", path)
            out["get_custom_matches"] = out["get_custom"][1] == CUSTOM_CONTENT
            status, _ = await raw(first, "GET", Api._build_path([*base, "org.example.unset"]))
            out["get_unset_status"] = status
            out["put_direct"] = await raw(second, "PUT", Api._build_path([*base, "m.direct"]),
                                          DIRECT_CONTENT)
            resp = await first.list_direct_rooms()
            out["list_direct_rooms"] = describe(resp)
            if isinstance(resp, DirectRoomsResponse):
                out["list_direct_rooms"]["matches"] = resp.rooms == DIRECT_CONTENT

        async def logout(out: dict[str, Any]) -> None:
            resp: Any = await second.logout()
            out["logout"] = describe(resp)
            out["logout"]["ok"] = isinstance(resp, LogoutResponse)
            out["client_token_cleared"] = second.access_token == ""
            stale = AsyncClient(homeserver, config=config())
            try:
                stale.restore_login(user_id, login.device_id, old_token)
                out["old_token_whoami"] = describe(await stale.whoami())
            finally:
                await stale.close()
            resp = await first.whoami()
            out["other_device_whoami"] = describe(resp)
            resp = await first.devices()
            if isinstance(resp, DevicesResponse):
                out["devices_after"] = sorted(d.id for d in resp.devices)

        await step("whoami", whoami)
        await step("profile", profile)
        await step("devices", devices)
        await step("account_data", account_data)
        await step("logout", logout)
        summary["ids"] = {"user_id": user_id, "first_device": first_device,
                          "second_device": login.device_id}
        return summary
    finally:
        await second.close()
        await first.close()


def main(argv: list[str]) -> int:
    homeserver, token = argv
    summary = asyncio.run(scenario(homeserver, token))
    print(json.dumps(summary, ensure_ascii=False, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
