"""Run the real ``conduwuit`` process with two extra routes the lifecycle tests need.

``/_test/slow?seconds=N`` is an in-flight request that ignores shutdown (like
a handler doing real work); ``/_test/longpoll`` waits like ``/sync`` does, on
the server's stopping event, and returns as soon as shutdown begins.
"""

from __future__ import annotations

import sys

import trio
from quart import Blueprint, Response, request

from conduwuit.cli import main
from conduwuit.handlers.context import MatrixApp, services
from conduwuit.handlers.json import json_response
from tests.support import nodns


def add_test_routes(app: MatrixApp) -> None:
    bp = Blueprint("lifecycle_test", __name__)

    @bp.get("/_test/slow")
    async def slow() -> Response:
        await trio.sleep(float(request.args.get("seconds", "2")))
        return json_response({"done": True})

    @bp.get("/_test/longpoll")
    async def longpoll() -> Response:
        with trio.move_on_after(60):
            await services().stopping.wait()
        return json_response({"woken": services().stopping.is_set()})

    app.register_blueprint(bp)


if __name__ == "__main__":
    nodns.install()  # a server process started by a test never asks the machine's DNS
    sys.exit(main(sys.argv[1:], app_hooks=[add_test_routes]))
