"""Device identity keys, one-time keys and fallback keys (``/keys/upload``, ``/query``, ``/claim``).

This module alone writes the device-key trees. A one-time key is handed out at most
once: a claim reads the oldest key and deletes it with no ``await`` in between, and
Trio runs one task at a time, so concurrent claims each get their own key (or the
fallback key once the one-time keys run out).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import orjson

from conduwuit.store import SEP, Store, WriteBatch, join, u64_be

from ..devices import Devices
from .common import (
    ED25519,
    bad_json,
    check_signatures_shape,
    invalid,
    is_public_key,
    require_object,
    require_str,
    server_of,
    signed_part,
    split_key_id,
    verify,
)
from .device_lists import DeviceLists

log = logging.getLogger(__name__)

DEVICE_KEYS = "userdeviceid_devicekeys"
ONE_TIME_KEYS = "onetimekeyid_onetimekeys"
FALLBACK_KEYS = "userdevicealgo_fallbackkey"
SIGNATURES = "keyid_signatures"

SIGNED_CURVE25519 = "signed_curve25519"
# Upload limits: far above what clients send (nio and Element upload up to 50 at once).
MAX_ONE_TIME_KEYS_PER_UPLOAD = 1000
MAX_ALGORITHMS = 32


@attrs.frozen
class OneTimeKey:
    key_id: str  # "<algorithm>:<id>"
    key: Any  # a string (plain curve25519) or a signed key object

    @property
    def algorithm(self) -> str:
        return self.key_id.partition(":")[0]


# Called with (user_id, device_id, deleted) when a device's identity keys were stored,
# re-signed or removed: the federation sender sends m.device_list_update.
DeviceHook = Callable[[str, str, bool], None]


@attrs.define
class DeviceKeys:
    store: Store
    server_name: str
    devices: Devices
    device_lists: DeviceLists
    on_change: list[DeviceHook] = attrs.field(factory=list)

    # --- upload ----------------------------------------------------------------------

    def upload(self, user_id: str, device_id: str, body: Mapping[str, Any]) -> dict[str, int]:
        """Validate everything, then store it in one batch; returns one-time key counts."""
        device_keys = body.get("device_keys")
        new_identity: dict[str, Any] | None = None
        if device_keys is not None:
            new_identity = self._check_device_keys(user_id, device_id, device_keys)
        identity = new_identity or self.get_device_keys(user_id, device_id)
        one_time = self._check_one_time_keys(user_id, device_id, identity,
                                             body.get("one_time_keys"), fallback=False)
        fallback_raw = body.get("fallback_keys", body.get("org.matrix.msc2732.fallback_keys"))
        fallback = self._check_one_time_keys(user_id, device_id, identity, fallback_raw,
                                             fallback=True)
        by_algorithm: dict[str, OneTimeKey] = {}
        for key in fallback:
            if key.algorithm in by_algorithm:
                raise invalid(f"At most one fallback key per algorithm ({key.algorithm})")
            by_algorithm[key.algorithm] = key
        fresh = self._new_one_time_keys(user_id, device_id, one_time)
        identity_changed = new_identity is not None and \
            new_identity != self.get_device_keys(user_id, device_id)
        with self.store.batch() as batch:
            if identity_changed:
                batch.put(DEVICE_KEYS, join(user_id, device_id), orjson.dumps(new_identity))
                self.device_lists.keys_changed(user_id, batch)
            if fresh:
                order = self.store.next_count()
                for index, key in enumerate(fresh):
                    batch.put(ONE_TIME_KEYS, _otk_key(user_id, device_id, key.algorithm, order,
                                                      index),
                              orjson.dumps({"key_id": key.key_id, "key": key.key}))
            for algorithm, key in by_algorithm.items():
                self._stage_fallback(batch, user_id, device_id, algorithm, key)
        if identity_changed:
            self.device_lists.wake(user_id)
            for hook in self.on_change:
                hook(user_id, device_id, False)
        return self.one_time_key_counts(user_id, device_id)

    def _check_device_keys(self, user_id: str, device_id: str,
                           raw: object) -> dict[str, Any]:
        keys = require_object(raw, "'device_keys'")
        if keys.get("user_id") != user_id:
            raise invalid("device_keys.user_id must be your own user id")
        if keys.get("device_id") != device_id:
            raise invalid("device_keys.device_id must be the id of this device")
        algorithms = keys.get("algorithms")
        if not isinstance(algorithms, list) or not algorithms or not all(
                isinstance(a, str) and a for a in algorithms):
            raise invalid("device_keys.algorithms must be a non-empty list of strings")
        identity = keys.get("keys")
        if not isinstance(identity, Mapping) or not identity or not all(
                isinstance(v, str) for v in identity.values()):
            raise invalid("device_keys.keys must map '<algorithm>:<device_id>' to keys")
        for key_id in identity:
            _, ident = split_key_id(key_id, "Device key id")
            if ident != device_id:
                raise invalid(f"Device key {key_id!r} is not named after this device")
        ed_key = identity.get(f"{ED25519}:{device_id}")
        if not is_public_key(ed_key):
            raise invalid(f"device_keys.keys needs a 32-byte {ED25519}:{device_id} key")
        curve = identity.get(f"curve25519:{device_id}")
        if curve is not None and not is_public_key(curve):
            raise invalid("The curve25519 key is not 32 bytes of unpadded base64")
        check_signatures_shape(keys, "device_keys")
        problem = verify(keys, user_id, f"{ED25519}:{device_id}", str(ed_key))
        if problem is not None:
            raise invalid(f"device_keys are not signed by the device's own key: {problem}")
        stored = signed_part(keys)
        # Keep only the device's self-signature: other signatures come through
        # /keys/signatures/upload, where they are checked.
        stored["signatures"] = {user_id: {f"{ED25519}:{device_id}":
                                          keys["signatures"][user_id][f"{ED25519}:{device_id}"]}}
        return stored

    def _check_one_time_keys(self, user_id: str, device_id: str,
                             identity: Mapping[str, Any] | None, raw: object, *,
                             fallback: bool) -> list[OneTimeKey]:
        what = "fallback_keys" if fallback else "one_time_keys"
        if raw is None:
            return []
        keys = require_object(raw, f"'{what}'")
        if len(keys) > MAX_ONE_TIME_KEYS_PER_UPLOAD:
            raise invalid(f"Too many {what} in one upload")
        ed_key = (identity or {}).get("keys", {}).get(f"{ED25519}:{device_id}")
        out = []
        for key_id, value in keys.items():
            algorithm, _ = split_key_id(key_id, f"{what} key id")
            if isinstance(value, str):
                if algorithm.startswith("signed_") or fallback:
                    raise invalid(f"{what} {key_id!r} must be a signed key object")
                if not is_public_key(value):
                    raise invalid(f"{what} {key_id!r} is not 32 bytes of unpadded base64")
                out.append(OneTimeKey(key_id, value))
                continue
            obj = require_object(value, f"{what} {key_id!r}")
            if not is_public_key(obj.get("key")):
                raise invalid(f"{what} {key_id!r} needs a 'key' of 32 bytes of unpadded base64")
            if fallback and obj.get("fallback") is not True:
                raise invalid(f"fallback key {key_id!r} must carry \"fallback\": true")
            check_signatures_shape(obj, f"{what} {key_id!r}")
            if not isinstance(ed_key, str):
                raise invalid("Upload the device keys before (or with) signed one-time keys")
            problem = verify(obj, user_id, f"{ED25519}:{device_id}", ed_key)
            if problem is not None:
                raise invalid(f"{what} {key_id!r} is not signed by this device: {problem}")
            out.append(OneTimeKey(key_id, signed_part(obj) | {"signatures": {
                user_id: {f"{ED25519}:{device_id}":
                          obj["signatures"][user_id][f"{ED25519}:{device_id}"]}}}))
        if len({k.algorithm for k in out}) > MAX_ALGORITHMS:
            raise invalid("Too many key algorithms")
        return out

    def _new_one_time_keys(self, user_id: str, device_id: str,
                           keys: list[OneTimeKey]) -> list[OneTimeKey]:
        """Keys not yet stored; re-uploading a stored key is fine, changing it is not."""
        if not keys:
            return []
        stored = {k.key_id: k.key for k in self._one_time_keys(user_id, device_id)}
        fresh = []
        for key in keys:
            if key.key_id in stored:
                if stored[key.key_id] != key.key:
                    raise invalid(f"One-time key {key.key_id} already exists with another value")
                continue
            stored[key.key_id] = key.key
            fresh.append(key)
        return fresh

    def _stage_fallback(self, batch: WriteBatch, user_id: str, device_id: str, algorithm: str,
                        key: OneTimeKey) -> None:
        tree_key = join(user_id, device_id, algorithm)
        old = self._fallback(user_id, device_id, algorithm)
        used = bool(old is not None and old["key_id"] == key.key_id and old["key"] == key.key
                    and old["used"])
        batch.put(FALLBACK_KEYS, tree_key,
                  orjson.dumps({"key_id": key.key_id, "key": key.key, "used": used}))

    # --- reading ---------------------------------------------------------------------

    def get_device_keys(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        raw = self.store.tree(DEVICE_KEYS).get(join(user_id, device_id))
        return orjson.loads(raw) if raw is not None else None

    def device_keys_of(self, user_id: str) -> dict[str, dict[str, Any]]:
        prefix = join(user_id) + SEP
        return {key[len(prefix):].decode(): orjson.loads(raw)
                for key, raw in self.store.tree(DEVICE_KEYS).iter(prefix)}

    def has_keys(self, user_id: str, device_id: str) -> bool:
        return join(user_id, device_id) in self.store.tree(DEVICE_KEYS)

    def _one_time_keys(self, user_id: str, device_id: str) -> list[OneTimeKey]:
        prefix = join(user_id, device_id) + SEP
        return [OneTimeKey(**orjson.loads(raw))
                for _, raw in self.store.tree(ONE_TIME_KEYS).iter(prefix)]

    def one_time_key_counts(self, user_id: str, device_id: str | None) -> dict[str, int]:
        """Unclaimed one-time keys per algorithm; ``signed_curve25519`` always listed."""
        counts = {SIGNED_CURVE25519: 0}
        if device_id is None:
            return counts
        prefix = join(user_id, device_id) + SEP
        for key in self.store.tree(ONE_TIME_KEYS).keys(prefix):
            algorithm = key[len(prefix):].partition(SEP)[0].decode()
            counts[algorithm] = counts.get(algorithm, 0) + 1
        return counts

    def _fallback(self, user_id: str, device_id: str, algorithm: str) -> dict[str, Any] | None:
        raw = self.store.tree(FALLBACK_KEYS).get(join(user_id, device_id, algorithm))
        return orjson.loads(raw) if raw is not None else None

    def unused_fallback_algorithms(self, user_id: str, device_id: str | None) -> list[str]:
        if device_id is None:
            return []
        prefix = join(user_id, device_id) + SEP
        return sorted(key[len(prefix):].decode()
                      for key, raw in self.store.tree(FALLBACK_KEYS).iter(prefix)
                      if not orjson.loads(raw)["used"])

    # --- query -----------------------------------------------------------------------

    def query_devices(self, requester: str, user_id: str,
                      device_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Device keys of a local user as ``/keys/query`` shows them to ``requester``."""
        stored = self.device_keys_of(user_id)
        wanted = device_ids or list(stored)
        out: dict[str, dict[str, Any]] = {}
        for device_id in wanted:
            keys = stored.get(device_id)
            if keys is None:
                continue
            keys["signatures"] = self.merge_signatures(requester, user_id, device_id,
                                                       keys.get("signatures", {}))
            device = self.devices.get(user_id, device_id)
            name = device.get("display_name") if device is not None else None
            keys["unsigned"] = {"device_display_name": name} if name else {}
            out[device_id] = keys
        return out

    def merge_signatures(self, requester: str, user_id: str, key_id: str,
                         signatures: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        """Stored signatures plus the uploaded ones ``requester`` may see.

        A signature is visible when its signer is the key's owner (self-signing, or a
        device signing its master key) or the requester (their user-signing key).
        """
        merged = {signer: dict(sigs) for signer, sigs in signatures.items()}
        prefix = join(user_id, key_id) + SEP
        for key, raw in self.store.tree(SIGNATURES).iter(prefix):
            signer, _, signer_key = key[len(prefix):].partition(SEP)
            signer_id = signer.decode()
            if signer_id in (user_id, requester):
                merged.setdefault(signer_id, {})[signer_key.decode()] = raw.decode()
        return merged

    # --- claim -----------------------------------------------------------------------

    def claim(self, user_id: str, device_id: str, algorithm: str) -> dict[str, Any] | None:
        """Take the oldest one-time key of ``algorithm``, or else the fallback key.

        Synchronous on purpose: between finding a key and deleting it nothing else runs.
        """
        tree = self.store.tree(ONE_TIME_KEYS)
        for tree_key, raw in tree.iter(join(user_id, device_id, algorithm) + SEP):
            tree.delete(tree_key)
            found = orjson.loads(raw)
            return {found["key_id"]: found["key"]}
        fallback = self._fallback(user_id, device_id, algorithm)
        if fallback is None:
            return None
        if not fallback["used"]:
            fallback["used"] = True
            self.store.tree(FALLBACK_KEYS).put(join(user_id, device_id, algorithm),
                                               orjson.dumps(fallback))
        return {fallback["key_id"]: fallback["key"]}

    def claim_many(self, wanted: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``/keys/claim``: (one_time_keys, failures); remote users are failures for now."""
        claimed: dict[str, Any] = {}
        failures: dict[str, Any] = {}
        for user_id, devices in wanted.items():
            if not isinstance(devices, Mapping) or not all(
                    isinstance(a, str) for a in devices.values()):
                raise bad_json("one_time_keys must map user ids to device ids to algorithms")
            if server_of(user_id) != self.server_name:
                failures[server_of(user_id)] = _unreachable()
                continue
            for device_id, algorithm in devices.items():
                key = self.claim(user_id, device_id, algorithm)
                if key is not None:
                    claimed.setdefault(user_id, {})[device_id] = key
        return claimed, failures

    # --- removal ---------------------------------------------------------------------

    def remove_device(self, user_id: str, device_id: str) -> bool:
        """Drop every key of a device; True if it had identity keys."""
        had_keys = self.has_keys(user_id, device_id)
        with self.store.batch() as batch:
            batch.delete(DEVICE_KEYS, join(user_id, device_id))
            for tree in (ONE_TIME_KEYS, FALLBACK_KEYS):
                for key in self.store.tree(tree).keys(join(user_id, device_id) + SEP):
                    batch.delete(tree, key)
            for key in self.store.tree(SIGNATURES).keys(join(user_id, device_id) + SEP):
                batch.delete(SIGNATURES, key)
        if had_keys:
            for hook in self.on_change:
                hook(user_id, device_id, True)
        return had_keys

    def add_signature(self, batch: WriteBatch, user_id: str, key_id: str, signer: str,
                      signer_key_id: str, signature: str) -> None:
        batch.put(SIGNATURES, join(user_id, key_id, signer, signer_key_id), signature.encode())

    def remove_signatures_of(self, batch: WriteBatch, user_id: str) -> None:
        """Signatures on the user's keys and those the user made on others' keys."""
        tree = self.store.tree(SIGNATURES)
        for key in tree.keys(join(user_id) + SEP):
            batch.delete(tree, key)
        signer = join(user_id)
        for key in tree.keys(b""):
            parts = key.split(SEP)
            if len(parts) == 4 and parts[2] == signer:
                batch.delete(tree, key)


def _otk_key(user_id: str, device_id: str, algorithm: str, order: int, index: int) -> bytes:
    return join(user_id, device_id, algorithm) + SEP + u64_be(order) + index.to_bytes(4, "big")


def _unreachable() -> dict[str, Any]:
    return {"status": 503, "message": "Federation with this server is not available yet"}


def require_device_list(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
        raise bad_json("device_keys must map user ids to lists of device ids")
    return [require_str(d, "device id") for d in value]
