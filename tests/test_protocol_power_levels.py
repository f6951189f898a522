"""Power levels: defaults, value formats per room version, v12 infinite creators."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduwuit.protocol.power_levels import (
    InvalidPowerLevels,
    PowerLevels,
    parse_level,
    parse_power_level_content,
    read_power_level_content,
    room_creators,
)
from tests.support.events import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CAROL,
    create_event,
    make_event,
    version,
    versions,
)


def power_event(room_version: str, content: dict[str, Any]) -> Any:
    return make_event(room_version, "m.room.power_levels", ALICE, content, state_key="",
                      room_id="!r:test")


# --- defaults ---------------------------------------------------------------------


@pytest.mark.parametrize("rv", versions(1, 11))
def test_without_power_levels_the_creator_has_100_and_others_0(rv: str) -> None:
    power = PowerLevels.from_state(None, create_event(rv), version(rv))
    assert power.user_level(ALICE) == 100
    assert power.user_level(BOB) == 0


def test_v12_creators_are_infinite_without_power_levels() -> None:
    create = create_event("12", additional_creators=[BOB])
    power = PowerLevels.from_state(None, create, version("12"))
    assert power.user_level(ALICE) == math.inf
    assert power.user_level(BOB) == math.inf
    assert power.user_level(CAROL) == 0


def test_v12_creators_are_infinite_over_any_stated_level() -> None:
    create = create_event("12", additional_creators=[BOB])
    pl = power_event("12", {"users": {ALICE: 1, CAROL: 10**15}, "users_default": 5})
    power = PowerLevels.from_state(pl, create, version("12"))
    assert power.user_level(ALICE) == math.inf
    assert power.user_level(BOB) == math.inf
    assert power.user_level(CAROL) == 10**15 < power.user_level(BOB)
    assert power.user_level("@dave:test") == 5


@pytest.mark.parametrize("rv", versions(1, 11))
def test_additional_creators_mean_nothing_before_v12(rv: str) -> None:
    create = create_event(rv, additional_creators=[BOB])
    assert room_creators(create, version(rv)) == {ALICE}
    assert PowerLevels.from_state(None, create, version(rv)).user_level(BOB) == 0


@pytest.mark.parametrize("rv", [*ALL_VERSIONS, None])
def test_named_defaults_with_and_without_an_event(rv: str | None) -> None:
    """state_default is 50 either way: spec v1.7 dropped the "0 without an event" text."""
    room_version = rv or "12"
    pl = power_event(room_version, {}) if rv else None
    power = PowerLevels.from_state(pl, create_event(room_version), version(room_version))
    assert (power.users_default, power.events_default, power.state_default) == (0, 0, 50)
    assert (power.ban, power.kick, power.redact, power.invite) == (50, 50, 50, 0)
    assert power.notification_level("room") == 50
    assert power.event_level("m.room.name", is_state=True) == 50
    assert power.event_level("m.room.message", is_state=False) == 0


def test_stated_levels_override_defaults() -> None:
    content = {"ban": 10, "kick": 11, "redact": 12, "invite": 13, "state_default": 14,
               "events_default": 15, "users_default": 16, "notifications": {"room": 17},
               "events": {"m.room.name": 99, "m.reaction": 1}}
    power = PowerLevels.from_state(power_event("10", content), create_event("10"), version("10"))
    assert (power.ban, power.kick, power.redact, power.invite) == (10, 11, 12, 13)
    assert power.user_level(BOB) == 16
    assert power.event_level("m.room.name", is_state=True) == 99
    assert power.event_level("m.reaction", is_state=False) == 1
    assert power.event_level("m.room.topic", is_state=True) == 14
    assert power.event_level("m.room.message", is_state=False) == 15
    assert power.notification_level("room") == 17


@pytest.mark.parametrize("rv", versions(1, 10))
def test_creator_comes_from_content_before_v11(rv: str) -> None:
    create = create_event(rv)
    other = make_event(rv, "m.room.create", BOB, {"creator": CAROL}, state_key="",
                       room_id="!r:test")
    assert room_creators(create, version(rv)) == {ALICE}
    assert room_creators(other, version(rv)) == {CAROL}
    odd = make_event(rv, "m.room.create", BOB, {"creator": 5}, state_key="", room_id="!r:test")
    assert room_creators(odd, version(rv)) == frozenset()
    assert room_creators(None, version(rv)) == frozenset()


@pytest.mark.parametrize("rv", versions(11))
def test_creator_is_the_sender_from_v11(rv: str) -> None:
    other = make_event(rv, "m.room.create", BOB, {"creator": CAROL}, state_key="")
    assert room_creators(other, version(rv)) == {BOB}


# --- value formats ----------------------------------------------------------------


@pytest.mark.parametrize("rv", versions(1, 9))
@pytest.mark.parametrize(("raw", "expected"), [
    ("100", 100), ("000100", 100), ("+100", 100), ("-100", -100), (" 100 ", 100),
    (" +100 ", 100), ("\t-7\n", -7), ("1.5", None), ("abc", None), ("1_000", None),
    ("", None), ("+-1", None), ("١٢", None),
])
def test_strings_of_integers_before_v10(rv: str, raw: str, expected: int | None) -> None:
    assert parse_level(raw, version(rv)) == expected


@pytest.mark.parametrize("rv", versions(10))
def test_no_strings_from_v10(rv: str) -> None:
    assert parse_level("100", version(rv)) is None
    assert parse_level(100, version(rv)) == 100


@pytest.mark.parametrize("rv", versions(1, 5))
def test_floats_truncate_before_v6(rv: str) -> None:
    assert parse_level(50.57, version(rv)) == 50
    assert parse_level(-50.57, version(rv)) == -50
    assert parse_level(5.114698e4, version(rv)) == 51146
    assert parse_level(math.inf, version(rv)) is None
    assert parse_level(math.nan, version(rv)) is None


@pytest.mark.parametrize("rv", versions(6))
def test_no_floats_from_v6(rv: str) -> None:
    assert parse_level(50.0, version(rv)) is None


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_booleans_and_other_types_are_never_levels(rv: str) -> None:
    for raw in (True, False, None, [], {}):
        assert parse_level(raw, version(rv)) is None


@given(st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
       st.sampled_from(versions(1, 9)), st.sampled_from(["", " ", "\t"]),
       st.integers(min_value=0, max_value=3))
def test_any_integer_string_form_parses_to_its_value(
    value: int, rv: str, pad: str, zeros: int
) -> None:
    sign = "-" if value < 0 else "+"
    text = f"{pad}{sign}{'0' * zeros}{abs(value)}{pad}"
    assert parse_level(text, version(rv)) == value
    assert parse_level(value, version(rv)) == value


def test_lenient_reading_drops_unreadable_values() -> None:
    content = {"ban": "abc", "kick": "25", "events": {"a": "x", "b": 3}, "users": "nope"}
    read = read_power_level_content(content, version("5"))
    assert read.named == {"kick": 25}
    assert read.events == {"b": 3}
    assert read.users == {}
    power = PowerLevels.from_state(power_event("5", content), create_event("5"), version("5"))
    assert power.ban == 50  # unreadable: the default applies


# --- strict validation (auth rules 10.1-10.4) ---------------------------------------


@pytest.mark.parametrize("rv", versions(1, 9))
def test_pre_v10_accepts_string_users_and_ignores_junk_thresholds(rv: str) -> None:
    content = {"users": {ALICE: "100", BOB: " 50 "}, "ban": "junk", "events": "junk"}
    parsed = parse_power_level_content(content, version(rv))
    assert parsed.users == {ALICE: 100, BOB: 50}
    assert "ban" not in parsed.named


@pytest.mark.parametrize("rv", ALL_VERSIONS)
@pytest.mark.parametrize("users", [
    {"not-a-user": 10}, {"@no-server": 10}, {"@a:bad server": 10}, {ALICE: "x"}, {ALICE: True},
    [ALICE], "users",
])
def test_users_must_map_valid_user_ids_to_levels(rv: str, users: Any) -> None:
    with pytest.raises(InvalidPowerLevels):
        parse_power_level_content({"users": users}, version(rv))


@pytest.mark.parametrize("rv", versions(10))
@pytest.mark.parametrize("content", [
    {"ban": "50"}, {"kick": 1.5}, {"invite": None}, {"users_default": True},
    {"events": {"m.room.name": "50"}}, {"events": []}, {"notifications": {"room": "50"}},
    {"notifications": 5}, {"users": {ALICE: "100"}},
])
def test_v10_requires_integers_everywhere(rv: str, content: dict[str, Any]) -> None:
    with pytest.raises(InvalidPowerLevels):
        parse_power_level_content(content, version(rv))


@pytest.mark.parametrize("rv", versions(10))
def test_v10_integer_content_is_valid(rv: str) -> None:
    content = {"ban": 50, "events": {"m.room.name": 50}, "notifications": {"room": 20},
               "users": {ALICE: 100}}
    parsed = parse_power_level_content(content, version(rv))
    assert parsed.named == {"ban": 50}
    assert parsed.notifications == {"room": 20}


def test_v12_creators_may_not_be_listed_in_users() -> None:
    creators = {ALICE, BOB}
    parse_power_level_content({"users": {CAROL: 50}}, version("12"), creators)
    for listed in (ALICE, BOB):
        with pytest.raises(InvalidPowerLevels, match="creator"):
            parse_power_level_content({"users": {listed: 100}}, version("12"), creators)


@pytest.mark.parametrize("rv", versions(1, 11))
def test_creators_may_be_listed_before_v12(rv: str) -> None:
    parse_power_level_content({"users": {ALICE: 100}}, version(rv), {ALICE})
