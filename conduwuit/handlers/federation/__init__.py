"""Server-Server API blueprints; all of them answer 403 when federation is disabled."""

from __future__ import annotations

from quart import Blueprint

from . import keys, openid, public_rooms, query, user, version

BLUEPRINTS: tuple[Blueprint, ...] = (version.bp, keys.bp, query.bp, user.bp, openid.bp,
                                     public_rooms.bp)
