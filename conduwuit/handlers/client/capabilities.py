"""``GET /capabilities``: what this server lets the user do (spec capabilities.yaml)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from conduwuit.config import Config
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_response
from conduwuit.handlers.routing import client_route
from conduwuit.protocol.room_versions import ROOM_VERSIONS

bp = Blueprint("client_capabilities", __name__)

# Every version in the table is fully supported and stable in the spec, so none is
# advertised as "unstable"; allow_unstable_room_versions has nothing to hide until the
# table gains experimental versions.
UNSTABLE_ROOM_VERSIONS: frozenset[str] = frozenset()


@client_route(bp, "GET", "/capabilities")
async def capabilities() -> Response:
    await requester(allow_guest=True)
    return json_response({"capabilities": server_capabilities(services().config)})


def server_capabilities(config: Config) -> dict[str, Any]:
    return {
        "m.change_password": {"enabled": True},
        # Deprecated by m.profile_fields, which MUST agree with them (spec v1.16).
        "m.set_displayname": {"enabled": True},
        "m.set_avatar_url": {"enabled": True},
        "m.profile_fields": {"enabled": True},
        # No email, SMS or identity server here (see thirdparty.py).
        "m.3pid_changes": {"enabled": False},
        "m.get_login_token": {"enabled": config.login_via_existing_session},
        "m.forget_forced_upon_leave": {"enabled": config.forget_forced_upon_leave},
        "m.room_versions": {
            "default": config.default_room_version,
            "available": available_room_versions(config),
        },
    }


def available_room_versions(config: Config) -> dict[str, str]:
    available: dict[str, str] = {}
    for version in ROOM_VERSIONS:
        if version not in UNSTABLE_ROOM_VERSIONS:
            available[version] = "stable"
        elif config.allow_unstable_room_versions:
            available[version] = "unstable"
    return available
