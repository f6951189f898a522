"""``/_matrix/federation/v1/user/*``: our users' devices and keys, for other servers.

Keys come from the E2EE service; device display names go out only with
``allow_device_name_federation``. Users of other servers are ignored: the spec says
a server asks only about the destination's users.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart import Response

from conduwuit.errors import bad_json, invalid_param
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.protocol.ids import UserId

from .auth import federation_blueprint, origin

bp = federation_blueprint("federation_user", __name__)

# The server asking is not a user: it sees only signatures made by the key owners.
NO_USER = ""


def _e2ee() -> Any:
    return getattr(services(), "e2ee", None)


def _is_local(user_id: str) -> bool:
    parsed = UserId.try_parse(user_id)
    return parsed is not None and parsed.server_name == services().config.server_name


def _device_keys(user_id: str, device_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Device keys as our /keys/query shows them, display names only if allowed."""
    e2ee = _e2ee()
    if e2ee is None:
        return {}
    keys: dict[str, dict[str, Any]] = e2ee.keys.query_devices(NO_USER, user_id, device_ids)
    show_names = services().config.allow_device_name_federation
    for device in keys.values():
        unsigned = device.get("unsigned") or {}
        if not show_names:
            unsigned.pop("device_display_name", None)
        device["unsigned"] = unsigned
    return keys


def _cross_signing(user_id: str, usage: str) -> dict[str, Any] | None:
    e2ee = _e2ee()
    if e2ee is None:
        return None
    key: dict[str, Any] | None = e2ee.cross_signing.for_query(NO_USER, user_id, usage)
    return key


@bp.get("/_matrix/federation/v1/user/devices/<user_id>")
async def devices(user_id: str) -> Response:
    await origin()
    if not _is_local(user_id):
        raise invalid_param(f"{user_id} is not a user of this server")
    show_names = services().config.allow_device_name_federation
    keys = _device_keys(user_id, [])
    listed: list[dict[str, Any]] = []
    for device in services().devices.for_user(user_id):
        device_id = device["device_id"]
        if device_id not in keys:
            continue  # a device without identity keys cannot be talked to
        entry: dict[str, Any] = {"device_id": device_id, "keys": keys[device_id]}
        if show_names and device.get("display_name"):
            entry["device_display_name"] = device["display_name"]
        listed.append(entry)
    # Device-list changes draw their positions from the store's one counter, so its
    # current value is a stream id no earlier change can exceed.
    body: dict[str, Any] = {"user_id": user_id, "devices": listed,
                            "stream_id": services().store.current_count()}
    for usage, field in (("master", "master_key"), ("self_signing", "self_signing_key")):
        key = _cross_signing(user_id, usage)
        if key is not None:
            body[field] = key
    return json_response(body)


@bp.post("/_matrix/federation/v1/user/keys/query")
async def keys_query() -> Response:
    await origin()
    body = await json_body()
    wanted = body.get("device_keys")
    if not isinstance(wanted, dict):
        raise bad_json("device_keys must map user ids to lists of device ids")
    answer: dict[str, Any] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
    for user_id, device_ids in wanted.items():
        if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
            raise bad_json(f"device_keys.{user_id} must be a list of device ids")
        if not _is_local(user_id):
            continue
        answer["device_keys"][user_id] = _device_keys(user_id, device_ids)
        for usage, field in (("master", "master_keys"), ("self_signing", "self_signing_keys")):
            key = _cross_signing(user_id, usage)
            if key is not None:
                answer[field][user_id] = key
    return json_response(answer)


@bp.post("/_matrix/federation/v1/user/keys/claim")
async def keys_claim() -> Response:
    await origin()
    body = await json_body()
    wanted = body.get("one_time_keys")
    if not isinstance(wanted, dict):
        raise bad_json("one_time_keys must map user ids to device ids to algorithms")
    claimed: dict[str, Any] = {}
    e2ee = _e2ee()
    for user_id, by_device in wanted.items():
        if not isinstance(by_device, Mapping) or not all(
                isinstance(a, str) for a in by_device.values()):
            raise bad_json("one_time_keys must map user ids to device ids to algorithms")
        if e2ee is None or not _is_local(user_id):
            continue
        for device_id, algorithm in by_device.items():
            key = e2ee.keys.claim(user_id, device_id, algorithm)
            if key is not None:
                claimed.setdefault(user_id, {})[device_id] = key
    return json_response({"one_time_keys": claimed})
