"""Client-Server API blueprints."""

from __future__ import annotations

from quart import Blueprint

from . import versions

BLUEPRINTS: tuple[Blueprint, ...] = (versions.bp,)
