"""``/keys/*``: device keys, one-time keys, key changes, cross-signing keys and signatures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio
from quart import Blueprint, Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route
from conduwuit.services.accounts import PASSWORD_STAGE
from conduwuit.services.e2ee.common import require_object, server_of
from conduwuit.services.e2ee.cross_signing import MASTER, SELF_SIGNING, USER_SIGNING
from conduwuit.services.e2ee.keys import require_device_list
from conduwuit.services.sync import parse_token

bp = Blueprint("client_keys", __name__)

# Cross-signing was unstable before v1.1; clients of that era still use these prefixes.
WITH_UNSTABLE = ("r0", "v3", "unstable")


def _own_device(device_id: str | None) -> str:
    if device_id is None:
        raise MatrixError(400, "M_INVALID_PARAM", "This access token has no device")
    return device_id


@client_route(bp, "POST", "/keys/upload")
async def upload_keys() -> Response:
    who = await requester(allow_guest=True)
    body = await json_body()
    counts = services().e2ee.keys.upload(who.user_id, _own_device(who.device_id), body)
    return json_response({"one_time_key_counts": counts})


@client_route(bp, "POST", "/keys/query")
async def query_keys() -> Response:
    who = await requester(allow_guest=True)
    body = await json_body()
    wanted = require_object(body.get("device_keys"), "'device_keys'")
    e2ee = services().e2ee
    local = services().config.server_name
    device_keys: dict[str, Any] = {}
    master_keys: dict[str, Any] = {}
    self_signing_keys: dict[str, Any] = {}
    user_signing_keys: dict[str, Any] = {}
    failures: dict[str, Any] = {}
    remote: dict[str, dict[str, list[str]]] = {}
    for user_id, raw_devices in wanted.items():
        device_ids = require_device_list(raw_devices)
        if server_of(user_id) != local:
            remote.setdefault(server_of(user_id), {})[user_id] = device_ids
            continue
        device_keys[user_id] = e2ee.keys.query_devices(who.user_id, user_id, device_ids)
        for usage, out in ((MASTER, master_keys), (SELF_SIGNING, self_signing_keys),
                           (USER_SIGNING, user_signing_keys)):
            key = e2ee.cross_signing.for_query(who.user_id, user_id, usage)
            if key is not None:
                out[user_id] = key
    answers = await _ask_servers(remote, _timeout_s(body), failures)
    for answer in answers:
        for field, out in (("device_keys", device_keys), ("master_keys", master_keys),
                           ("self_signing_keys", self_signing_keys)):
            section = answer.get(field)
            if isinstance(section, dict):
                out.update(section)
    return json_response({"device_keys": device_keys, "master_keys": master_keys,
                          "self_signing_keys": self_signing_keys,
                          "user_signing_keys": user_signing_keys, "failures": failures})


def _timeout_s(body: dict[str, Any]) -> float:
    timeout = body.get("timeout", 10_000)
    return max(0.1, min(60.0, timeout / 1000)) if isinstance(timeout, int) else 10.0


RemoteAsk = Callable[[str, Any], Awaitable[dict[str, Any]]]


async def _ask_servers(remote: Mapping[str, Any], timeout: float, failures: dict[str, Any],
                       ask: RemoteAsk | None = None) -> list[dict[str, Any]]:
    """Ask other servers at once (default: their device keys); failures land in failures."""
    answers: list[dict[str, Any]] = []
    svc = services()
    ask = ask or svc.federation.queries.keys_query

    async def one(server: str, users: Any) -> None:
        if not svc.config.allow_federation:
            failures[server] = {"status": 503, "message": "Federation is disabled here"}
            return
        try:
            with trio.fail_after(timeout):
                answers.append(await ask(server, users))
        except (MatrixError, trio.TooSlowError) as exc:
            failures[server] = {"status": getattr(exc, "status", 504),
                                "message": getattr(exc, "error", "Timed out")}

    async with trio.open_nursery() as nursery:
        for server, users in remote.items():
            nursery.start_soon(one, server, users)
    return answers


@client_route(bp, "POST", "/keys/claim")
async def claim_keys() -> Response:
    await requester(allow_guest=True)
    body = await json_body()
    wanted = require_object(body.get("one_time_keys"), "'one_time_keys'")
    local = services().config.server_name
    claimed, failures = services().e2ee.keys.claim_many(
        {u: d for u, d in wanted.items() if server_of(u) == local})
    remote: dict[str, dict[str, Any]] = {}
    for user_id, devices in wanted.items():
        if server_of(user_id) != local:
            if not isinstance(devices, dict) or not all(isinstance(a, str)
                                                        for a in devices.values()):
                raise MatrixError(400, "M_BAD_JSON",
                                  "one_time_keys must map user ids to device ids to algorithms")
            remote.setdefault(server_of(user_id), {})[user_id] = devices
    claim_remote = services().federation.queries.keys_claim
    for answer in await _ask_servers(remote, _timeout_s(body), failures, claim_remote):
        section = answer.get("one_time_keys")
        if isinstance(section, dict):
            claimed.update(section)
    return json_response({"one_time_keys": claimed, "failures": failures})


@client_route(bp, "GET", "/keys/changes")
async def key_changes() -> Response:
    who = await requester(allow_guest=True)
    since = parse_token(request.args.get("from"))
    if since is None:
        raise MatrixError(400, "M_MISSING_PARAM", "'from' is required")
    svc = services()
    upto = parse_token(request.args.get("to"))
    current = svc.store.current_count()
    upto = current if upto is None else min(upto, current)
    return json_response(svc.e2ee.device_lists.changes(who.user_id, since, upto))


@client_route(bp, "POST", "/keys/device_signing/upload", versions=WITH_UNSTABLE)
async def upload_cross_signing_keys() -> Response:
    who = await requester()
    body = await json_body()
    svc = services()
    cross_signing = svc.e2ee.cross_signing
    new = cross_signing.check_upload(who.user_id, body)
    if cross_signing.needs_auth(who.user_id, new) and who.appservice_id is None:
        await svc.uia.authenticate(body.get("auth"), [[PASSWORD_STAGE]],
                                   {PASSWORD_STAGE: svc.accounts.password_stage(who.user_id)},
                                   user_id=who.user_id)
        # Another request may have changed the keys while this one waited for UIA.
        new = cross_signing.check_upload(who.user_id, body)
    cross_signing.store_keys(who.user_id, new)
    return json_response({})


@client_route(bp, "POST", "/keys/signatures/upload", versions=WITH_UNSTABLE)
async def upload_signatures() -> Response:
    who = await requester()
    body = await json_body()
    failures = services().e2ee.cross_signing.upload_signatures(who.user_id, body)
    return json_response({"failures": failures})
