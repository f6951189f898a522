"""Registering one handler under several API versions (``r0`` and ``v3`` share most routes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from quart import Blueprint

F = TypeVar("F", bound=Callable[..., Any])

LEGACY_AND_V3 = ("r0", "v3")


def client_route(bp: Blueprint, method: str, path: str,
                 versions: Sequence[str] = LEGACY_AND_V3) -> Callable[[F], F]:
    """Route ``/_matrix/client/{version}{path}`` for each version to the handler."""

    def register(handler: F) -> F:
        for version in versions:
            bp.add_url_rule(f"/_matrix/client/{version}{path}", f"{handler.__name__}_{version}",
                            handler, methods=[method])
        return handler

    return register
