"""Devices and their tokens. This module alone writes the device and token trees.

Tokens are long random strings handed to the client once; the store keeps
only their sha256, so a copy of the database cannot be used to log in.
Lookups go by the digest, which makes the comparison constant-time in the
sense that matters: the secret itself is never compared byte by byte.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
import time
from collections.abc import Callable
from typing import Any

import attrs

from conduwuit.store import SEP, Store, from_u64_be, join, u64_be

TOKEN_LENGTH = 48
DEVICE_ID_LENGTH = 10
# Access tokens that come with a refresh token expire; clients then call /refresh.
REFRESHABLE_TOKEN_LIFETIME_MS = 5 * 60 * 1000

_TOKEN_ALPHABET = string.ascii_letters + string.digits


def new_token(prefix: str) -> str:
    body = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))
    return f"{prefix}_{body}"


def new_device_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(DEVICE_ID_LENGTH))


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def now_ms() -> int:
    return int(time.time() * 1000)


@attrs.frozen
class TokenOwner:
    user_id: str
    device_id: str
    expires_at_ms: int  # 0: never

    def expired(self, at_ms: int) -> bool:
        return self.expires_at_ms != 0 and at_ms >= self.expires_at_ms


@attrs.frozen
class IssuedTokens:
    access_token: str
    refresh_token: str | None = None
    expires_in_ms: int | None = None


def _encode_owner(user_id: str, device_id: str, expires_at_ms: int = 0) -> bytes:
    # The fixed-width expiry goes first: a u64 may contain 0xFF, ids never do.
    return u64_be(expires_at_ms) + join(user_id, device_id)


def _decode_owner(value: bytes) -> TokenOwner:
    user_id, _, device_id = value[8:].partition(SEP)
    return TokenOwner(user_id.decode(), device_id.decode(), from_u64_be(value[:8]))


def _device_key(user_id: str, device_id: str) -> bytes:
    return join(user_id, device_id)


DeviceRemoved = Callable[[str, str], None]


@attrs.define
class Devices:
    store: Store
    # Called with (user_id, device_id) after a device is deleted: E2EE keys, to-device.
    on_device_removed: list[DeviceRemoved] = attrs.field(factory=list)
    # Last-seen updates wait here and are written in batches by the last-seen job.
    _seen: dict[tuple[str, str], tuple[str, int]] = attrs.field(factory=dict)

    # --- devices -------------------------------------------------------------------

    def exists(self, user_id: str, device_id: str) -> bool:
        return _device_key(user_id, device_id) in self.store.tree("userdeviceid_metadata")

    def create(self, user_id: str, device_id: str | None, display_name: str | None,
               ip: str = "") -> str:
        """Create (or reuse, revoking its tokens) a device; returns its id."""
        device_id = device_id or new_device_id()
        if self.exists(user_id, device_id):
            self._revoke_tokens(user_id, device_id)
            if display_name is not None:
                self.set_display_name(user_id, device_id, display_name)
            return device_id
        meta: dict[str, Any] = {"device_id": device_id, "display_name": display_name,
                                "last_seen_ip": ip or None, "last_seen_ts": now_ms()}
        self._put_meta(user_id, device_id, meta)
        return device_id

    def get(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        raw = self.store.tree("userdeviceid_metadata").get(_device_key(user_id, device_id))
        if raw is None:
            return None
        meta: dict[str, Any] = json.loads(raw)
        pending = self._seen.get((user_id, device_id))
        if pending is not None:
            meta["last_seen_ip"], meta["last_seen_ts"] = pending
        return {"user_id": user_id, **meta}

    def for_user(self, user_id: str) -> list[dict[str, Any]]:
        prefix = join(user_id) + SEP
        ids = [key[len(prefix):].decode()
               for key in self.store.tree("userdeviceid_metadata").keys(prefix)]
        return [d for d in (self.get(user_id, device_id) for device_id in ids) if d is not None]

    def set_display_name(self, user_id: str, device_id: str, name: str | None) -> bool:
        meta = self.get(user_id, device_id)
        if meta is None:
            return False
        meta["display_name"] = name
        meta.pop("user_id", None)
        self._put_meta(user_id, device_id, meta)
        return True

    def delete(self, user_id: str, device_id: str) -> None:
        self._revoke_tokens(user_id, device_id)
        self.store.tree("userdeviceid_metadata").delete(_device_key(user_id, device_id))
        self._seen.pop((user_id, device_id), None)
        for callback in self.on_device_removed:
            callback(user_id, device_id)

    def delete_all(self, user_id: str, *, except_device: str | None = None) -> None:
        for device in self.for_user(user_id):
            if device["device_id"] != except_device:
                self.delete(user_id, device["device_id"])

    def _put_meta(self, user_id: str, device_id: str, meta: dict[str, Any]) -> None:
        self.store.tree("userdeviceid_metadata").put(
            _device_key(user_id, device_id), json.dumps(meta).encode()
        )

    # --- tokens --------------------------------------------------------------------

    def issue(self, user_id: str, device_id: str, *, refreshable: bool = False) -> IssuedTokens:
        """New tokens for a device, replacing any it had."""
        self._revoke_tokens(user_id, device_id)
        access = new_token("cwt")
        expires_at = now_ms() + REFRESHABLE_TOKEN_LIFETIME_MS if refreshable else 0
        device_key = _device_key(user_id, device_id)
        with self.store.batch(sync=True) as batch:
            batch.put("token_userdeviceid", digest(access),
                      _encode_owner(user_id, device_id, expires_at))
            batch.put("userdeviceid_token", device_key, digest(access))
            if not refreshable:
                return IssuedTokens(access)
            refresh = new_token("cwr")
            batch.put("refreshtoken_userdeviceid", digest(refresh),
                      _encode_owner(user_id, device_id))
            batch.put("userdeviceid_refreshtoken", device_key, digest(refresh))
        return IssuedTokens(access, refresh, REFRESHABLE_TOKEN_LIFETIME_MS)

    def owner_of_access_token(self, token: str) -> TokenOwner | None:
        raw = self.store.tree("token_userdeviceid").get(digest(token))
        return _decode_owner(raw) if raw is not None else None

    def refresh(self, refresh_token: str) -> tuple[TokenOwner, IssuedTokens] | None:
        """Trade a refresh token for a new pair; the old pair stops working."""
        raw = self.store.tree("refreshtoken_userdeviceid").get(digest(refresh_token))
        if raw is None:
            return None
        owner = _decode_owner(raw)
        return owner, self.issue(owner.user_id, owner.device_id, refreshable=True)

    def _revoke_tokens(self, user_id: str, device_id: str) -> None:
        device_key = _device_key(user_id, device_id)
        with self.store.batch() as batch:
            for index, token_tree in (("userdeviceid_token", "token_userdeviceid"),
                                      ("userdeviceid_refreshtoken", "refreshtoken_userdeviceid")):
                old = self.store.tree(index).get(device_key)
                if old is not None:
                    batch.delete(token_tree, old)
                    batch.delete(index, device_key)

    # --- login tokens (m.login.token) ----------------------------------------------

    def issue_login_token(self, user_id: str, ttl_ms: int) -> str:
        token = new_token("cwl")
        self.store.tree("logintoken_userid").put(digest(token),
                                                 u64_be(now_ms() + ttl_ms) + user_id.encode())
        return token

    def consume_login_token(self, token: str) -> str | None:
        """The user a login token was issued to; each token works once, until it expires."""
        tree = self.store.tree("logintoken_userid")
        raw = tree.get(digest(token))
        if raw is None:
            return None
        tree.delete(digest(token))
        if from_u64_be(raw[:8]) <= now_ms():
            return None
        return raw[8:].decode()

    # --- last seen -----------------------------------------------------------------

    def saw(self, user_id: str, device_id: str, ip: str) -> None:
        """Note a request from a device; written later, in a batch, by the last-seen job."""
        self._seen[(user_id, device_id)] = (ip, now_ms())

    def flush_last_seen(self) -> int:
        """Write pending last-seen updates in one batch; returns how many."""
        pending, self._seen = self._seen, {}
        tree = self.store.tree("userdeviceid_metadata")
        with self.store.batch() as batch:
            for (user_id, device_id), (ip, ts) in pending.items():
                raw = tree.get(_device_key(user_id, device_id))
                if raw is None:  # deleted meanwhile
                    continue
                meta = json.loads(raw)
                meta["last_seen_ip"], meta["last_seen_ts"] = ip, ts
                batch.put(tree, _device_key(user_id, device_id), json.dumps(meta).encode())
        return len(pending)
