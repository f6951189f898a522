"""Server-Server API blueprints; all of them answer 403 when federation is disabled."""

from __future__ import annotations

from quart import Blueprint

from . import events, keys, membership, openid, public_rooms, query, send, user, version

BLUEPRINTS: tuple[Blueprint, ...] = (version.bp, keys.bp, query.bp, user.bp, openid.bp,
                                     public_rooms.bp, events.bp, membership.bp, send.bp)
