"""The first-run registration token: minted when needed, kept across restarts, used once."""

from __future__ import annotations

from pathlib import Path

from conduwuit.services.first_run import FirstRun
from conduwuit.services.users import Users
from conduwuit.store import Store


def test_token_lifecycle(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    try:
        users = Users(store, "test.local")
        first_run = FirstRun(store, users, allow_registration=False)
        token = first_run.prepare()
        assert token and first_run.prepare() == token  # stable until used
        assert not first_run.consume("wrong")
        assert first_run.consume(token)
        assert not first_run.consume(token) and not first_run.is_valid(token)
        users.create("@admin:test.local", "")
        assert first_run.prepare() is None  # users exist: no new token
    finally:
        store.close()


def test_no_token_when_registration_is_open(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    try:
        first_run = FirstRun(store, Users(store, "t"), allow_registration=True)
        assert first_run.prepare() is None
    finally:
        store.close()
