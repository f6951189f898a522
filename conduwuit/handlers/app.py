"""The Quart app: routes, the spec's error JSON everywhere, CORS and security headers."""

from __future__ import annotations

import itertools
import logging
import os

from quart import Response, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import PathConverter, UnicodeConverter

from conduwuit.errors import MatrixError, too_large, unknown, unrecognized
from conduwuit.services import Services

from . import client, conduwuit, federation, media, wellknown
from .context import MatrixApp
from .json import json_response

log = logging.getLogger(__name__)

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization, Origin, Accept",
    "Access-Control-Max-Age": "86400",
}

# Nothing served here is meant to be rendered as a page, framed or sniffed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; "
    "form-action 'none'; base-uri 'none'; sandbox",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "X-XSS-Protection": "0",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "interest-cohort=()",
    "Cross-Origin-Resource-Policy": "cross-origin",
}

_request_ids = itertools.count(1)
_id_prefix = os.urandom(3).hex()


class UnquotingConverter(UnicodeConverter):
    """A path segment with the ``%2F``/``%25`` escapes that routing kept, decoded."""

    def to_python(self, value: str) -> str:
        return value.replace("%2F", "/").replace("%25", "%")


class UnquotingPathConverter(PathConverter):
    def to_python(self, value: str) -> str:
        return value.replace("%2F", "/").replace("%25", "%")


def create_app(services: Services) -> MatrixApp:
    """Build one app. Hypercorn needs a fresh app object per ``serve()`` call."""
    app = MatrixApp(__name__)
    app.services = services
    config = services.config
    app.config.update(
        MAX_CONTENT_LENGTH=config.max_request_size,
        BODY_TIMEOUT=config.client_receive_timeout,
        # Quart's default cancels sending any response after 60 s; big media and
        # slow clients need longer, bounded by the configured response timeout.
        RESPONSE_TIMEOUT=config.client_response_timeout,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    app.url_map.strict_slashes = False
    app.url_map.converters["default"] = UnquotingConverter
    app.url_map.converters["path"] = UnquotingPathConverter
    for bp in (wellknown.bp, conduwuit.bp, media.bp, *client.BLUEPRINTS,
               *federation.BLUEPRINTS):
        app.register_blueprint(bp)
    _install_hooks(app)
    _install_error_handlers(app)
    return app


def _install_hooks(app: MatrixApp) -> None:
    @app.before_request
    async def start_request() -> Response | None:
        g.request_id = f"{_id_prefix}-{next(_request_ids)}"
        if request.method == "OPTIONS":
            # CORS preflight: answered for every path before routing.
            return Response(b"", status=204)
        limit = request.max_content_length
        if limit is not None and (request.content_length or 0) > limit:
            raise too_large(f"Request body is larger than the limit of {limit} bytes")
        return None

    @app.after_request
    async def add_headers(response: Response) -> Response:
        response.headers.update(CORS_HEADERS)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def _install_error_handlers(app: MatrixApp) -> None:
    @app.errorhandler(MatrixError)
    async def matrix_error(error: MatrixError) -> Response:
        return json_response(error.to_json(), error.status)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        return json_response(_from_http_exception(error).to_json(), error.code or 500)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        request_id = g.get("request_id", "?")
        log.error(
            "request %s %s %s failed", request_id, request.method, request.path, exc_info=error
        )
        return json_response(unknown(f"Internal server error (request id {request_id})").to_json(),
                             500)


def _from_http_exception(error: HTTPException) -> MatrixError:
    code = error.code or 500
    if isinstance(error, NotFound):
        return unrecognized("Unrecognized request")
    if isinstance(error, MethodNotAllowed):
        return unrecognized("Method not allowed for this endpoint", status=405)
    if isinstance(error, RequestEntityTooLarge):
        return too_large()
    if code == 408:
        return MatrixError(408, "M_UNKNOWN", "Timed out waiting for the request body")
    errcode = "M_UNKNOWN" if code >= 500 else "M_UNRECOGNIZED"
    return MatrixError(code, errcode, error.description or error.name)
