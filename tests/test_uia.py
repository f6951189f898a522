"""UIA sessions: expiry, the size cap, multi-stage flows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from conduwuit.errors import MatrixError
from conduwuit.services.uia import Uia, UiaSession


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def ok(auth: Mapping[str, Any], session: UiaSession) -> None:
    return None


CHECKS = {"a": ok, "b": ok}


async def challenge(uia: Uia, auth: object, flows: list[list[str]]) -> dict[str, Any]:
    with pytest.raises(MatrixError) as raised:
        await uia.authenticate(auth, flows, CHECKS)
    assert raised.value.status == 401
    return raised.value.to_json()


async def test_two_stage_flow() -> None:
    uia = Uia()
    first = await challenge(uia, None, [["a", "b"]])
    assert first == {"flows": [{"stages": ["a", "b"]}], "params": {},
                     "session": first["session"], "completed": []}
    second = await challenge(uia, {"type": "a", "session": first["session"]}, [["a", "b"]])
    assert second["completed"] == ["a"] and "errcode" not in second
    done = await uia.authenticate({"type": "b", "session": first["session"]}, [["a", "b"]],
                                  CHECKS)
    assert done.completed == ["a", "b"]
    # A finished session cannot be replayed.
    with pytest.raises(MatrixError) as raised:
        await uia.authenticate({"type": "b", "session": first["session"]}, [["a", "b"]], CHECKS)
    assert raised.value.status == 400


async def test_sessions_expire() -> None:
    clock = Clock()
    uia = Uia(ttl=60, clock=clock)
    first = await challenge(uia, None, [["a", "b"]])
    clock.now = 61
    with pytest.raises(MatrixError) as raised:
        await uia.authenticate({"type": "a", "session": first["session"]}, [["a", "b"]], CHECKS)
    assert raised.value.errcode == "M_UNKNOWN"


async def test_session_table_is_bounded() -> None:
    uia = Uia(max_sessions=3)
    sessions = [(await challenge(uia, None, [["a"]]))["session"] for _ in range(5)]
    assert len(uia._sessions) == 3
    assert list(uia._sessions) == sessions[2:]
