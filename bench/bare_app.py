"""The framework ceiling: a bare quart-trio app answering /_matrix/client/versions.

Served by the same Hypercorn settings and the same keep-alive middleware as the
real server, so the ratio measures what our app adds on top of the framework.
"""

from __future__ import annotations

import os
import sys

import orjson
import trio
from hypercorn.trio import serve
from quart import Response
from quart_trio import QuartTrio

from conduwuit.config import load_config
from conduwuit.handlers.client.versions import SPEC_VERSIONS
from conduwuit.handlers.middleware import ShieldFinalSend
from conduwuit.listeners import hypercorn_config
from conduwuit.systemd import Notifier

app = QuartTrio(__name__)
BODY = orjson.dumps({"versions": list(SPEC_VERSIONS), "unstable_features": {}})


@app.get("/_matrix/client/versions")
async def versions() -> Response:
    return Response(BODY, content_type="application/json")


async def main() -> None:
    config = load_config(None, env=os.environ).config
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, ShieldFinalSend(app), hypercorn_config(config))
        Notifier().ready("bare app listening")


if __name__ == "__main__":
    sys.exit(trio.run(main))
