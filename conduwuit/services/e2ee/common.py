"""Shapes shared by the E2EE services: request validation and signature checks.

Every upload is validated completely before anything is written, so a request
refused with 400 leaves the store exactly as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unpaddedbase64 import decode_base64

from conduwuit.errors import MatrixError
from conduwuit.protocol import signing

ED25519 = "ed25519"


def invalid(error: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", error)


def bad_json(error: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", error)


def require_object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise bad_json(f"{what} must be an object")
    if not all(isinstance(k, str) for k in value):
        raise bad_json(f"{what} must have string keys")
    return dict(value)


def optional_object(body: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    return None if value is None else require_object(value, f"'{key}'")


def require_str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise bad_json(f"{what} must be a non-empty string")
    return value


def is_public_key(value: object, length: int = 32) -> bool:
    """Unpadded base64 of ``length`` bytes (curve25519 and ed25519 keys are 32)."""
    if not isinstance(value, str):
        return False
    try:
        return len(decode_base64(value)) == length
    except ValueError:
        return False


def split_key_id(key_id: str, what: str) -> tuple[str, str]:
    """``"<algorithm>:<id>"`` with both parts non-empty."""
    algorithm, sep, ident = key_id.partition(":")
    if not sep or not algorithm or not ident:
        raise invalid(f"{what} {key_id!r} is not '<algorithm>:<id>'")
    return algorithm, ident


def check_signatures_shape(obj: Mapping[str, Any], what: str) -> None:
    signatures = obj.get("signatures", {})
    if not isinstance(signatures, Mapping) or not all(
            isinstance(by, Mapping) and all(isinstance(s, str) for s in by.values())
            for by in signatures.values()):
        raise bad_json(f"{what}: 'signatures' must map user ids to key ids to strings")


def verify(obj: Mapping[str, Any], signer: str, key_id: str, public_key: str) -> str | None:
    """None when ``signer``'s signature by ``key_id`` is valid, else why not."""
    try:
        signing.verify_json(obj, signer, key_id, public_key)
    except signing.SignatureError as exc:
        return str(exc)
    return None


def signed_part(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a signature covers: everything but ``signatures`` and ``unsigned``."""
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def server_of(user_id: str) -> str:
    return user_id.partition(":")[2]
