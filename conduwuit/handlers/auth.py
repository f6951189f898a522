"""Authentication of client requests: the one dependency every protected handler calls."""

from __future__ import annotations

from quart import g, request

from conduwuit.errors import MatrixError
from conduwuit.services.requester import Requester

from .context import services


def access_token() -> str | None:
    """The token from ``Authorization: Bearer`` or, where clients still send it, the query."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MatrixError(401, "M_MISSING_TOKEN", "Authorization header is not a Bearer token")
        return token.strip()
    # Deprecated in v1.11 but still allowed by the spec, and sent by older clients.
    return request.args.get("access_token") or None


async def requester(*, allow_guest: bool = False) -> Requester:
    """The authenticated user of this request, or the spec's 401/403."""
    token = access_token()
    if token is None:
        raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
    # Identity assertion by application services (ignored for users' tokens);
    # device_id per MSC4326, also under its unstable MSC3202 name.
    device_id = request.args.get("device_id") or request.args.get("org.matrix.msc3202.device_id")
    who = await services().auth.authenticate(token, ip=client_ip(),
                                             user_id=request.args.get("user_id") or None,
                                             device_id=device_id or None)
    if who.is_guest and not allow_guest:
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests cannot use this endpoint")
    g.requester = who
    return who


async def optional_requester() -> Requester | None:
    """Like :func:`requester` for endpoints where authentication is optional."""
    if access_token() is None:
        return None
    return await requester(allow_guest=True)


def require_self(who: Requester, user_id: str, what: str = "this data") -> None:
    """Only the owner may read or write per-user data."""
    if who.user_id != user_id:
        raise MatrixError(403, "M_FORBIDDEN", f"You cannot access {what} of another user")


def client_ip() -> str:
    """The client's address; X-Forwarded-For counts only from a proxy on this machine."""
    peer = request.remote_addr or ""
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded and peer in ("", "127.0.0.1", "::1", "<local>"):
        return forwarded.split(",")[0].strip()
    return peer
