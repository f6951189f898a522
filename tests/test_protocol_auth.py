"""The authorization rules, each with an allowed and a refused case, per room version.

Rule numbers follow the v12 page (see conduwuit/protocol/auth.py).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from conduwuit.protocol.auth import (
    AuthError,
    auth_types_for_event,
    can_redact,
    check_auth,
    check_auth_events,
    required_signers,
)
from conduwuit.protocol.power_levels import PowerLevels
from tests.support.events import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CAROL,
    EVE,
    Room,
    create_event,
    make_event,
    standard_room,
    version,
    versions,
)

DAVE = "@dave:test"
MEMBER = "m.room.member"
PL = "m.room.power_levels"


def refused(room: Room, event: Any, reason: str | None = None) -> None:
    with pytest.raises(AuthError, match=re.escape(reason) if reason else None):
        room.check(event)


# --- rule 1: m.room.create ------------------------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_create_allowed(rv: str) -> None:
    check_auth(create_event(rv), {})


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_create_with_prev_events_refused(rv: str) -> None:
    create = create_event(rv)
    bad = make_event(rv, "m.room.create", ALICE, create.content, state_key="",
                     room_id=create.room_id, prev_events=["$0:test"])
    with pytest.raises(AuthError, match="prev_events"):
        check_auth(bad, {})


@pytest.mark.parametrize("rv", versions(1, 11))
def test_create_room_id_server_must_be_senders(rv: str) -> None:
    content = create_event(rv).content
    check_auth(make_event(rv, "m.room.create", ALICE, content, state_key="", room_id="!x:test"), {})
    for room_id in ("!x:other.example", None):
        bad = make_event(rv, "m.room.create", ALICE, content, state_key="", room_id=room_id)
        with pytest.raises(AuthError, match="room_id"):
            check_auth(bad, {})


def test_v12_create_must_not_have_a_room_id() -> None:
    content = create_event("12").content
    bad = make_event("12", "m.room.create", ALICE, content, state_key="", room_id="!x:test")
    with pytest.raises(AuthError, match="has a room_id"):
        check_auth(bad, {})


@pytest.mark.parametrize("rv", ALL_VERSIONS)
@pytest.mark.parametrize("room_version", ["99", 1, "v1"])
def test_create_with_unknown_room_version_refused(rv: str, room_version: Any) -> None:
    with pytest.raises(AuthError, match="room_version"):
        check_auth(create_event(rv, room_version=room_version), {})


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_create_without_room_version_allowed(rv: str) -> None:
    create = create_event(rv)
    content = {k: v for k, v in create.content.items() if k != "room_version"}
    check_auth(make_event(rv, "m.room.create", ALICE, content, state_key="",
                          room_id=create.pdu.get("room_id")), {})


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_creator_property_required_until_v10(rv: str) -> None:
    create = create_event(rv)
    content = {k: v for k, v in create.content.items() if k != "creator"}
    bare = make_event(rv, "m.room.create", ALICE, content, state_key="",
                      room_id=create.pdu.get("room_id"))
    if version(rv).creator_is_sender:
        check_auth(bare, {})
    else:
        with pytest.raises(AuthError, match="creator"):
            check_auth(bare, {})


@pytest.mark.parametrize("extra", [["@x:test"], "@x:test", ["not-a-user"], [1], ["@x:test", None]])
@pytest.mark.parametrize("rv", versions(11))
def test_additional_creators_validated_in_v12_only(rv: str, extra: Any) -> None:
    create = create_event(rv, additional_creators=extra)
    if extra == ["@x:test"] or not version(rv).privileged_creators:
        check_auth(create, {})
    else:
        with pytest.raises(AuthError, match="additional_creators"):
            check_auth(create, {})


# --- auth events (rule 3; rule 2 in v1-v11) and selection ---------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_auth_types_for_a_message(rv: str) -> None:
    types = auth_types_for_event("m.room.message", None, BOB, {}, version(rv))
    expected = {(PL, ""), (MEMBER, BOB)}
    if not version(rv).room_id_is_create_hash:
        expected.add(("m.room.create", ""))
    assert types == expected
    assert auth_types_for_event("m.room.create", "", ALICE, {}, version(rv)) == set()


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_auth_types_for_memberships(rv: str) -> None:
    def types(membership: str, sender: str = BOB, **content: Any) -> set[tuple[str, str]]:
        body = {"membership": membership, **content}
        return auth_types_for_event(MEMBER, BOB, sender, body, version(rv))

    join_rules = ("m.room.join_rules", "")
    assert join_rules in types("join")
    assert join_rules in types("invite", ALICE)
    assert join_rules in types("knock")
    assert join_rules not in types("leave")
    assert join_rules not in types("ban", ALICE)
    assert (MEMBER, BOB) in types("ban", ALICE) and (MEMBER, ALICE) in types("ban", ALICE)
    signed = {"signed": {"mxid": BOB, "token": "tok"}}
    assert ("m.room.third_party_invite", "tok") in types("invite", ALICE,
                                                         third_party_invite=signed)
    restricted = types("join", join_authorised_via_users_server=CAROL)
    assert ((MEMBER, CAROL) in restricted) == version(rv).restricted_join_rule


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_auth_events_as_selected_are_accepted(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,))
    event = room.build("m.room.message", BOB, {"body": "hi"})
    auth_events = [ev for ev in room.state.values() if ev.event_id in event.auth_event_ids]
    by_key = check_auth_events(event, auth_events)
    check_auth(event, by_key, create=room.create)
    assert (("m.room.create", "") in by_key) != version(rv).room_id_is_create_hash


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_duplicate_auth_events_refused(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,))
    event = room.build("m.room.message", BOB, {"body": "hi"})
    old_member = room.state[(MEMBER, BOB)]
    new_member = room.set_membership(BOB, "join")
    with pytest.raises(AuthError, match="duplicate"):
        check_auth_events(event, [old_member, new_member, room.state[(PL, "")]])


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_unexpected_auth_events_refused(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,))
    event = room.build("m.room.message", BOB, {"body": "hi"})
    cited = [room.state[(MEMBER, BOB)], room.state[("m.room.join_rules", "")]]
    if not version(rv).room_id_is_create_hash:
        cited.append(room.create)
    with pytest.raises(AuthError, match="may cite"):
        check_auth_events(event, cited)


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_create_among_auth_events_required_until_v12_and_refused_in_v12(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,))
    event = room.build("m.room.message", BOB, {"body": "hi"})
    without = [room.state[(MEMBER, BOB)], room.state[(PL, "")]]
    with_create = [*without, room.create]
    if version(rv).room_id_is_create_hash:
        check_auth_events(event, without)
        with pytest.raises(AuthError, match="may cite"):
            check_auth_events(event, with_create)
    else:
        check_auth_events(event, with_create)
        with pytest.raises(AuthError, match=r"no m\.room\.create"):
            check_auth_events(event, without)


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_auth_events_from_another_room_refused(rv: str) -> None:
    room, other = standard_room(rv, joined=(BOB,)), standard_room(rv, joined=(BOB,))
    event = room.build("m.room.message", BOB, {"body": "hi"})
    cited = [other.state[(MEMBER, BOB)], room.state[(PL, "")]]
    if not version(rv).room_id_is_create_hash:
        cited.append(room.create)
    with pytest.raises(AuthError, match="another room"):
        check_auth_events(event, cited)
    state = {**room.state, (MEMBER, BOB): other.state[(MEMBER, BOB)]}
    with pytest.raises(AuthError, match="another room"):
        check_auth(event, state, create=room.create)


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_no_create_event_refused(rv: str) -> None:
    room = standard_room(rv)
    event = room.build("m.room.message", ALICE, {"body": "hi"})
    state = {key: ev for key, ev in room.state.items() if key[0] != "m.room.create"}
    with pytest.raises(AuthError, match=r"no m\.room\.create"):
        check_auth(event, state)
    check_auth(event, state, create=room.create)  # v12 callers pass it separately


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_create_of_another_room_refused(rv: str) -> None:
    room, other = standard_room(rv), standard_room(rv)
    event = room.build("m.room.message", ALICE, {"body": "hi"})
    with pytest.raises(AuthError, match=r"create"):
        check_auth(event, room.state, create=other.create)


def test_v12_room_id_must_be_the_create_event_id() -> None:
    room = standard_room("12")
    assert room.room_id == "!" + room.create.event_id[1:]
    good = room.build("m.room.message", ALICE, {"body": "hi"})
    room.check(good)
    bad = make_event("12", "m.room.message", ALICE, {"body": "hi"}, room_id="!elsewhere:test")
    refused(room, bad, "room_id is not")


# --- rule 4 (v12; 3 in v1-v11): m.federate --------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_non_federating_room_refuses_other_servers(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,))
    room.create = create_event(rv, **{"m.federate": False})
    room.state[("m.room.create", "")] = room.create
    for key, event in list(room.state.items()):  # re-home the state into the new room id
        if key[0] != "m.room.create":
            room.state[key] = make_event(rv, event.type, event.sender, event.content,
                                         state_key=event.state_key, room_id=room.room_id)
    room.check(room.member(BOB, "join"))
    refused(room, room.member(EVE, "join"), "does not federate")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_federating_room_admits_other_servers(rv: str) -> None:
    room = standard_room(rv)
    room.check(room.member(EVE, "join"))


# --- rule 4 (v1-v5): m.room.aliases -------------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_aliases_special_case_until_v5(rv: str) -> None:
    room = standard_room(rv)
    event = room.build("m.room.aliases", EVE, {"aliases": ["#a:evil.example"]}, "evil.example")
    if version(rv).special_case_aliases:
        room.check(event)  # no membership or power needed
        wrong = room.build("m.room.aliases", EVE, {"aliases": []}, "test")
        refused(room, wrong, "not the sender's server")
        refused(room, room.build("m.room.aliases", EVE, {"aliases": []}), "no state_key")
    else:
        refused(room, event, "not joined")


@pytest.mark.parametrize("rv", versions(6))
def test_aliases_are_ordinary_state_from_v6(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,), users={BOB: 50})
    room.check(room.build("m.room.aliases", BOB, {"aliases": []}, "test"))
    room.check(room.build("m.room.aliases", BOB, {"aliases": []}, "other.example"))
    refused(room, room.build("m.room.aliases", CAROL, {"aliases": []}, "test"), "not joined")


# --- rule 5.1 and 5.8 ------------------------------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_member_event_needs_state_key_and_membership(rv: str) -> None:
    room = standard_room(rv)
    room.check(room.member(BOB, "join"))
    refused(room, room.build(MEMBER, BOB, {"membership": "join"}), "no state_key")
    refused(room, room.build(MEMBER, BOB, {}, BOB), "no membership")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
@pytest.mark.parametrize("membership", ["dance", None, 1])
def test_unknown_membership_refused(rv: str, membership: Any) -> None:
    room = standard_room(rv)
    refused(room, room.build(MEMBER, BOB, {"membership": membership}, BOB), "unknown membership")


# --- rule 5.3: joins --------------------------------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_creator_first_join(rv: str) -> None:
    create = create_event(rv)
    room = Room(version(rv), create)
    room.apply(create)
    join = room.member(ALICE, "join")
    room.check(join)
    refused(room, room.member(BOB, "join"), "join rule")  # no join rules: invite-only
    # Not directly after the create event: the ordinary rules apply.
    room.apply(make_event(rv, "m.room.message", ALICE, {}, room_id=room.room_id))
    refused(room, room.member(ALICE, "join"), "join rule")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_v11_creator_is_the_create_sender_for_the_first_join(rv: str) -> None:
    create = make_event(rv, "m.room.create", ALICE, {"creator": BOB, "room_version": rv},
                        state_key="", room_id=None if rv == "12" else "!r:test")
    room = Room(version(rv), create)
    room.apply(create)
    creator, other = (ALICE, BOB) if version(rv).creator_is_sender else (BOB, ALICE)
    room.check(room.member(creator, "join"))
    refused(room, room.member(other, "join"))


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_join_public(rv: str) -> None:
    room = standard_room(rv, join_rule="public")
    room.check(room.member(BOB, "join"))
    refused(room, room.member(ALICE, "join", BOB), "does not match state_key")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_banned_user_cannot_join(rv: str) -> None:
    room = standard_room(rv)
    room.set_membership(BOB, "ban")
    refused(room, room.member(BOB, "join"), "banned")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_join_invite_only(rv: str) -> None:
    room = standard_room(rv, join_rule="invite")
    refused(room, room.member(BOB, "join"), "join rule")
    room.set_membership(BOB, "invite")
    room.check(room.member(BOB, "join"))
    room.set_membership(BOB, "join")
    room.check(room.member(BOB, "join"))  # a profile change


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_join_knock_rule_needs_an_invite_from_v7(rv: str) -> None:
    room = standard_room(rv, join_rule="knock")
    refused(room, room.member(BOB, "join"), "join rule")
    room.set_membership(BOB, "invite")
    if version(rv).knock_join_rule:
        room.check(room.member(BOB, "join"))
    else:
        refused(room, room.member(BOB, "join"), "join rule")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
@pytest.mark.parametrize("join_rule", ["private", "bogus"])
def test_join_other_rules_refused(rv: str, join_rule: str) -> None:
    room = standard_room(rv, join_rule=join_rule)
    refused(room, room.member(BOB, "join"), "join rule")


def _restricted_room(rv: str, join_rule: str) -> Room:
    return standard_room(rv, join_rule=join_rule, joined=(CAROL, DAVE),
                         power_levels={"invite": 10}, users={CAROL: 10})


@pytest.mark.parametrize("join_rule", ["restricted", "knock_restricted"])
@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_restricted_join_with_an_authorising_user(rv: str, join_rule: str) -> None:
    room = _restricted_room(rv, join_rule)
    join = room.member(BOB, "join", join_authorised_via_users_server=CAROL)
    supported = (version(rv).restricted_join_rule if join_rule == "restricted"
                 else version(rv).knock_restricted_join_rule)
    if supported:
        room.check(join)
        assert "test" in required_signers(join)
    else:
        refused(room, join, "join rule")


@pytest.mark.parametrize("join_rule", ["restricted", "knock_restricted"])
@pytest.mark.parametrize("rv", versions(10))
def test_restricted_join_refusals(rv: str, join_rule: str) -> None:
    room = _restricted_room(rv, join_rule)
    refused(room, room.member(BOB, "join"), "has no join_authorised")
    refused(room, room.member(BOB, "join", join_authorised_via_users_server=DAVE),
            "below the invite level")
    room.set_membership(CAROL, "leave")
    refused(room, room.member(BOB, "join", join_authorised_via_users_server=CAROL),
            "not joined")
    refused(room, room.member(BOB, "join", join_authorised_via_users_server="carol"),
            "not a user id")


@pytest.mark.parametrize("join_rule", ["restricted", "knock_restricted"])
@pytest.mark.parametrize("rv", versions(10))
def test_restricted_join_of_invited_user_needs_no_authoriser(rv: str, join_rule: str) -> None:
    room = _restricted_room(rv, join_rule)
    room.set_membership(BOB, "invite")
    room.check(room.member(BOB, "join"))


def test_v12_creator_can_authorise_restricted_joins() -> None:
    room = standard_room("12", join_rule="restricted", power_levels={"invite": 10**15})
    room.check(room.member(BOB, "join", join_authorised_via_users_server=ALICE))


# --- rule 5.4: invites ----------------------------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_invite_needs_the_invite_level(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,), power_levels={"invite": 50})
    room.check(room.member(ALICE, "invite", CAROL))
    refused(room, room.member(BOB, "invite", CAROL), "below the invite level")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_inviter_must_be_joined(rv: str) -> None:
    room = standard_room(rv)
    refused(room, room.member(BOB, "invite", CAROL), "not joined")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
@pytest.mark.parametrize("membership", ["join", "ban"])
def test_cannot_invite_joined_or_banned(rv: str, membership: str) -> None:
    room = standard_room(rv)
    room.set_membership(CAROL, membership)
    refused(room, room.member(ALICE, "invite", CAROL), "already joined or banned")
    room.set_membership(CAROL, "leave")
    room.check(room.member(ALICE, "invite", CAROL))


class ThirdPartyInvite:
    """An identity server's key, the room's m.room.third_party_invite, the signed blob."""

    def __init__(self, room: Room, *, sender: str = ALICE, listed: bool = False) -> None:
        self.key = generate_signing_key("0")
        public = encode_verify_key_base64(get_verify_key(self.key))
        content: dict[str, Any] = {"display_name": "c...@example.org",
                                   "key_validity_url": "https://id.example/isvalid"}
        if listed:
            content["public_keys"] = [{"public_key": "bm90IGEga2V5"}, {"public_key": public}]
        else:
            content["public_key"] = public
        room.force("m.room.third_party_invite", sender, content, "tok")

    def signed(self, mxid: str = CAROL, token: str = "tok", key: Any = None) -> dict[str, Any]:
        return sign_json({"mxid": mxid, "token": token}, "id.example", key or self.key)


@pytest.mark.parametrize("listed", [False, True])
@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_third_party_invite_with_valid_signature(rv: str, listed: bool) -> None:
    room = standard_room(rv)
    tpi = ThirdPartyInvite(room, listed=listed)
    event = room.member(ALICE, "invite", CAROL, third_party_invite={"signed": tpi.signed()})
    assert ("m.room.third_party_invite", "tok") in {
        (ev.type, ev.state_key) for ev in room.state.values() if ev.event_id in event.auth_event_ids
    }
    room.check(event)


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_third_party_invite_refusals(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,))
    tpi = ThirdPartyInvite(room)

    def invite(sender: str = ALICE, target: str = CAROL, **tpi_content: Any) -> Any:
        return room.member(sender, "invite", target, third_party_invite=tpi_content)

    refused(room, invite(signed=tpi.signed(key=generate_signing_key("0"))), "not signed")
    forged = tpi.signed()
    forged["mxid"] = DAVE
    refused(room, invite(target=DAVE, signed=forged), "not signed")
    refused(room, invite(), "has no signed")
    refused(room, invite(signed={"mxid": CAROL}), "lacks mxid or token")
    refused(room, invite(signed=tpi.signed(mxid=DAVE)), "not the invitee")
    refused(room, invite(signed=tpi.signed(token="other")), "for the token")
    refused(room, invite(BOB, signed=tpi.signed()), "did not send")
    for signatures in ("sig", {"id.example": "sig"}, {"id.example": {"ed25519:0": "!!"}}):
        malformed = {**tpi.signed(), "signatures": signatures}
        refused(room, invite(signed=malformed), "not signed")
    room.set_membership(CAROL, "ban")
    refused(room, invite(signed=tpi.signed()), "banned")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_revoked_third_party_invite_refused(rv: str) -> None:
    room = standard_room(rv)
    tpi = ThirdPartyInvite(room)
    room.force("m.room.third_party_invite", ALICE, {}, "tok")
    refused(room, room.member(ALICE, "invite", CAROL, third_party_invite={"signed": tpi.signed()}),
            "not signed")


# --- rule 5.5: leave, kick, unban ------------------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS)
@pytest.mark.parametrize("membership", ["join", "invite"])
def test_leave_or_reject_invite(rv: str, membership: str) -> None:
    room = standard_room(rv)
    room.set_membership(BOB, membership)
    room.check(room.member(BOB, "leave"))


@pytest.mark.parametrize("rv", ALL_VERSIONS)
@pytest.mark.parametrize("membership", [None, "leave", "ban"])
def test_cannot_leave_when_not_in_the_room(rv: str, membership: str | None) -> None:
    room = standard_room(rv)
    if membership:
        room.set_membership(BOB, membership)
    refused(room, room.member(BOB, "leave"), "cannot leave")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_rescinding_a_knock_from_v7(rv: str) -> None:
    room = standard_room(rv, join_rule="knock")
    room.set_membership(BOB, "knock")
    if version(rv).knock_join_rule:
        room.check(room.member(BOB, "leave"))
    else:
        refused(room, room.member(BOB, "leave"), "cannot leave")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_kick_needs_kick_level_and_a_lower_target(rv: str) -> None:
    room = standard_room(rv, joined=(BOB, CAROL, DAVE), users={BOB: 50, CAROL: 50})
    room.check(room.member(BOB, "leave", DAVE))
    refused(room, room.member(BOB, "leave", CAROL), "not below sender")
    refused(room, room.member(DAVE, "leave", CAROL), "below the kick level")
    room.set_membership(EVE, "leave")
    refused(room, room.member(EVE, "leave", DAVE), "not joined")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_unban_needs_ban_and_kick_levels(rv: str) -> None:
    room = standard_room(rv, joined=(BOB, CAROL), users={BOB: 50, CAROL: 60},
                         power_levels={"kick": 10, "ban": 60})
    room.set_membership(DAVE, "ban")
    refused(room, room.member(BOB, "leave", DAVE), "below the ban level")
    room.check(room.member(CAROL, "leave", DAVE))


@pytest.mark.parametrize("rv", versions(12))
def test_v12_creator_can_kick_anyone(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,), users={BOB: 2**53 - 1},
                         additional_creators=[CAROL])
    room.set_membership(CAROL, "join")
    room.check(room.member(ALICE, "leave", BOB))
    refused(room, room.member(ALICE, "leave", CAROL), "not below sender")  # equals: infinite
    refused(room, room.member(BOB, "leave", ALICE), "not below sender")


@settings(max_examples=60, deadline=None)
@given(sender=st.integers(-5, 105), target=st.integers(-5, 105), kick=st.integers(-5, 105),
       ban=st.integers(-5, 105), rv=st.sampled_from(ALL_VERSIONS))
def test_kick_and_ban_levels_property(sender: int, target: int, kick: int, ban: int,
                                      rv: str) -> None:
    """Rules 5.5.4 and 5.6.2 for any levels: a kick or ban is allowed iff the sender
    reaches the kick or ban level and the target is strictly below the sender."""
    room = standard_room(rv, joined=(BOB, CAROL), users={BOB: sender, CAROL: target},
                         power_levels={"kick": kick, "ban": ban})
    for membership, threshold in (("leave", kick), ("ban", ban)):
        event = room.member(BOB, membership, CAROL)
        if sender >= threshold and target < sender:
            room.check(event)
        else:
            refused(room, event)


# --- rule 5.6: ban -------------------------------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_ban_needs_ban_level_and_a_lower_target(rv: str) -> None:
    room = standard_room(rv, joined=(BOB, CAROL, DAVE), users={BOB: 50, CAROL: 50})
    room.check(room.member(BOB, "ban", DAVE))
    room.check(room.member(BOB, "ban", EVE))  # never in the room
    refused(room, room.member(BOB, "ban", CAROL), "not below sender")
    refused(room, room.member(DAVE, "ban", EVE), "below the ban level")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_ban_sender_must_be_joined(rv: str) -> None:
    room = standard_room(rv, users={BOB: 100})
    refused(room, room.member(BOB, "ban", CAROL), "not joined")


# --- rule 5.7: knock ------------------------------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_knock_only_from_v7(rv: str) -> None:
    room = standard_room(rv, join_rule="knock")
    knock = room.member(BOB, "knock")
    if version(rv).knock_join_rule:
        room.check(knock)
    else:
        refused(room, knock, "unknown membership")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_knock_restricted_only_from_v10(rv: str) -> None:
    room = standard_room(rv, join_rule="knock_restricted")
    knock = room.member(BOB, "knock")
    if version(rv).knock_restricted_join_rule:
        room.check(knock)
    elif version(rv).knock_join_rule:
        refused(room, knock, "does not allow knocking")
    else:
        refused(room, knock, "unknown membership")


@pytest.mark.parametrize("rv", versions(7))
@pytest.mark.parametrize("join_rule", ["public", "invite", "restricted"])
def test_knock_refused_under_other_join_rules(rv: str, join_rule: str) -> None:
    room = standard_room(rv, join_rule=join_rule)
    refused(room, room.member(BOB, "knock"), "does not allow knocking")


@pytest.mark.parametrize("rv", versions(7))
def test_knock_refusals(rv: str) -> None:
    room = standard_room(rv, join_rule="knock")
    refused(room, room.member(ALICE, "knock", BOB), "does not match state_key")
    for membership in ("ban", "invite", "join"):
        room.set_membership(BOB, membership)
        refused(room, room.member(BOB, "knock"), "cannot knock")
    room.set_membership(BOB, "leave")
    room.check(room.member(BOB, "knock"))


# --- rules 6-9 -----------------------------------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_sender_must_be_joined(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,))
    room.check(room.build("m.room.message", BOB, {"body": "hi"}))
    refused(room, room.build("m.room.message", CAROL, {"body": "hi"}), "sender is not joined")
    room.set_membership(CAROL, "invite")
    refused(room, room.build("m.room.message", CAROL, {"body": "hi"}), "sender is not joined")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_third_party_invite_event_needs_invite_level(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,), power_levels={"invite": 50})
    content = {"public_key": "abc", "display_name": "x"}
    room.check(room.build("m.room.third_party_invite", ALICE, content, "tok"))
    refused(room, room.build("m.room.third_party_invite", BOB, content, "tok"),
            "below the invite level")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_state_events_need_the_state_level(rv: str) -> None:
    room = standard_room(rv, joined=(BOB, CAROL), users={CAROL: 50},
                         power_levels={"events": {"m.room.topic": 0, "m.reaction": 20}})
    room.check(room.build("m.room.name", CAROL, {"name": "x"}, ""))
    refused(room, room.build("m.room.name", BOB, {"name": "x"}, ""), "required level 50")
    room.check(room.build("m.room.topic", BOB, {"topic": "x"}, ""))  # events override
    refused(room, room.build("m.reaction", BOB, {}), "required level 20")
    room.check(room.build("m.reaction", CAROL, {}))


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_without_power_levels_state_needs_50(rv: str) -> None:
    room = standard_room(rv, with_power_levels=False, joined=(BOB,))
    room.check(room.build("m.room.name", ALICE, {"name": "x"}, ""))
    room.check(room.build("m.room.message", BOB, {}))
    refused(room, room.build("m.room.name", BOB, {"name": "x"}, ""), "required level 50")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_user_keyed_state_belongs_to_that_user(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,), power_levels={"state_default": 0})
    room.check(room.build("org.example.status", BOB, {}, BOB))
    room.check(room.build("org.example.status", BOB, {}, "plain"))
    refused(room, room.build("org.example.status", BOB, {}, ALICE), "another user's id")


# --- rule 10: m.room.power_levels ---------------------------------------------------


def _levels(room: Room, **changes: Any) -> dict[str, Any]:
    content = dict(room.state[(PL, "")].content)
    content.update(changes)
    return content


def _pl_room(rv: str) -> Room:
    """BOB is a moderator (50) who may send power levels; CAROL 50; DAVE 10."""
    return standard_room(rv, joined=(BOB, CAROL, DAVE), users={BOB: 50, CAROL: 50, DAVE: 10},
                         power_levels={"events": {PL: 50}})


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_first_power_levels_event_allowed(rv: str) -> None:
    room = standard_room(rv, with_power_levels=False)
    room.check(room.build(PL, ALICE, {"users": {BOB: 100}, "ban": 1000}, ""))


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_cannot_raise_anyone_above_own_level(rv: str) -> None:
    room = _pl_room(rv)
    users = dict(room.state[(PL, "")].content["users"])
    room.check(room.build(PL, BOB, _levels(room, users={**users, DAVE: 50}), ""))
    refused(room, room.build(PL, BOB, _levels(room, users={**users, DAVE: 51}), ""),
            "above own")
    refused(room, room.build(PL, BOB, _levels(room, users={**users, BOB: 51}), ""), "above own")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_cannot_change_users_at_or_above_own_level(rv: str) -> None:
    room = _pl_room(rv)
    users = dict(room.state[(PL, "")].content["users"])
    refused(room, room.build(PL, BOB, _levels(room, users={**users, CAROL: 0}), ""),
            "not below the sender")
    removed = {user: level for user, level in users.items() if user != CAROL}
    refused(room, room.build(PL, BOB, _levels(room, users=removed), ""), "not below the sender")
    room.check(room.build(PL, BOB, _levels(room, users={**users, DAVE: 0}), ""))
    room.check(room.build(PL, BOB, _levels(room, users={**users, BOB: 0}), ""))  # self-demotion


@pytest.mark.parametrize("rv", ALL_VERSIONS)
@pytest.mark.parametrize("key", ["users_default", "events_default", "state_default", "ban",
                                 "redact", "kick", "invite"])
def test_named_levels_within_own_level(rv: str, key: str) -> None:
    room = _pl_room(rv)
    room.check(room.build(PL, BOB, _levels(room, **{key: 50}), ""))
    refused(room, room.build(PL, BOB, _levels(room, **{key: 51}), ""), f"set {key} above")
    room.force(PL, ALICE, _levels(room, **{key: 75}), "")
    refused(room, room.build(PL, BOB, _levels(room, **{key: 0}), ""), f"change {key} from above")
    without = {k: v for k, v in _levels(room).items() if k != key}
    refused(room, room.build(PL, BOB, without, ""), f"change {key} from above")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_event_levels_within_own_level(rv: str) -> None:
    room = _pl_room(rv)
    events = dict(room.state[(PL, "")].content["events"])
    room.check(room.build(PL, BOB, _levels(room, events={**events, "m.room.name": 50}), ""))
    refused(room, room.build(PL, BOB, _levels(room, events={**events, "m.room.name": 51}), ""),
            "set events.m.room.name above")
    room.force(PL, ALICE, _levels(room, events={**events, "m.room.name": 100}), "")
    refused(room, room.build(PL, BOB, _levels(room, events=events), ""),
            "change events.m.room.name from above")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_notification_levels_checked_from_v6(rv: str) -> None:
    room = _pl_room(rv)
    raise_ = room.build(PL, BOB, _levels(room, notifications={"room": 100}), "")
    if version(rv).limit_notifications_power_levels:
        refused(room, raise_, "set notifications.room above")
        room.check(room.build(PL, BOB, _levels(room, notifications={"room": 20}), ""))
    else:
        room.check(raise_)


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_string_levels_until_v9(rv: str) -> None:
    room = _pl_room(rv)
    content = _levels(room, users={ALICE: "100", BOB: "50", CAROL: "50", DAVE: " 20 "},
                      ban="40")
    if version(rv).integer_power_levels:
        refused(room, room.build(PL, BOB, content, ""), "not")
    else:
        room.check(room.build(PL, BOB, content, ""))
        # Read leniently, "50" equals 50: BOB does not change CAROL's level.
        room.check(room.build(PL, BOB, _levels(room, users={**content["users"], CAROL: 50}), ""))


@pytest.mark.parametrize("rv", versions(10))
@pytest.mark.parametrize("change", [{"ban": "50"}, {"events": {"m.room.name": "50"}},
                                    {"notifications": {"room": "50"}}, {"kick": 1.5}])
def test_v10_refuses_non_integer_values(rv: str, change: dict[str, Any]) -> None:
    room = _pl_room(rv)
    refused(room, room.build(PL, ALICE, _levels(room, **change), ""), "not an integer")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_power_levels_users_must_be_valid_user_ids(rv: str) -> None:
    room = _pl_room(rv)
    bad = _levels(room, users={**room.state[(PL, "")].content["users"], "bob": 10})
    refused(room, room.build(PL, ALICE, bad, ""), "invalid user id")


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_creators_in_users_refused_in_v12(rv: str) -> None:
    room = standard_room(rv, additional_creators=[BOB], joined=(BOB,))
    for creator in (ALICE, BOB):
        event = room.build(PL, ALICE, _levels(room, users={creator: 100}), "")
        if version(rv).privileged_creators:
            refused(room, event, "lists room creator")
        else:
            room.check(event)


def test_v12_creator_may_set_any_level() -> None:
    top = 2**53 - 1
    room = standard_room("12", joined=(BOB, CAROL), users={CAROL: top})
    room.send(PL, ALICE, _levels(room, users={BOB: top, CAROL: top}, ban=top), "")
    refused(room, room.build(PL, CAROL, _levels(room, users={BOB: 0, CAROL: top}), ""),
            "not below the sender")
    room.check(room.build(PL, ALICE, _levels(room, users={BOB: 0, CAROL: 0}), ""))


# --- rule 11 (v1-v2): redactions ----------------------------------------------------


def _redaction(room: Room, sender: str, target_id: str) -> Any:
    if room.version.redacts_in_content:
        return room.build("m.room.redaction", sender, {"redacts": target_id})
    return room.build("m.room.redaction", sender, {}, redacts=target_id)


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_redaction_domain_rule_in_v1_v2(rv: str) -> None:
    room = standard_room(rv, joined=(BOB, EVE))
    elsewhere = "$1:elsewhere.example"
    room.check(_redaction(room, ALICE, elsewhere))  # redact level
    room.check(_redaction(room, EVE, "$99:test"))  # same domain as the redaction's id
    if version(rv).redaction_in_auth_rules:
        refused(room, _redaction(room, EVE, elsewhere), "redact level")
    else:
        room.check(_redaction(room, EVE, elsewhere))  # decided by can_redact instead


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_redaction_still_needs_its_send_level(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,), power_levels={"events": {"m.room.redaction": 60}})
    refused(room, _redaction(room, BOB, "$1:test"), "required level 60")


@pytest.mark.parametrize("rv", versions(3))
def test_can_redact_v3(rv: str) -> None:
    room = standard_room(rv, joined=(BOB, EVE))
    power = PowerLevels.from_state(room.state[(PL, "")], room.create, version(rv))
    assert can_redact(_redaction(room, ALICE, "$1:x"), power, EVE)
    assert can_redact(_redaction(room, BOB, "$1:x"), power, CAROL)  # same server
    assert not can_redact(_redaction(room, EVE, "$1:x"), power, BOB)
    assert not can_redact(_redaction(room, BOB, "$1:x"), power, None)


@pytest.mark.parametrize("rv", versions(1, 2))
def test_can_redact_v1_v2_follows_the_auth_rule(rv: str) -> None:
    room = standard_room(rv, joined=(BOB,))
    power = PowerLevels.from_state(room.state[(PL, "")], room.create, version(rv))
    assert can_redact(_redaction(room, BOB, "$1:test"), power, None)
    assert not can_redact(_redaction(room, BOB, "$1:elsewhere"), power, BOB)


# --- signatures the rules need ---------------------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS)
def test_required_signers(rv: str) -> None:
    room = standard_room(rv)
    message = make_event(rv, "m.room.message", BOB, {}, room_id=room.room_id,
                         event_id="$1:origin.example")
    expected = {"test", "origin.example"} if rv in ("1", "2") else {"test"}
    assert required_signers(message) == expected
    join = room.member(BOB, "join", join_authorised_via_users_server="@x:other.example")
    with_authoriser = "other.example" in required_signers(join)
    assert with_authoriser == version(rv).restricted_join_rule
