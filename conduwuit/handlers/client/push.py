"""Push: ``/pushrules``, ``/pushers``, ``/pushers/set`` and ``/notifications``.

Thin: every check and the storage are in ``services/push/``.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from conduwuit.errors import missing_param
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route

bp = Blueprint("client_push", __name__)

RULE = "/pushrules/global/<kind>/<rule_id>"


@client_route(bp, "GET", "/pushrules/")
async def get_all() -> Response:
    who = await requester()
    return json_response({"global": services().push.rules.ruleset(who.user_id)})


@client_route(bp, "GET", "/pushrules/global/")
async def get_global() -> Response:
    who = await requester()
    return json_response(services().push.rules.ruleset(who.user_id))


@client_route(bp, "GET", RULE)
async def get_rule(kind: str, rule_id: str) -> Response:
    who = await requester()
    return json_response(services().push.rules.rule(who.user_id, kind, rule_id))


@client_route(bp, "PUT", RULE)
async def put_rule(kind: str, rule_id: str) -> Response:
    who = await requester()
    body = await json_body()
    services().push.rules.put_rule(who.user_id, kind, rule_id, body,
                                   before=request.args.get("before"),
                                   after=request.args.get("after"))
    return json_response({})


@client_route(bp, "DELETE", RULE)
async def delete_rule(kind: str, rule_id: str) -> Response:
    who = await requester()
    services().push.rules.delete_rule(who.user_id, kind, rule_id)
    return json_response({})


@client_route(bp, "GET", RULE + "/enabled")
async def get_enabled(kind: str, rule_id: str) -> Response:
    who = await requester()
    rule = services().push.rules.rule(who.user_id, kind, rule_id)
    return json_response({"enabled": bool(rule.get("enabled", True))})


@client_route(bp, "PUT", RULE + "/enabled")
async def put_enabled(kind: str, rule_id: str) -> Response:
    who = await requester()
    body = await json_body()
    if "enabled" not in body:
        raise missing_param("enabled is required")
    services().push.rules.set_enabled(who.user_id, kind, rule_id, body["enabled"])
    return json_response({})


@client_route(bp, "GET", RULE + "/actions")
async def get_actions(kind: str, rule_id: str) -> Response:
    who = await requester()
    rule = services().push.rules.rule(who.user_id, kind, rule_id)
    return json_response({"actions": rule.get("actions", [])})


@client_route(bp, "PUT", RULE + "/actions")
async def put_actions(kind: str, rule_id: str) -> Response:
    who = await requester()
    body = await json_body()
    if "actions" not in body:
        raise missing_param("actions is required")
    services().push.rules.set_actions(who.user_id, kind, rule_id, body["actions"])
    return json_response({})


@client_route(bp, "GET", "/pushers")
async def get_pushers() -> Response:
    who = await requester()
    return json_response({"pushers": services().push.pushers.listed(who.user_id)})


@client_route(bp, "POST", "/pushers/set")
async def set_pusher() -> Response:
    who = await requester()
    services().push.pushers.set(who.user_id, who.device_id, await json_body())
    return json_response({})


@client_route(bp, "GET", "/notifications")
async def get_notifications() -> Response:
    who = await requester()
    args = request.args
    return json_response(services().push.notifications.page(
        who.user_id, args.get("from"), args.get("limit"), args.get("only")))
