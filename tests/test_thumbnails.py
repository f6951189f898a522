"""Thumbnails: sizes and methods, formats, animation, bombs, caching, and the HTTP routes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from PIL import Image

from conduwuit.server import Server
from conduwuit.services.media import Media, thumbnails
from conduwuit.services.media.thumbnails import (
    MAX_PIXELS,
    NotAnImage,
    ThumbSize,
    TooManyPixels,
    output_size,
    probe,
    render,
    standard_size,
)
from tests.support.users import LoggedIn, make_user

AUTHED = "/_matrix/client/v1/media"
MEDIA = "/_matrix/media/v3"


def image_bytes(fmt: str, size: tuple[int, int] = (200, 100), mode: str = "RGB",
                **save: Any) -> bytes:
    out = io.BytesIO()
    im = Image.new(mode, size, "red")
    # a gradient, so that resampling and cropping have something to work on
    for x in range(0, size[0], 7):
        im.putpixel((x, x * size[1] // size[0]), (0, 0, 255) if mode == "RGB" else
                    (0, 0, 255, 128))
    im.save(out, fmt, **save)
    return out.getvalue()


def animated(fmt: str, frames: int = 3, size: tuple[int, int] = (200, 150)) -> bytes:
    colors = ["red", "green", "blue", "yellow", "white"]
    images = [Image.new("RGB", size, colors[i % len(colors)]) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, fmt, save_all=True, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions: a decompression bomb needs no real pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


# ------------------------------------------------------------------ pure


def test_standard_sizes() -> None:
    assert standard_size(1, 1, "crop") == ThumbSize(32, 32, "crop")
    assert standard_size(32, 32, "scale") == ThumbSize(32, 32, "scale")
    assert standard_size(33, 10, "crop") == ThumbSize(96, 96, "crop")
    assert standard_size(100, 100, "scale") == ThumbSize(320, 240, "scale")
    assert standard_size(320, 241, "scale") == ThumbSize(640, 480, "scale")
    assert standard_size(800, 600, "crop") == ThumbSize(800, 600, "crop")
    assert standard_size(5000, 5000, "scale") == ThumbSize(800, 600, "scale")


def test_output_size_never_enlarges() -> None:
    scale = ThumbSize(320, 240, "scale")
    assert output_size((1000, 500), scale) == (320, 160)
    assert output_size((500, 1000), scale) == (120, 240)
    assert output_size((100, 50), scale) == (100, 50)  # smaller than the box: kept
    crop = ThumbSize(96, 96, "crop")
    assert output_size((1000, 500), crop) == (96, 96)
    assert output_size((50, 200), crop) == (50, 50)  # small: the box's shape, not enlarged
    assert output_size((1, 1000), ThumbSize(800, 600, "crop")) == (1, 1)


def test_render_formats(tmp_path: Path) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("PNG", {}, "image/png"),
        ("JPEG", {}, "image/jpeg"),
        ("GIF", {}, "image/png"),
        ("WEBP", {}, "image/png"),
        ("BMP", {}, "image/png"),
    ]
    for fmt, save, content_type in cases:
        path = tmp_path / f"in.{fmt.lower()}"
        path.write_bytes(image_bytes(fmt, **save))
        thumb = render(path, ThumbSize(96, 96, "crop"), animated=False)
        assert thumb.content_type == content_type, fmt
        assert (thumb.width, thumb.height) == (96, 96)
        with opened(thumb.data) as im:
            assert im.size == (96, 96)
        thumb = render(path, ThumbSize(320, 240, "scale"), animated=False)
        assert (thumb.width, thumb.height) == (200, 100), fmt  # not enlarged
    path = tmp_path / "alpha.png"
    path.write_bytes(image_bytes("PNG", mode="RGBA"))
    with opened(render(path, ThumbSize(32, 32, "scale"), animated=False).data) as im:
        assert im.mode == "RGBA" and im.size == (32, 16)


def test_render_follows_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = tmp_path / "rotated.jpg"
    path.write_bytes(image_bytes("JPEG", exif=exif))
    thumb = render(path, ThumbSize(320, 240, "scale"), animated=False)
    assert (thumb.width, thumb.height) == (100, 200)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_render_animated(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "anim"
    path.write_bytes(animated(fmt))
    thumb = render(path, ThumbSize(96, 96, "crop"), animated=True)
    assert thumb.content_type == "image/webp" and thumb.animated
    with opened(thumb.data) as im:
        assert im.size == (96, 96) and getattr(im, "n_frames", 1) == 3
    static = render(path, ThumbSize(96, 96, "crop"), animated=False)
    assert static.content_type == "image/png" and not static.animated


# pytest resets warning filters per test; this restores the one thumbnails.py installs
@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_render_refuses_bombs_and_non_images(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    for width, height in ((100_000, 100_000), (6000, 6000)):  # past 2x the limit, and past it
        assert width * height > MAX_PIXELS
        path.write_bytes(png_header_only(width, height))
        with pytest.raises(TooManyPixels):
            render(path, ThumbSize(32, 32, "crop"), animated=False)
    path.write_bytes(b"%PDF-1.4 not an image at all")
    with pytest.raises(NotAnImage):
        render(path, ThumbSize(32, 32, "crop"), animated=False)
    path.write_bytes(image_bytes("PNG")[:60])  # truncated
    with pytest.raises(NotAnImage):
        render(path, ThumbSize(32, 32, "crop"), animated=False)
    assert probe(path) is None or probe(path) == (200, 100)


# ------------------------------------------------------------------ HTTP


@pytest.fixture
async def alice(server: Server) -> LoggedIn:
    return await make_user(server, "alice")


def media_of(server: Server) -> Media:
    assert server.services is not None
    return server.services.media


async def upload(client: httpx.AsyncClient, who: LoggedIn, data: bytes,
                 content_type: str) -> str:
    r = await client.post(f"{MEDIA}/upload", content=data,
                          headers={**who.headers, "Content-Type": content_type})
    assert r.status_code == 200, r.text
    uri: str = r.json()["content_uri"]
    return uri[len("mxc://"):]


async def test_thumbnail_sizes_and_headers(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    mxc = await upload(client, alice, image_bytes("PNG", (1000, 500)), "image/png")
    cases: list[tuple[dict[str, Any], tuple[int, int]]] = [
        ({"width": 32, "height": 32, "method": "crop"}, (32, 32)),
        ({"width": 64, "height": 64, "method": "crop"}, (96, 96)),
        ({"width": 300, "height": 200}, (320, 160)),
        ({"width": 640, "height": 480, "method": "scale"}, (640, 320)),
        ({"width": 2000, "height": 2000, "method": "scale"}, (800, 400)),
    ]
    for params, size in cases:
        r = await client.get(f"{AUTHED}/thumbnail/{mxc}", params=params, headers=alice.headers)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "image/png"
        assert r.headers["Content-Disposition"] == 'inline; filename="thumbnail.png"'
        assert r.headers["Cache-Control"] == "private, max-age=31536000, immutable"
        assert r.headers["Content-Security-Policy"].startswith("sandbox;")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        with opened(r.content) as im:
            assert im.size == size, params
    r = await client.get(f"{MEDIA}/thumbnail/{mxc}", params={"width": 32, "height": 32})
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"


async def test_small_images_are_not_enlarged(client: httpx.AsyncClient,
                                             alice: LoggedIn) -> None:
    mxc = await upload(client, alice, image_bytes("JPEG", (50, 20)), "image/jpeg")
    r = await client.get(f"{AUTHED}/thumbnail/{mxc}", headers=alice.headers,
                         params={"width": 800, "height": 600})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    with opened(r.content) as im:
        assert im.size == (50, 20)
    r = await client.get(f"{AUTHED}/thumbnail/{mxc}", headers=alice.headers,
                         params={"width": 96, "height": 96, "method": "crop"})
    with opened(r.content) as im:
        assert im.size == (20, 20)


@pytest.mark.parametrize(("fmt", "content_type"), [
    ("GIF", "image/gif"), ("WEBP", "image/webp"), ("PNG", "image/png")])
async def test_animated_thumbnails(client: httpx.AsyncClient, alice: LoggedIn, fmt: str,
                                   content_type: str) -> None:
    mxc = await upload(client, alice, animated(fmt), content_type)
    url = f"{AUTHED}/thumbnail/{mxc}"
    r = await client.get(url, headers=alice.headers,
                         params={"width": 96, "height": 96, "animated": "true"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/webp"
    assert r.headers["Content-Disposition"] == 'inline; filename="thumbnail.webp"'
    with opened(r.content) as im:
        assert getattr(im, "n_frames", 1) == 3
    for params in ({"animated": "false"}, {}):
        r = await client.get(url, headers=alice.headers,
                             params={"width": 96, "height": 96, **params})
        assert r.headers["Content-Type"] == "image/png"
        with opened(r.content) as im:
            assert getattr(im, "n_frames", 1) == 1


async def test_thumbnails_are_generated_once(client: httpx.AsyncClient, server: Server,
                                             alice: LoggedIn,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[ThumbSize] = []
    real_render = thumbnails.render

    def counting(path: Path, size: ThumbSize, animated: bool) -> thumbnails.Thumbnail:
        calls.append(size)
        return real_render(path, size, animated)

    monkeypatch.setattr(thumbnails, "render", counting)
    mxc = await upload(client, alice, image_bytes("PNG"), "image/png")
    responses: list[bytes] = []

    async def fetch(width: int) -> None:
        r = await client.get(f"{AUTHED}/thumbnail/{mxc}", headers=alice.headers,
                             params={"width": width, "height": width, "method": "crop"})
        assert r.status_code == 200
        responses.append(r.content)

    async with trio.open_nursery() as nursery:  # concurrent requests for one size
        for width in (20, 30, 32, 32):
            nursery.start_soon(fetch, width)
    await fetch(10)
    assert calls == [ThumbSize(32, 32, "crop")]
    assert len(set(responses)) == 1
    assert (await media_of(server).usage())["thumbnails"] == 1


async def test_thumbnail_errors(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    mxc = await upload(client, alice, image_bytes("PNG"), "image/png")
    url = f"{AUTHED}/thumbnail/{mxc}"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"height": 32}, "M_MISSING_PARAM"),
        ({"width": 32}, "M_MISSING_PARAM"),
        ({"width": "abc", "height": 32}, "M_INVALID_PARAM"),
        ({"width": 0, "height": 32}, "M_INVALID_PARAM"),
        ({"width": -5, "height": 32}, "M_INVALID_PARAM"),
        ({"width": 32, "height": 10**9}, "M_INVALID_PARAM"),
        ({"width": 32, "height": 32, "method": "zoom"}, "M_INVALID_PARAM"),
        ({"width": 32, "height": 32, "animated": "maybe"}, "M_INVALID_PARAM"),
    ]
    for params, errcode in bad:
        r = await client.get(url, headers=alice.headers, params=params)
        assert r.status_code == 400 and r.json()["errcode"] == errcode, (params, r.text)

    text = await upload(client, alice, b"just some text", "text/plain")
    r = await client.get(f"{AUTHED}/thumbnail/{text}", headers=alice.headers,
                         params={"width": 32, "height": 32})
    assert r.status_code == 400 and r.json() == {
        "errcode": "M_UNKNOWN", "error": "Cannot generate thumbnails for the requested content"}

    bomb = await upload(client, alice, png_header_only(100_000, 100_000), "image/png")
    r = await client.get(f"{AUTHED}/thumbnail/{bomb}", headers=alice.headers,
                         params={"width": 32, "height": 32})
    assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"
    # the original is still downloadable; only thumbnailing is refused
    r = await client.get(f"{AUTHED}/download/{bomb}", headers=alice.headers)
    assert r.status_code == 200
