"""This server's ed25519 signing key: made on first start, kept in the store.

The same key signs our events and our federation requests and answers
``/_matrix/key/v2/server``.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import attrs
import orjson

from conduwuit.protocol import signing
from conduwuit.store import Store

log = logging.getLogger(__name__)

_KEY = b"signing_key"
# JSON {key id: {"key": public key, "expired_ts": ms}} of keys we signed with before.
_OLD_KEYS = b"old_verify_keys"


@attrs.define
class ServerKeys:
    store: Store
    server_name: str
    key: Any = None

    def load_or_create(self) -> None:
        raw = self.store.tree("global").get(_KEY)
        if raw is None:
            self.key = signing.generate_signing_key(f"a_{secrets.token_hex(2)}")
            self.store.tree("global").put(_KEY, signing.encode_signing_key(self.key).encode())
            self.store.flush()
            log.info("created the server signing key %s", signing.key_id(self.key))
        else:
            self.key = signing.decode_signing_key(raw.decode())

    @property
    def key_id(self) -> str:
        return signing.key_id(self.key)

    @property
    def verify_key_base64(self) -> str:
        return signing.verify_key_base64(self.key)

    def old_verify_keys(self) -> dict[str, dict[str, Any]]:
        """Keys replaced by :meth:`rotate`, as ``old_verify_keys`` publishes them."""
        raw = self.store.tree("global").get(_OLD_KEYS)
        return orjson.loads(raw) if raw is not None else {}

    def rotate(self) -> None:
        """Start signing with a new key; the old one stays published for old events."""
        old = self.old_verify_keys()
        old[self.key_id] = {"key": self.verify_key_base64, "expired_ts": int(time.time() * 1000)}
        new = signing.generate_signing_key(f"a_{secrets.token_hex(2)}")
        with self.store.batch(sync=True) as batch:
            batch.put("global", _OLD_KEYS, orjson.dumps(old))
            batch.put("global", _KEY, signing.encode_signing_key(new).encode())
        log.info("rotated the server signing key: %s replaces %s", signing.key_id(new),
                 self.key_id)
        self.key = new
