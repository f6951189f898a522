"""matrix-nio uploads, downloads and thumbnails real images on a running server.

Run as ``python -m tests.support.nio_media_scenario HOMESERVER_URL TOKEN IMAGE_DIR``:
registers a user, then for every file in IMAGE_DIR (named ``<label>.<ext>``, made with
Pillow by ``tests/test_media_nio.py``) uploads it with nio's ``upload()`` under the
content type the test names in ``types.json``, downloads it back with ``download()`` and
asks for a 64x64 ``thumbnail()`` with both methods. It prints one JSON object: per file
what nio returned, the SHA-256 of what came back, and the thumbnail's type and size as
Pillow reads them.

nio is asyncio-only: this module must run in its own process, never under Trio.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    MemoryDownloadResponse,
    RegisterResponse,
    ThumbnailResponse,
    UploadResponse,
)
from nio.api import ResizingMethod
from PIL import Image

from tests.support.nio_common import run_scenario

USERNAME = "niomedia"
PASSWORD = "nio media password"
THUMB = 64


def describe(resp: object) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(resp).__name__}
    transport = getattr(resp, "transport_response", None)
    if transport is not None:
        out["http_status"] = transport.status
    if isinstance(resp, ErrorResponse):
        out.update(errcode=resp.status_code, message=resp.message)
    return out


async def one_file(client: AsyncClient, path: Path, content_type: str) -> dict[str, Any]:
    data = path.read_bytes()
    out: dict[str, Any] = {}
    up, _ = await client.upload(lambda *_: data, content_type=content_type,
                                filename=path.name, filesize=len(data))
    out["upload"] = describe(up)
    if not isinstance(up, UploadResponse):
        return out
    out["upload"]["uri"] = up.content_uri
    down = await client.download(mxc=up.content_uri)
    out["download"] = describe(down)
    if isinstance(down, MemoryDownloadResponse):
        out["download"].update(sha256=hashlib.sha256(down.body).hexdigest(),
                               content_type=down.content_type, filename=down.filename)
    server_name, media_id = up.content_uri.removeprefix("mxc://").split("/")
    for method in (ResizingMethod.scale, ResizingMethod.crop):
        thumb = await client.thumbnail(server_name, media_id, THUMB, THUMB, method)
        entry = describe(thumb)
        if isinstance(thumb, ThumbnailResponse):
            with Image.open(io.BytesIO(thumb.body)) as image:
                entry.update(content_type=thumb.content_type, format=image.format,
                             size=list(image.size), bytes=len(thumb.body))
        out[f"thumbnail_{method.value}"] = entry
    return out


async def scenario(homeserver: str, token: str, images: Path,
                   summary: dict[str, Any]) -> None:
    client = AsyncClient(homeserver, config=AsyncClientConfig(
        max_timeouts=1, max_limit_exceeded=0, request_timeout=30,
        max_timeout_retry_wait_time=1))
    try:
        reg = await client.register_with_token(USERNAME, PASSWORD, token, "nio media")
        summary["register"] = describe(reg)
        if not isinstance(reg, RegisterResponse):
            return
        types: dict[str, str] = json.loads((images / "types.json").read_text())
        summary["files"] = {}
        for name, content_type in types.items():
            summary["files"][name] = await one_file(client, images / name, content_type)
    finally:
        await client.close()


def main(argv: list[str]) -> int:
    homeserver, token, images = argv
    return run_scenario(lambda summary: scenario(homeserver, token, Path(images), summary))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
