"""Server-Server API blueprints; all of them answer 404 when federation is disabled."""

from __future__ import annotations

from quart import Blueprint

from . import version

BLUEPRINTS: tuple[Blueprint, ...] = (version.bp,)
