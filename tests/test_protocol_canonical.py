"""Canonical JSON: the spec's examples, and byte identity with canonicaljson (Hypothesis)."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import canonicaljson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conduwuit.protocol.canonical import (
    MAX_SAFE_INT,
    CanonicalJsonError,
    check_strict,
    encode_canonical,
)

# -- the spec's examples (appendices, "Canonical JSON" > "Examples") -------------------------

SPEC_EXAMPLES = [
    ("{}", "{}"),
    ('{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'),
    ('{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        """{
            "auth": {
                "success": true,
                "mxid": "@john.doe:example.com",
                "profile": {
                    "display_name": "John Doe",
                    "three_pids": [
                        {"medium": "email", "address": "john.doe@example.org"},
                        {"medium": "msisdn", "address": "123456789"}
                    ]
                }
            }
        }""",
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        '"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        '{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ('{\n    "a": "日本語"\n}', '{"a":"日本語"}'),
    ('{\n    "本": 2,\n    "日": 1\n}', '{"日":1,"本":2}'),
    ('{\n    "a": "\\u65E5"\n}', '{"a":"日"}'),
    ('{\n    "a": null\n}', '{"a":null}'),
]


@pytest.mark.parametrize(("source", "expected"), SPEC_EXAMPLES)
def test_spec_examples_byte_for_byte(source: str, expected: str) -> None:
    value = json.loads(source)
    assert encode_canonical(value) == expected.encode()
    assert encode_canonical(value, strict=False) == expected.encode()


def _integral_number(text: str) -> int | float:
    """A JSON parser that keeps numbers as mathematical values, as the spec reads them."""
    number = float(text)
    return int(number) if number.is_integer() else number


def test_spec_example_negative_zero_and_exponent() -> None:
    """``{"a": -0, "b": 1e10}`` -> ``{"a":0,"b":10000000000}``.

    The spec treats 1e10 as the integer it denotes; Python's json module reads it
    as a float, which strict mode refuses, so parse numbers as values first.
    """
    source = '{\n    "a": -0,\n    "b": 1e10\n}'
    value = json.loads(source, parse_float=_integral_number)
    assert encode_canonical(value) == b'{"a":0,"b":10000000000}'
    with pytest.raises(CanonicalJsonError, match=r"^b: float not allowed$"):
        encode_canonical(json.loads(source))


def test_escapes_are_the_shortest_form() -> None:
    value = {"s": '\x00\x08\t\n\x0b\x0c\r\x1f"\\/\x7f\u2028\u2029\ufeff\U0001f600é'}
    expected = (
        '{"s":"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\\"\\\\/\x7f\u2028\u2029\ufeff\U0001f600é"}'
    ).encode()
    assert encode_canonical(value) == expected
    assert canonicaljson.encode_canonical_json(value) == expected


def test_keys_sort_by_code_point_including_astral() -> None:
    value = {"\U00010000": 1, "\uffff": 2, "a": 3, "B": 4, "é": 5}
    assert encode_canonical(value) == canonicaljson.encode_canonical_json(value)
    assert list(json.loads(encode_canonical(value))) == ["B", "a", "é", "\uffff", "\U00010000"]


# -- strict rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"content": {"count": 1.5}}, "content.count: float not allowed"),
        ({"content": {"count": 2.0}}, "content.count: float not allowed"),
        ({"a": [1, {"b": MAX_SAFE_INT + 1}]}, "a[1].b: integer 9007199254740992 outside"),
        ({"a": -MAX_SAFE_INT - 1}, "a: integer -9007199254740992 outside"),
        ({"a": 2**70}, "a: integer 1180591620717411303424 outside"),
        ({"a": [[float("nan")]]}, "a[0][0]: float not allowed"),
        (1.5, "(root): float not allowed"),
        ({1: "x"}, "1: key 1 is not a string"),
        ({"a": {"b": {1, 2}}}, "a.b: set is not a JSON value"),
        ({"a": b"bytes"}, "a: bytes is not a JSON value"),
        ({"a": "\ud800"}, "a: string contains a lone surrogate"),
        ({"\udfff": 1}, "\\udfff: string contains a lone surrogate"),
    ],
)
def test_strict_rejects_with_path(value: object, message: str) -> None:
    with pytest.raises(CanonicalJsonError) as excinfo:
        encode_canonical(value)
    assert str(excinfo.value).startswith(message)
    with pytest.raises(CanonicalJsonError):
        check_strict(value)
    assert isinstance(excinfo.value, ValueError)  # callers may catch ValueError


def test_strict_accepts_the_limits() -> None:
    value = {"max": MAX_SAFE_INT, "min": -MAX_SAFE_INT, "t": True, "f": False, "n": None}
    check_strict(value)
    assert encode_canonical(value) == canonicaljson.encode_canonical_json(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": float("nan")}, "a: nan is not a JSON number"),
        ({"a": [float("inf")]}, "a[0]: inf is not a JSON number"),
        ({1: 2}, "1: key 1 is not a string"),
        ({"a": object()}, "a: object is not a JSON value"),
        ({"a": 1.5, "b": "\ud800"}, "b: string contains a lone surrogate"),
    ],
)
def test_lax_still_rejects_what_is_not_json(value: object, message: str) -> None:
    with pytest.raises(CanonicalJsonError, match="^" + message.replace("[", r"\[")):
        encode_canonical(value, strict=False)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1.5, "b": 1e16, "c": -0.0, "d": 1e-7, "e": 10.0},
        {"big": 2**53, "bigger": 2**64 - 1, "huge": 2**64, "negative": -(2**63) - 1},
        {"n": [2**100, 0.1, {"x": -(2**70)}]},
    ],
)
def test_lax_matches_canonicaljson_for_old_room_numbers(value: dict[str, Any]) -> None:
    assert encode_canonical(value, strict=False) == canonicaljson.encode_canonical_json(value)


def test_any_mapping_and_tuples_encode_like_dicts_and_lists() -> None:
    value = MappingProxyType({"b": MappingProxyType({"a": (1, 2)}), "a": [()]})
    assert encode_canonical(value) == b'{"a":[[]],"b":{"a":[1,2]}}'
    lax = MappingProxyType({"f": 0.5, "m": MappingProxyType({"t": (1,)})})
    assert encode_canonical(lax, strict=False) == b'{"f":0.5,"m":{"t":[1]}}'


def test_subclasses_of_json_types_are_accepted() -> None:
    class Name(str):
        pass

    class Count(int):
        pass

    value = {Name("k"): [Name("v"), Count(3)]}
    assert encode_canonical(value) == b'{"k":["v",3]}'


def test_nesting_deeper_than_orjson_allows_is_still_encoded() -> None:
    value: list[Any] = []
    for _ in range(300):
        value = [value]
    assert encode_canonical(value) == canonicaljson.encode_canonical_json(value)


def test_input_is_not_modified() -> None:
    value = {"b": [1, {"z": 1, "a": 2}], "a": MappingProxyType({"y": 1})}
    before = repr(value)
    encode_canonical(value)
    encode_canonical(value, strict=False)
    assert repr(value) == before


# -- Hypothesis: byte identity with the reference encoder ------------------------------------

_TRICKY = st.sampled_from(
    [
        "\x00",
        "\x07",
        "\x1f",
        "\x7f",
        '"',
        "\\",
        "/",
        "\u2028",
        "\u2029",
        "\ufeff",
        "\uffff",
        "\U0001f600",
        "\U0010ffff",
        "é",
        "日",
        " ",
    ]
)
_CHARS = st.characters(exclude_categories=["Cs"])  # lone surrogates are not Unicode text
_TEXT = st.text(alphabet=st.one_of(_TRICKY, _CHARS), max_size=12)
_SAFE_INT = st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT)


def _json(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(_TEXT, children, max_size=5),
        ),
        max_leaves=30,
    )


_STRICT_LEAVES = st.one_of(st.none(), st.booleans(), _SAFE_INT, _TEXT)
STRICT_JSON = _json(_STRICT_LEAVES)
LAX_JSON = _json(
    st.one_of(
        _STRICT_LEAVES,
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=False, allow_infinity=False),
    )
)


@settings(max_examples=400, deadline=None)
@given(STRICT_JSON)
def test_strict_bytes_equal_canonicaljson(value: Any) -> None:
    assert encode_canonical(value) == canonicaljson.encode_canonical_json(value)
    check_strict(value)


@settings(max_examples=400, deadline=None)
@given(LAX_JSON)
def test_lax_bytes_equal_canonicaljson(value: Any) -> None:
    assert encode_canonical(value, strict=False) == canonicaljson.encode_canonical_json(value)


@given(STRICT_JSON)
def test_output_is_valid_json_of_the_same_value(value: Any) -> None:
    encoded = encode_canonical(value)
    assert json.loads(encoded) == value
    assert b"\n" not in encoded  # no whitespace between tokens; newlines in strings are escaped


_BAD_NUMBERS = st.one_of(
    st.floats(),  # any float, integral or not, NaN and infinities too
    st.integers(min_value=MAX_SAFE_INT + 1),
    st.integers(max_value=-MAX_SAFE_INT - 1),
)


def _plant(value: Any, bad: Any, choose: Callable[[int], int]) -> tuple[Any, list[str | int]]:
    """Put ``bad`` somewhere inside ``value``; return the new value and its path."""
    if isinstance(value, dict) and value:
        keys = sorted(value)
        key = keys[choose(len(keys))]
        inner, path = _plant(value[key], bad, choose)
        return {**value, key: inner}, [key, *path]
    if isinstance(value, list) and value:
        index = choose(len(value))
        inner, path = _plant(value[index], bad, choose)
        copy = list(value)
        copy[index] = inner
        return copy, [index, *path]
    return bad, []


def _dotted(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(root)"


@given(STRICT_JSON, _BAD_NUMBERS, st.randoms(use_true_random=False))
def test_strict_rejects_a_bad_number_anywhere_and_names_its_path(
    value: Any, bad: Any, rnd: Any
) -> None:
    planted, path = _plant(value, bad, lambda n: rnd.randrange(n))
    with pytest.raises(CanonicalJsonError) as excinfo:
        encode_canonical(planted)
    assert str(excinfo.value).startswith(f"{_dotted(path)}: ")
    with pytest.raises(CanonicalJsonError):
        check_strict(planted)
