"""OpenID tokens: a client proves its identity to a third party (spec, "OpenID").

``POST /user/{userId}/openid/request_token`` hands out a token that is good for one
thing only: the third party exchanges it at ``/_matrix/federation/v1/openid/userinfo``
for the user id. Tokens live ``openid_token_ttl`` seconds; the store keeps their
sha256 only, like access tokens.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

import attrs

from conduwuit.store import Store, from_u64_be, u64_be

TREE = "openidtoken_expiresatuserid"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@attrs.define
class OpenIdTokens:
    store: Store
    server_name: str
    ttl_s: int

    def issue(self, user_id: str) -> dict[str, Any]:
        token = secrets.token_urlsafe(32)
        expires = int(time.time() * 1000) + self.ttl_s * 1000
        self.store.tree(TREE).put(_digest(token), u64_be(expires) + user_id.encode())
        return {"access_token": token, "token_type": "Bearer",
                "matrix_server_name": self.server_name, "expires_in": self.ttl_s}

    def user_of(self, token: str) -> str | None:
        """The user the token was issued to, while it is valid."""
        tree = self.store.tree(TREE)
        raw = tree.get(_digest(token))
        if raw is None:
            return None
        if from_u64_be(raw[:8]) <= int(time.time() * 1000):
            tree.delete(_digest(token))
            return None
        return raw[8:].decode()
