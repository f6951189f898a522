"""Media round trip with a real client: matrix-nio uploads, downloads and thumbnails images.

Real PNG, JPEG, GIF (animated) and WebP files are made with Pillow here; nio (in its
own asyncio process, ``tests/support/nio_media_scenario.py``) uploads each to the real
server process, downloads it back and asks for thumbnails; this test checks every byte
and content type.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.support.nio_harness import context_of, nio_server, run_scenario

pytestmark = pytest.mark.slow

TOKEN = "nio-media-token-4321"
THUMB = 64


def _picture(size: tuple[int, int], shade: int) -> Image.Image:
    image = Image.new("RGB", size, (shade, 120, 255 - shade))
    for x in range(0, size[0], 16):  # some detail, so encoders have work to do
        for y in range(size[1]):
            image.putpixel((x, y), (255, 255, 255))
    return image


def make_images(directory: Path) -> dict[str, str]:
    """The test images and their content types (also written to ``types.json``)."""
    directory.mkdir()
    _picture((320, 200), 30).save(directory / "picture.png", "PNG")
    _picture((400, 300), 90).save(directory / "photo.jpg", "JPEG", quality=85)
    frames = [_picture((120, 90), shade).convert("P") for shade in (0, 128, 250)]
    frames[0].save(directory / "anim.gif", "GIF", save_all=True,
                   append_images=frames[1:], duration=100, loop=0)
    _picture((256, 256), 200).save(directory / "sticker.webp", "WEBP", quality=80)
    types = {"picture.png": "image/png", "photo.jpg": "image/jpeg",
             "anim.gif": "image/gif", "sticker.webp": "image/webp"}
    (directory / "types.json").write_text(json.dumps(types))
    return types


def test_nio_media_round_trip(tmp_path: Path) -> None:
    images = tmp_path / "images"
    types = make_images(images)
    (tmp_path / "server").mkdir()
    with nio_server(tmp_path / "server", TOKEN) as url:
        summary = run_scenario("nio_media_scenario", url, TOKEN, str(images))
    context = context_of(summary)
    assert "exception" not in summary, context
    assert summary["register"]["type"] == "RegisterResponse", context
    assert set(summary["files"]) == set(types), context
    for name, content_type in types.items():
        result = summary["files"][name]
        original = (images / name).read_bytes()
        with Image.open(io.BytesIO(original)) as image:
            width, height = image.size

        assert result["upload"]["type"] == "UploadResponse", (name, context)
        assert result["upload"]["uri"].startswith("mxc://test.local/"), (name, context)

        down = result["download"]
        assert down["type"] == "MemoryDownloadResponse", (name, context)
        assert down["sha256"] == hashlib.sha256(original).hexdigest(), (name, context)
        assert down["content_type"] == content_type, (name, context)
        assert down["filename"] == name, (name, context)

        for method in ("scale", "crop"):
            thumb = result[f"thumbnail_{method}"]
            assert thumb["type"] == "ThumbnailResponse", (name, method, context)
            assert thumb["content_type"].startswith("image/"), (name, method, context)
            assert thumb["bytes"] > 0, (name, method, context)
            fmt = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif",
                   "WEBP": "image/webp"}[thumb["format"]]
            assert thumb["content_type"] == fmt, (name, method, context)  # type = bytes
            w, h = thumb["size"]
            assert w <= width and h <= height, (name, method, context)  # never upscaled
            if method == "crop":
                assert (w, h) == (min(THUMB, width), min(THUMB, height)) or w == h, (
                    name, method, context)
            else:
                assert max(w, h) >= THUMB and abs(w / h - width / height) < 0.05, (
                    name, method, context)
