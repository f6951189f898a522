"""The media repository over HTTP: authenticated client/v1 media and the legacy /media routes.

Authenticated (``/_matrix/client/v1/media/...`` and its MSC3916 unstable prefix):
``config``, ``download``, ``thumbnail``, ``preview_url``. Under ``/_matrix/media/``:
``v3``/``r0`` ``upload`` (always on), asynchronous uploads (``v1/create`` and ``v3``
``PUT upload/{serverName}/{mediaId}``), and the legacy unauthenticated ``download``
and ``thumbnail`` plus ``config``, ``preview_url`` and ``v1/upload``. As in conduwuit,
``allow_legacy_media = false`` answers the legacy ones 403 "Unauthenticated media is
disabled" (``preview_url`` is redirected to the authenticated route), and with
``freeze_legacy_media`` the legacy routes serve only media already stored here: they
never fetch from other servers.

Files are streamed from disk. Every file response carries a sandboxing
``Content-Security-Policy`` (Synapse's and conduwuit's), ``nosniff``, a
cross-origin ``Cross-Origin-Resource-Policy``, an immutable ``Cache-Control`` and a
``Content-Disposition`` that is ``inline`` only for types browsers render inertly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import trio
from quart import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestTimeout

from conduwuit.errors import forbidden, invalid_param, missing_param
from conduwuit.services.media import DEFAULT_TIMEOUT_MS, OpenFile, ThumbSize
from conduwuit.services.media.disposition import (
    content_disposition,
    is_inline,
    sanitise_filename,
    served_content_type,
)
from conduwuit.services.media.thumbnails import standard_size

from .auth import requester
from .context import services
from .json import json_response

bp = Blueprint("media", __name__)

F = TypeVar("F", bound=Callable[..., Any])

AUTHED = ("/_matrix/client/v1/media", "/_matrix/client/unstable/org.matrix.msc3916/media")
MEDIA_V3 = ("/_matrix/media/v3", "/_matrix/media/r0")
LEGACY = ("/_matrix/media/v3", "/_matrix/media/r0", "/_matrix/media/v1")

MEDIA_CSP = ("sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
             "style-src 'unsafe-inline'; object-src 'self';")
# Authenticated responses must not be kept by shared caches (a CDN would hand them to
# anyone); the unauthenticated legacy ones may be.
CACHE_PRIVATE = "private, max-age=31536000, immutable"
CACHE_PUBLIC = "public, max-age=31536000, immutable"
THUMBNAIL_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp",
                        "image/gif": "gif"}
MAX_THUMBNAIL_SIDE = 10_000


def media_route(method: str, prefixes: Sequence[str], path: str) -> Callable[[F], F]:
    """Route ``{prefix}{path}`` for every prefix to the handler."""

    def register(handler: F) -> F:
        for index, prefix in enumerate(prefixes):
            bp.add_url_rule(f"{prefix}{path}", f"{handler.__name__}_{index}", handler,
                            methods=[method])
        return handler

    return register


# ------------------------------------------------------------------ arguments


def _bool_arg(name: str, default: bool) -> bool:
    value = request.args.get(name)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise invalid_param(f"{name} must be true or false")
    return value == "true"


def _int_arg(name: str) -> int | None:
    value = request.args.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise invalid_param(f"{name} must be an integer") from None


def _timeout_ms() -> int:
    value = _int_arg("timeout_ms")
    if value is None:
        return DEFAULT_TIMEOUT_MS
    if value < 0:
        raise invalid_param("timeout_ms must not be negative")
    return value


def _thumbnail_size() -> tuple[ThumbSize, bool]:
    dims = []
    for name in ("width", "height"):
        value = _int_arg(name)
        if value is None:
            raise missing_param(f"Missing the {name} parameter")
        if not 1 <= value <= MAX_THUMBNAIL_SIDE:
            raise invalid_param(f"{name} must be from 1 to {MAX_THUMBNAIL_SIDE}")
        dims.append(value)
    method = request.args.get("method", "scale")
    if method not in ("crop", "scale"):
        raise invalid_param("method must be crop or scale")
    animated = _bool_arg("animated", False)
    return standard_size(dims[0], dims[1], "crop" if method == "crop" else "scale"), animated


class _BodyChunks:
    """The request body as chunks, as they arrive, within the body timeout."""

    def __init__(self) -> None:
        self._chunks = request.body.__aiter__()
        self._deadline = trio.current_time() + float(current_app.config["BODY_TIMEOUT"])

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        with trio.move_on_at(self._deadline):
            chunk: bytes = await self._chunks.__anext__()
            return chunk
        raise RequestTimeout()


def _require_legacy() -> None:
    if not services().config.allow_legacy_media:
        raise forbidden("Unauthenticated media is disabled")


# ------------------------------------------------------------------ responses


def _file_response(handle: OpenFile, content_type: str, disposition: str,
                   cache_control: str) -> Response:
    response = Response(handle.chunks(), status=200, content_type=content_type)
    response.headers["Content-Length"] = str(handle.size)
    response.headers["Content-Disposition"] = disposition
    response.headers["Content-Security-Policy"] = MEDIA_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    response.headers["Cache-Control"] = cache_control
    return response


async def _download(server_name: str, media_id: str, filename: str | None, *,
                    legacy: bool) -> Response:
    media = services().media
    allow_remote = True
    if legacy:
        allow_remote = _bool_arg("allow_remote", True) and not services().config.freeze_legacy_media
    info = await media.get(server_name, media_id, timeout_ms=_timeout_ms(),
                           allow_remote=allow_remote)
    handle = await media.open(info)
    name = sanitise_filename(filename if filename is not None else info.filename)
    return _file_response(handle, served_content_type(info.content_type),
                          content_disposition(is_inline(info.content_type), name),
                          CACHE_PUBLIC if legacy else CACHE_PRIVATE)


async def _thumbnail(server_name: str, media_id: str, *, legacy: bool) -> Response:
    size, animated = _thumbnail_size()
    allow_remote = True
    if legacy:
        allow_remote = _bool_arg("allow_remote", True) and not services().config.freeze_legacy_media
    info, handle = await services().media.thumbnail(
        server_name, media_id, size, animated=animated, timeout_ms=_timeout_ms(),
        allow_remote=allow_remote)
    extension = THUMBNAIL_EXTENSIONS.get(info.content_type, "png")
    return _file_response(handle, info.content_type,
                          content_disposition(True, f"thumbnail.{extension}"),
                          CACHE_PUBLIC if legacy else CACHE_PRIVATE)


def _config() -> Response:
    return json_response({"m.upload.size": services().config.max_request_size})


async def _preview() -> Response:
    ts = _int_arg("ts")
    if ts is not None and ts < 0:
        raise invalid_param("ts must not be negative")
    return json_response(await services().media.preview_url(request.args.get("url")))


async def _upload() -> Response:
    who = await requester()
    info = await services().media.upload(
        _BodyChunks(), user_id=who.user_id, content_type=request.headers.get("Content-Type"),
        filename=request.args.get("filename"))
    return json_response({"content_uri": info.mxc})


# ------------------------------------------------------ authenticated (v1)


@media_route("GET", AUTHED, "/config")
async def config() -> Response:
    await requester(allow_guest=True)
    return _config()


@media_route("GET", AUTHED, "/download/<server_name>/<media_id>")
async def download(server_name: str, media_id: str) -> Response:
    await requester(allow_guest=True)
    return await _download(server_name, media_id, None, legacy=False)


@media_route("GET", AUTHED, "/download/<server_name>/<media_id>/<filename>")
async def download_as(server_name: str, media_id: str, filename: str) -> Response:
    await requester(allow_guest=True)
    return await _download(server_name, media_id, filename, legacy=False)


@media_route("GET", AUTHED, "/thumbnail/<server_name>/<media_id>")
async def thumbnail(server_name: str, media_id: str) -> Response:
    await requester(allow_guest=True)
    return await _thumbnail(server_name, media_id, legacy=False)


@media_route("GET", AUTHED, "/preview_url")
async def preview_url() -> Response:
    await requester(allow_guest=True)
    return await _preview()


# ------------------------------------------------------------ uploading


@media_route("POST", MEDIA_V3, "/upload")
async def upload() -> Response:
    return await _upload()


@media_route("POST", ("/_matrix/media/v1",), "/create")
async def create() -> Response:
    who = await requester()
    uri, expires = services().media.create_pending(who.user_id)
    return json_response({"content_uri": uri, "unused_expires_at": expires})


@media_route("PUT", ("/_matrix/media/v3",), "/upload/<server_name>/<media_id>")
async def upload_to(server_name: str, media_id: str) -> Response:
    who = await requester()
    await services().media.upload_pending(
        server_name, media_id, _BodyChunks(), user_id=who.user_id,
        content_type=request.headers.get("Content-Type"), filename=request.args.get("filename"))
    return json_response({})


# --------------------------------------------------- legacy (/_matrix/media)


@media_route("POST", ("/_matrix/media/v1",), "/upload")
async def legacy_upload() -> Response:
    _require_legacy()
    return await _upload()


@media_route("GET", LEGACY, "/config")
async def legacy_config() -> Response:
    _require_legacy()
    await requester(allow_guest=True)
    return _config()


@media_route("GET", LEGACY, "/download/<server_name>/<media_id>")
async def legacy_download(server_name: str, media_id: str) -> Response:
    _require_legacy()
    return await _download(server_name, media_id, None, legacy=True)


@media_route("GET", LEGACY, "/download/<server_name>/<media_id>/<filename>")
async def legacy_download_as(server_name: str, media_id: str, filename: str) -> Response:
    _require_legacy()
    return await _download(server_name, media_id, filename, legacy=True)


@media_route("GET", LEGACY, "/thumbnail/<server_name>/<media_id>")
async def legacy_thumbnail(server_name: str, media_id: str) -> Response:
    _require_legacy()
    return await _thumbnail(server_name, media_id, legacy=True)


@media_route("GET", LEGACY, "/preview_url")
async def legacy_preview_url() -> Response:
    if not services().config.allow_legacy_media:
        query = request.query_string.decode("latin-1")
        target = f"{AUTHED[0]}/preview_url" + (f"?{query}" if query else "")
        return Response(b"", status=307, headers={"Location": target})
    await requester(allow_guest=True)
    return await _preview()

