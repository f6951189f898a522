"""Cross-signing keys (``/keys/device_signing/upload``) and signatures (``.../signatures/upload``).

A user has at most one master, self-signing and user-signing key. The self-signing and
user-signing keys must carry the master key's signature. Signatures uploaded later are
checked against the signer's current keys and stored apart from the keys they sign, so
``/keys/query`` can show each requester the ones they may see.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import orjson

from conduwuit.errors import MatrixError
from conduwuit.store import Store, join

from .common import (
    ED25519,
    bad_json,
    check_signatures_shape,
    invalid,
    is_public_key,
    require_object,
    signed_part,
    verify,
)
from .device_lists import DeviceLists
from .keys import DeviceKeys

CROSS_SIGNING = "useridusage_crosssigningkey"
MASTER, SELF_SIGNING, USER_SIGNING = "master", "self_signing", "user_signing"
USAGES = (MASTER, SELF_SIGNING, USER_SIGNING)
REQUEST_FIELDS = {MASTER: "master_key", SELF_SIGNING: "self_signing_key",
                  USER_SIGNING: "user_signing_key"}


@attrs.frozen
class CrossSigningKey:
    usage: str
    public_key: str
    body: dict[str, Any]

    @property
    def key_id(self) -> str:
        return f"{ED25519}:{self.public_key}"


def parse_key(raw: object, user_id: str, usage: str) -> CrossSigningKey:
    """Check a cross-signing key's shape: owner, usage, exactly one ed25519 key."""
    field = REQUEST_FIELDS[usage]
    body = require_object(raw, f"'{field}'")
    if body.get("user_id") != user_id:
        raise invalid(f"{field}.user_id must be your own user id")
    usages = body.get("usage")
    if not isinstance(usages, list) or usages != [usage]:
        raise invalid(f"{field}.usage must be [\"{usage}\"]")
    keys = body.get("keys")
    if not isinstance(keys, Mapping) or len(keys) != 1:
        raise invalid(f"{field}.keys must hold exactly one key")
    [(key_id, public)] = keys.items()
    algorithm, _, name = str(key_id).partition(":")
    if algorithm != ED25519 or name != public or not is_public_key(public):
        raise invalid(f"{field}.keys must be {{\"ed25519:<key>\": \"<key>\"}} with a 32-byte "
                      "unpadded base64 key")
    check_signatures_shape(body, field)
    return CrossSigningKey(usage, public, body)


@attrs.define
class CrossSigning:
    store: Store
    keys: DeviceKeys
    device_lists: DeviceLists
    # Called with user_id when the user's published cross-signing keys changed (new
    # keys, or new signatures on their master key): the federation sender.
    on_change: list[Callable[[str], None]] = attrs.field(factory=list)

    # --- reading ---------------------------------------------------------------------

    def get(self, user_id: str, usage: str) -> dict[str, Any] | None:
        raw = self.store.tree(CROSS_SIGNING).get(join(user_id, usage))
        return orjson.loads(raw) if raw is not None else None

    def public_key(self, user_id: str, usage: str) -> str | None:
        key = self.get(user_id, usage)
        return next(iter(key["keys"].values())) if key is not None else None

    def for_query(self, requester: str, user_id: str, usage: str) -> dict[str, Any] | None:
        """A key as ``/keys/query`` shows it to ``requester``."""
        if usage == USER_SIGNING and requester != user_id:
            return None
        key = self.get(user_id, usage)
        if key is None:
            return None
        if usage == MASTER:
            public = next(iter(key["keys"].values()))
            signatures = self.keys.merge_signatures(requester, user_id, public,
                                                    key.get("signatures", {}))
            if signatures:
                key["signatures"] = signatures
        return key

    # --- uploading keys --------------------------------------------------------------

    def check_upload(self, user_id: str, body: Mapping[str, Any]) -> list[CrossSigningKey]:
        """Validate the keys of a ``device_signing/upload`` without storing anything."""
        new = [parse_key(body[REQUEST_FIELDS[usage]], user_id, usage)
               for usage in USAGES if body.get(REQUEST_FIELDS[usage]) is not None]
        by_usage = {key.usage: key for key in new}
        master_public = (by_usage[MASTER].public_key if MASTER in by_usage
                         else self.public_key(user_id, MASTER))
        device_ids = {d["device_id"] for d in self.keys.devices.for_user(user_id)}
        for key in new:
            if key.public_key in device_ids:
                raise MatrixError(403, "M_FORBIDDEN", "Key id in use by a device")
            if key.usage == MASTER:
                continue
            if master_public is None:
                raise MatrixError(400, "M_MISSING_PARAM", "No master signing key is available")
            problem = verify(key.body, user_id, f"{ED25519}:{master_public}", master_public)
            if problem is not None:
                raise MatrixError(400, "M_INVALID_SIGNATURE",
                                  f"{REQUEST_FIELDS[key.usage]} is not signed by the master "
                                  f"key: {problem}")
        return new

    def needs_auth(self, user_id: str, new: list[CrossSigningKey]) -> bool:
        """UIA is needed unless there is no master key yet or nothing would change."""
        if self.get(user_id, MASTER) is None:
            return False
        return any(self.get(user_id, key.usage) != _stored_form(key) for key in new)

    def store_keys(self, user_id: str, new: list[CrossSigningKey]) -> None:
        if not new:
            return
        changed = [key for key in new if self.get(user_id, key.usage) != _stored_form(key)]
        if not changed:
            return
        old_master = self.public_key(user_id, MASTER)
        with self.store.batch() as batch:
            for key in changed:
                batch.put(CROSS_SIGNING, join(user_id, key.usage),
                          orjson.dumps(_stored_form(key)))
            uploaded = {key.usage for key in new}
            if MASTER in uploaded and old_master is not None and \
                    old_master != self._uploaded(new, MASTER):
                # The old subkeys were signed by the old master key: they are void now.
                for usage in (SELF_SIGNING, USER_SIGNING):
                    if usage not in uploaded:
                        batch.delete(CROSS_SIGNING, join(user_id, usage))
            self.device_lists.keys_changed(user_id, batch)
        self.device_lists.wake(user_id)
        for hook in self.on_change:
            hook(user_id)

    @staticmethod
    def _uploaded(new: list[CrossSigningKey], usage: str) -> str | None:
        return next((k.public_key for k in new if k.usage == usage), None)

    # --- uploading signatures --------------------------------------------------------

    def upload_signatures(self, signer: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Check and store each signature; returns ``failures`` (user -> key id -> error)."""
        failures: dict[str, dict[str, Any]] = {}
        accepted: list[tuple[str, str, str, str]] = []  # target user, key id, signer key, sig
        for user_id, objects in body.items():
            if not isinstance(objects, Mapping):
                raise bad_json("The body must map user ids to key ids to signed objects")
            for key_id, signed in objects.items():
                try:
                    accepted.append(self._check_signature(signer, user_id, key_id, signed))
                except MatrixError as refused:
                    failures.setdefault(user_id, {})[key_id] = {"errcode": refused.errcode,
                                                                "error": refused.error}
        if accepted:
            with self.store.batch() as batch:
                for user_id, key_id, signer_key, signature in accepted:
                    self.keys.add_signature(batch, user_id, key_id, signer, signer_key,
                                            signature)
            for user_id in {a[0] for a in accepted}:
                if user_id == signer:
                    self.device_lists.keys_changed(user_id)
                else:
                    self.device_lists.seen_by(signer, user_id)
            self._announce_own_signatures(signer, accepted)
        return failures

    def _announce_own_signatures(self, signer: str,
                                 accepted: list[tuple[str, str, str, str]]) -> None:
        """Signatures on one's own devices or master key change what others fetch."""
        own = {key_id for user_id, key_id, _, _ in accepted if user_id == signer}
        devices = set(self.keys.device_keys_of(signer)) if own else set()
        for key_id in sorted(own):
            if key_id in devices:
                for device_hook in self.keys.on_change:
                    device_hook(signer, key_id, False)
            else:
                for hook in self.on_change:
                    hook(signer)

    def _check_signature(self, signer: str, user_id: str, key_id: str,
                         signed: object) -> tuple[str, str, str, str]:
        if not isinstance(signed, Mapping):
            raise bad_json("A signed object must be an object")
        check_signatures_shape(signed, "signed object")
        target = self._target(user_id, key_id)
        if target is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown key")
        if signed_part(signed) != signed_part(target):
            raise MatrixError(400, "M_INVALID_SIGNATURE",
                              "The signed object does not match the stored key")
        keys: dict[str, str] = {}
        if user_id == signer and "device_id" in target:
            # Our own device, signed by our self-signing key.
            usage = "self-signing"
            public = self.public_key(signer, SELF_SIGNING)
            if public is not None:
                keys[f"{ED25519}:{public}"] = public
        elif user_id == signer:
            # Our own master key, signed by one of our devices.
            usage = "device"
            for device_id, device in self.keys.device_keys_of(signer).items():
                ed = device["keys"].get(f"{ED25519}:{device_id}")
                if isinstance(ed, str):
                    keys[f"{ED25519}:{device_id}"] = ed
        elif "device_id" in target:
            raise MatrixError(400, "M_INVALID_SIGNATURE",
                              "Another user's devices cannot be signed directly")
        else:
            # Someone else's master key, signed by our user-signing key.
            usage = "user-signing"
            public = self.public_key(signer, USER_SIGNING)
            if public is not None:
                keys[f"{ED25519}:{public}"] = public
        if not keys:
            raise MatrixError(400, "M_MISSING_PARAM", f"You have no {usage} key to sign with")
        made = signed.get("signatures", {}).get(signer, {})
        for signer_key, signature in made.items():
            public_key = keys.get(signer_key)
            if public_key is None:
                continue
            problem = verify(signed, signer, signer_key, public_key)
            if problem is not None:
                raise MatrixError(400, "M_INVALID_SIGNATURE", f"Invalid signature: {problem}")
            return user_id, key_id, signer_key, signature
        raise MatrixError(400, "M_INVALID_SIGNATURE", f"No signature by your {usage} key")

    def _target(self, user_id: str, key_id: str) -> dict[str, Any] | None:
        """The stored key ``key_id`` names: a device of the user or their master key."""
        master = self.get(user_id, MASTER)
        if master is not None and next(iter(master["keys"].values())) == key_id:
            return master
        return self.keys.get_device_keys(user_id, key_id)

    # --- removal ---------------------------------------------------------------------

    def remove_user(self, user_id: str) -> None:
        with self.store.batch() as batch:
            for usage in USAGES:
                batch.delete(CROSS_SIGNING, join(user_id, usage))
            self.keys.remove_signatures_of(batch, user_id)


def _stored_form(key: CrossSigningKey) -> dict[str, Any]:
    """The key without ``unsigned``, keeping only its owner's signatures (the master
    key's on the subkeys; a device's on the master key). Others sign through
    ``/keys/signatures/upload``, where their signatures are checked."""
    owner = key.body["user_id"]
    own = key.body.get("signatures", {}).get(owner)
    return signed_part(key.body) | ({"signatures": {owner: dict(own)}} if own else {})
