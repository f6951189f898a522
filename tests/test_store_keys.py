"""Key codecs: big-endian counters sort numerically, tuples split on 0xFF."""

from __future__ import annotations

import pytest

from conduwuit.store import SEP, from_u64_be, join, split, u64_be
from conduwuit.store.keys import successor


def test_u64_round_trip_and_order() -> None:
    values = [0, 1, 255, 256, 2**32, 2**64 - 1]
    encoded = [u64_be(v) for v in values]
    assert all(len(e) == 8 for e in encoded)
    assert [from_u64_be(e) for e in encoded] == values
    assert sorted(encoded) == encoded  # byte order == numeric order


@pytest.mark.parametrize("bad", [-1, 2**64])
def test_u64_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError):
        u64_be(bad)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 7, b"\x00" * 9])
def test_from_u64_wrong_length(bad: bytes) -> None:
    with pytest.raises(ValueError):
        from_u64_be(bad)


def test_join_mixes_types() -> None:
    key = join("@alice:hs", b"DEVICE", 5)
    assert key == b"@alice:hs" + SEP + b"DEVICE" + SEP + u64_be(5)
    assert join() == b""
    assert join("é") == "é".encode()


def test_join_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        join(True)
    with pytest.raises(TypeError):
        join(1.5)  # type: ignore[arg-type]


def test_split_inverts_join_of_strings() -> None:
    assert split(join("@a:hs", "DEV", "x")) == [b"@a:hs", b"DEV", b"x"]
    assert split(b"solo") == [b"solo"]


def test_successor() -> None:
    assert successor(b"ab") == b"ac"
    assert successor(b"a\xff") == b"b"
    assert successor(b"\x00\xff\xff") == b"\x01"
    assert successor(b"\xff\xff") is None
    assert successor(b"") is None
