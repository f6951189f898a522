"""This server's ed25519 signing key: made on first start, kept in the store.

The same key signs our events and our federation requests and answers
``/_matrix/key/v2/server``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import attrs

from conduwuit.protocol import signing
from conduwuit.store import Store

log = logging.getLogger(__name__)

_KEY = b"signing_key"


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
