"""Stored filter definitions (``POST/GET /user/{userId}/filter``). Owns ``userfilterid_filter``.

A filter's id is derived from its canonical JSON, so uploading the same filter twice
gives the same id without a second index, and ids never start with ``{`` (which is how
``/sync`` tells an inline filter from a stored one).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import attrs
import orjson

from conduwuit.errors import MatrixError
from conduwuit.protocol.filters import FilterError, validate_filter
from conduwuit.store import Store, join

TREE = "userfilterid_filter"
# 12 bytes of sha256 -> 16 url-safe characters; 96 bits put a collision between two
# filters of one user out of reach.
_ID_BYTES = 12


@attrs.define
class Filters:
    store: Store

    def create(self, user_id: str, definition: dict[str, Any]) -> str:
        """Validate and store ``definition`` for ``user_id``; return its filter id."""
        check(definition)
        raw = orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)
        filter_id = filter_id_for(raw)
        self.store.tree(TREE).put(join(user_id, filter_id), raw)
        return filter_id

    def get(self, user_id: str, filter_id: str) -> dict[str, Any] | None:
        """The stored definition, or ``None`` if this user has no such filter."""
        raw = self.store.tree(TREE).get(join(user_id, filter_id))
        if raw is None:
            return None
        value: dict[str, Any] = orjson.loads(raw)
        return value


def check(definition: object) -> dict[str, Any]:
    """:func:`validate_filter` with its error turned into the HTTP 400 to answer."""
    try:
        return validate_filter(definition)
    except FilterError as exc:
        raise MatrixError(400, exc.errcode, f"Invalid filter: {exc.message}") from None


def filter_id_for(canonical: bytes) -> str:
    digest = hashlib.sha256(canonical).digest()[:_ID_BYTES]
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
