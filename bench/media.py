"""Media: download throughput of a 10 MB file and thumbnail generation rate.

Against a real server process: one user uploads a 10 MiB file of random bytes and
downloads it ``DOWNLOADS`` times through ``/_matrix/client/v1/media/download`` (one at a
time, then ``CONCURRENCY`` at once), reading every byte; MB/s is bytes over wall time.
Thumbnails: a large photo-like JPEG is uploaded ``COPIES`` times (fresh media ids), and
every standard size with both methods is asked for each copy: each request generates a
new thumbnail with Pillow in a worker thread. The rate is thumbnails per second, one at
a time and then with ``CONCURRENCY`` requests in flight; asking again for the same
thumbnails measures the cached rate for comparison.
Run: ``python -m bench.media`` (results in bench/results/media.json).
"""

from __future__ import annotations

import io
import os
import time
from typing import Any

import httpx
import trio
from PIL import Image, ImageDraw

from bench.common import (
    machine,
    measure_against_server,
    write_result,
)

TOKEN = "bench-token"
FILE_BYTES = 10 * 1024 * 1024
DOWNLOADS = 20
CONCURRENCY = 4
JPEG_SIZE = (4000, 3000)
COPIES = 4
SIZES = ((32, 32), (96, 96), (320, 240), (640, 480), (800, 600))
METHODS = ("crop", "scale")
AUTHED = "/_matrix/client/v1/media"


async def register(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    body = {"username": name, "password": "bench password"}
    first = (await client.post("/_matrix/client/v3/register", json=body)).json()
    for stage in ({"type": "m.login.registration_token", "token": TOKEN},
                  {"type": "m.login.dummy"}):
        r = await client.post("/_matrix/client/v3/register",
                              json={**body, "auth": {**stage, "session": first["session"]}})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def big_jpeg() -> bytes:
    """A photo-sized JPEG with gradients and shapes (not a flat colour Pillow skips)."""
    width, height = JPEG_SIZE
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for i in range(0, width, 97):
        draw.ellipse((i, (i * 7) % height, i + 300, (i * 7) % height + 200),
                     fill=((i * 3) % 256, (i * 5) % 256, (i * 11) % 256))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


async def upload(client: httpx.AsyncClient, auth: dict[str, str], data: bytes,
                 content_type: str) -> str:
    r = await client.post("/_matrix/media/v3/upload", content=data,
                          headers={**auth, "Content-Type": content_type})
    r.raise_for_status()
    return str(r.json()["content_uri"]).removeprefix("mxc://")


async def run_all(jobs: list[Any], concurrency: int) -> float:
    """Run the zero-argument async jobs ``concurrency`` at a time; wall seconds."""
    limiter = trio.Semaphore(concurrency)

    async def one(job: Any) -> None:
        async with limiter:
            await job()

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(one, job)
    return time.perf_counter() - began


async def measure(base_url: str) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=CONCURRENCY + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as client:
        auth = await register(client, "bencher")
        blob = os.urandom(FILE_BYTES)
        mxc = await upload(client, auth, blob, "application/octet-stream")

        async def download() -> None:
            received = 0
            async with client.stream("GET", f"{AUTHED}/download/{mxc}", headers=auth) as r:
                r.raise_for_status()
                async for chunk in r.aiter_raw():
                    received += len(chunk)
            assert received == FILE_BYTES, received

        await download()  # warm the page cache and the connection
        mb = FILE_BYTES * DOWNLOADS / 1e6
        serial = await run_all([download] * DOWNLOADS, 1)
        parallel = await run_all([download] * DOWNLOADS, CONCURRENCY)

        photo = big_jpeg()
        copies = [await upload(client, auth, photo, "image/jpeg") for _ in range(COPIES * 2)]

        def thumbnail_jobs(media: list[str]) -> list[Any]:
            jobs = []
            for uri in media:
                for width, height in SIZES:
                    for method in METHODS:
                        async def job(uri: str = uri, width: int = width, height: int = height,
                                      method: str = method) -> None:
                            r = await client.get(f"{AUTHED}/thumbnail/{uri}", headers=auth,
                                                 params={"width": width, "height": height,
                                                         "method": method})
                            r.raise_for_status()
                        jobs.append(job)
            return jobs

        fresh_serial = thumbnail_jobs(copies[:COPIES])
        fresh_parallel = thumbnail_jobs(copies[COPIES:])
        t_serial = await run_all(fresh_serial, 1)
        t_parallel = await run_all(fresh_parallel, CONCURRENCY)
        t_cached = await run_all(fresh_serial, CONCURRENCY)

    return {
        "download_10mb": {
            "file_bytes": FILE_BYTES, "downloads": DOWNLOADS,
            "serial_mb_per_s": round(mb / serial, 1),
            "serial_ms_per_download": round(serial / DOWNLOADS * 1000, 1),
            f"concurrent{CONCURRENCY}_mb_per_s": round(mb / parallel, 1),
        },
        "thumbnails": {
            "source": f"JPEG {JPEG_SIZE[0]}x{JPEG_SIZE[1]}, {len(photo)} bytes",
            "fresh_per_copy": len(SIZES) * len(METHODS),
            "fresh_serial_per_s": round(len(fresh_serial) / t_serial, 2),
            "fresh_serial_ms_each": round(t_serial / len(fresh_serial) * 1000, 1),
            f"fresh_concurrent{CONCURRENCY}_per_s": round(len(fresh_parallel) / t_parallel, 2),
            f"cached_concurrent{CONCURRENCY}_per_s": round(len(fresh_serial) / t_cached, 1),
        },
    }


def main() -> None:
    figures = measure_against_server(measure, TOKEN)
    write_result("media", {
        "machine": machine(),
        "note": "another benchmark may have been running on this machine at the same time",
        **figures,
    })


if __name__ == "__main__":
    main()
