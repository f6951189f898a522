"""Matrix canonical JSON (spec appendices, "Canonical JSON").

Everything that is hashed or signed goes through :func:`encode_canonical`, so
the bytes must equal what every other server computes for the same value.
The reference encoder is ``canonicaljson.encode_canonical_json`` (what Synapse
and signedjson use); orjson with ``OPT_SORT_KEYS`` produces identical bytes for
JSON values without floats, and every event is encoded several times (content
hash, reference hash, signing, verifying).
``tests/test_protocol_canonical.py`` proves the identity with Hypothesis.

Before orjson sees a value, one quick scan over it (exact-type checks only,
no paths) classifies it. The room-version rules live there: from room v6 on,
numbers must be integers within +-(2**53 - 1) (``strict``); older rooms carried
floats and huge integers, and their hashes still have to be reproduced, so the
lax mode hands such values to canonicaljson, whose float and bignum formatting
is the one the rest of the federation used when those events were made. Only
when the scan finds a problem does a second, slower walk run to name the path.

Cost, measured on a ~700-byte event: orjson alone ~1.3 us, canonicaljson ~16 us,
this module ~7 us. The scan is most of it; it cannot be skipped, because orjson
writes NaN as ``null`` and formats some floats unlike canonicaljson (``1e-7``
vs ``1e-07``), and neither encoder knows the +-(2**53 - 1) rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import canonicaljson
import orjson

MAX_SAFE_INT: Final = 2**53 - 1

# Scan flags.
_FLOAT: Final = 1  # a finite float: not strict; lax needs canonicaljson's formatting
_UNSAFE_INT: Final = 2  # an int outside +-(2**53 - 1): not strict
_BIG_INT: Final = 4  # outside int64/uint64: orjson cannot encode it
_UNSURE: Final = 8  # something the fast scan does not judge (subclasses, NaN, bytes...)
_NEEDS_REFERENCE: Final = _FLOAT | _BIG_INT

_ORJSON_MIN_INT: Final = -(2**63)
_ORJSON_MAX_INT: Final = 2**64 - 1


class CanonicalJsonError(ValueError):
    """A value cannot be encoded as (strict) canonical JSON.

    The message starts with the path of the offending value, for example
    ``content.count: float not allowed``, so a client error can say where.
    """


def encode_canonical(value: object, *, strict: bool = True) -> bytes:
    """Encode ``value`` as canonical JSON bytes.

    ``strict=True`` applies the room v6+ rules (no floats, integers within
    +-(2**53 - 1)); use it for anything we create. ``strict=False`` accepts what
    old room versions carried, so hashes and signatures of such events can be
    reproduced; it matches canonicaljson byte for byte. Keys must always be
    strings: JSON has no other kind, so anything else is a bug in the caller.
    """
    flags = _classify(value, strict)
    if flags & _NEEDS_REFERENCE:
        return _encode_reference(value, strict)
    try:
        return orjson.dumps(value, default=_orjson_default, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        # The scan does not look inside strings, so lone surrogates end up here (the
        # precise walk names them). Nesting deeper than orjson's limit (254 levels) is
        # valid JSON though: the reference encoder takes it.
        _precise(value, strict)
        return _encode_reference(value, strict)


def check_strict(value: object) -> None:
    """Raise :class:`CanonicalJsonError` unless ``value`` obeys the v6+ rules.

    Used on client-supplied event content before it is put in an event, so a
    bad request fails with ``M_BAD_JSON`` instead of producing an event other
    servers would drop. Encoding is the cheapest complete check: the scan does
    not look inside strings, the encoder refuses lone surrogates.
    """
    encode_canonical(value, strict=True)


def _classify(value: object, strict: bool) -> int:
    """Flags for ``value``, raising :class:`CanonicalJsonError` if it is not allowed.

    The fast scan settles the common case; anything it is unsure of, or any
    violation, is re-examined by the precise walk, which names the path.
    """
    try:
        flags = _scan(value)
    except RecursionError:
        raise CanonicalJsonError("(root): nested too deeply") from None
    if flags & _UNSURE or (strict and flags & (_FLOAT | _UNSAFE_INT)):
        flags = _precise(value, strict)
    return flags


# -- the fast scan ---------------------------------------------------------------------------
# Exact type checks (``type(x) is str``) and one loop per container keep this cheap: it
# visits every value of every event we hash or sign. Anything unusual is flagged _UNSURE.


def _scan(value: Any) -> int:
    kind = type(value)
    if kind is dict:
        return _scan_dict(value)
    if kind is list:
        return _scan_list(value)
    return _UNSURE


def _scan_dict(value: dict[Any, Any]) -> int:
    flags = 0
    for key, item in value.items():
        if type(key) is not str:
            flags |= _UNSURE
        kind = type(item)
        if kind is str:
            continue
        if kind is dict:
            flags |= _scan_dict(item)
        elif kind is list:
            flags |= _scan_list(item)
        elif kind is int:
            if not -MAX_SAFE_INT <= item <= MAX_SAFE_INT:
                flags |= _int_flags(item)
        elif item is None or kind is bool:
            pass
        elif kind is float:
            flags |= _FLOAT if math.isfinite(item) else _UNSURE
        else:
            flags |= _UNSURE
    return flags


def _scan_list(value: list[Any]) -> int:
    flags = 0
    for item in value:
        kind = type(item)
        if kind is str:
            continue
        if kind is dict:
            flags |= _scan_dict(item)
        elif kind is list:
            flags |= _scan_list(item)
        elif kind is int:
            if not -MAX_SAFE_INT <= item <= MAX_SAFE_INT:
                flags |= _int_flags(item)
        elif item is None or kind is bool:
            pass
        elif kind is float:
            flags |= _FLOAT if math.isfinite(item) else _UNSURE
        else:
            flags |= _UNSURE
    return flags


def _int_flags(value: int) -> int:
    if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        return 0
    if _ORJSON_MIN_INT <= value <= _ORJSON_MAX_INT:
        return _UNSAFE_INT
    return _UNSAFE_INT | _BIG_INT


# -- the precise walk --------------------------------------------------------------------------


class _Problem(Exception):
    """Raised deep in the precise walk; containers prepend their key on the way out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str | int] = []  # innermost first; ints are list indices


def _precise(value: object, strict: bool) -> int:
    """Flags for ``value`` using isinstance (subclasses, any Mapping); raises with a path."""
    try:
        return _walk(value, strict)
    except _Problem as problem:
        raise CanonicalJsonError(f"{_format_path(problem.path)}: {problem.reason}") from None
    except RecursionError:
        raise CanonicalJsonError("(root): nested too deeply") from None


def _walk(value: object, strict: bool) -> int:
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, str):
        _check_str(value)
        return 0
    if isinstance(value, int):
        return _check_int(value, strict)
    if isinstance(value, float):
        return _check_float(value, strict)
    if isinstance(value, Mapping):
        return _walk_mapping(value, strict)
    if isinstance(value, list | tuple):
        return _walk_sequence(value, strict)
    raise _Problem(f"{type(value).__name__} is not a JSON value")


def _check_str(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Problem("string contains a lone surrogate (not valid Unicode)") from None


def _check_int(value: int, strict: bool) -> int:
    flags = _int_flags(value)
    if strict and flags:
        raise _Problem(f"integer {value} outside ±(2**53 - 1)")
    return flags


def _check_float(value: float, strict: bool) -> int:
    if strict:
        raise _Problem("float not allowed")
    if not math.isfinite(value):
        raise _Problem(f"{value} is not a JSON number")
    return _FLOAT


def _walk_mapping(value: Mapping[object, object], strict: bool) -> int:
    flags = 0
    for key, item in value.items():
        if not isinstance(key, str):
            problem = _Problem(f"key {key!r} is not a string")
            problem.path.append(repr(key))
            raise problem
        try:
            _check_str(key)
            flags |= _walk(item, strict)
        except _Problem as problem:
            # A key with a lone surrogate cannot go into an error message as is.
            problem.path.append(key.encode("utf-8", "backslashreplace").decode())
            raise
    return flags


def _walk_sequence(value: list[object] | tuple[object, ...], strict: bool) -> int:
    flags = 0
    for index, item in enumerate(value):
        try:
            flags |= _walk(item, strict)
        except _Problem as problem:
            problem.path.append(index)
            raise
    return flags


def _format_path(reversed_parts: list[str | int]) -> str:
    """``["count", 0, "content"]`` (innermost first) -> ``content[0].count``."""
    out = ""
    for part in reversed(reversed_parts):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(root)"


# -- encoders ---------------------------------------------------------------------------------


def _orjson_default(value: object) -> object:
    """orjson only knows dict; events may be any Mapping (e.g. read-only views)."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _encode_reference(value: object, strict: bool) -> bytes:
    """canonicaljson, for floats and bignums; it also only knows dict."""
    try:
        return canonicaljson.encode_canonical_json(_plain(value))
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError: ValueError
        _precise(value, strict)
        raise CanonicalJsonError(f"(root): cannot encode: {exc}") from exc


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
