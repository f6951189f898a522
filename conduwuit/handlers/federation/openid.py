"""``GET /_matrix/federation/v1/openid/userinfo``: who an OpenID token belongs to.

Called by third-party services, not homeservers: no X-Matrix signature, the token is
the credential.
"""

from __future__ import annotations

from quart import Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_response

from .auth import federation_blueprint

bp = federation_blueprint("federation_openid", __name__)


@bp.get("/_matrix/federation/v1/openid/userinfo")
async def userinfo() -> Response:
    token = request.args.get("access_token")
    user_id = services().federation.openid.user_of(token) if token else None
    if user_id is None:
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token unknown or expired")
    return json_response({"sub": user_id})
