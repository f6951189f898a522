"""Key codecs shared by every tree.

LevelDB sorts keys bytewise, so numbers are fixed-width big-endian (numeric order equals
byte order) and tuple parts are separated by 0xFF, a byte that never occurs in UTF-8
(so a string part can never swallow a separator).
"""

from __future__ import annotations

SEP = b"\xff"
U64_MAX = 2**64 - 1


def u64_be(n: int) -> bytes:
    """Encode ``n`` as 8 big-endian bytes so counters sort numerically."""
    if not 0 <= n <= U64_MAX:
        raise ValueError(f"{n} does not fit in an unsigned 64-bit integer")
    return n.to_bytes(8, "big")


def from_u64_be(b: bytes) -> int:
    """Decode 8 big-endian bytes; anything else is a bug or corruption, so refuse it."""
    if len(b) != 8:
        raise ValueError(f"expected 8 bytes for a u64, got {len(b)}")
    return int.from_bytes(b, "big")


def encode_part(part: bytes | str | int) -> bytes:
    """One tuple element: bytes as-is, str as UTF-8, int as u64 big-endian."""
    if isinstance(part, bytes):
        return part
    if isinstance(part, str):
        return part.encode("utf-8")
    if isinstance(part, int) and not isinstance(part, bool):
        return u64_be(part)
    raise TypeError(f"cannot encode {type(part).__name__} as a key part")


def join(*parts: bytes | str | int) -> bytes:
    """Build a tuple key with 0xFF between parts (none before or after)."""
    return SEP.join(encode_part(p) for p in parts)


def split(key: bytes) -> list[bytes]:
    """Split a tuple key at every 0xFF.

    Only exact for parts that cannot contain 0xFF (strings, ids). A u64 part may contain
    0xFF bytes, so keys with numeric parts are better sliced at fixed offsets.
    """
    return key.split(SEP)


def successor(prefix: bytes) -> bytes | None:
    """Smallest key greater than every key starting with ``prefix``.

    Used as the exclusive upper bound of a prefix scan; ``None`` means "no bound"
    (the prefix is empty or all 0xFF).
    """
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
