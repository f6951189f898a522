"""Push rules: the spec's default rules and every condition kind, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from conduwuit.protocol.push_rules import (
    PushContext,
    clean_actions,
    compile_ruleset,
    default_ruleset,
    evaluate,
    glob_matches,
    highlights,
    lookup,
    matching_rule,
    notifies,
    split_path,
    tweaks,
)

ME = "@alice:example.org"
OTHER = "@bob:example.org"
ROOM = "!room:example.org"


def message(body: str = "hello", sender: str = OTHER, **content: Any) -> dict[str, Any]:
    return {"type": "m.room.message", "sender": sender, "room_id": ROOM,
            "content": {"msgtype": "m.text", "body": body, **content}}


def ctx(**overrides: Any) -> PushContext:
    values: dict[str, Any] = {"user_id": ME, "display_name": "Alice Liddell", "member_count": 5,
                              "sender_power_level": 0, "notification_levels": {}}
    values.update(overrides)
    return PushContext(**values)


def rule_id(event: dict[str, Any], context: PushContext | None = None,
            rules: dict[str, Any] | None = None) -> str | None:
    found = matching_rule(rules or default_ruleset(ME), event, context or ctx())
    return None if found is None else str(found[1]["rule_id"])


def test_default_ruleset_has_every_spec_rule_in_order() -> None:
    rules = default_ruleset(ME)
    assert list(rules) == ["override", "content", "room", "sender", "underride"]
    override = [r["rule_id"] for r in rules["override"]]
    assert override[:12] == [
        ".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me",
        ".m.rule.member_event", ".m.rule.is_user_mention", ".m.rule.contains_display_name",
        ".m.rule.is_room_mention", ".m.rule.roomnotif", ".m.rule.tombstone", ".m.rule.reaction",
        ".m.rule.room.server_acl", ".m.rule.suppress_edits"]
    assert [r["rule_id"] for r in rules["content"]] == [".m.rule.contains_user_name"]
    assert rules["content"][0]["pattern"] == "alice"
    underride = [r["rule_id"] for r in rules["underride"]]
    assert underride[:5] == [".m.rule.call", ".m.rule.encrypted_room_one_to_one",
                             ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"]
    assert ".m.rule.poll_start" in underride and ".m.rule.poll_end_one_to_one" in underride
    assert ".org.matrix.msc3930.rule.poll_start" in underride
    every = [r for kind in rules.values() for r in kind]
    assert all(r["default"] is True and r["rule_id"].startswith(".") for r in every)
    assert [r["rule_id"] for r in every if not r["enabled"]] == [".m.rule.master"]
    assert default_ruleset(ME) is not default_ruleset(ME)  # a fresh copy each time


def test_plain_message_notifies_without_highlight() -> None:
    actions = evaluate(default_ruleset(ME), message(), ctx())
    assert actions == ["notify"] and notifies(actions) and not highlights(actions)
    assert rule_id(message()) == ".m.rule.message"


def test_one_to_one_rooms_make_a_sound() -> None:
    actions = evaluate(default_ruleset(ME), message(), ctx(member_count=2))
    assert notifies(actions) and tweaks(actions) == {"sound": "default"}
    encrypted = {"type": "m.room.encrypted", "sender": OTHER, "content": {"ciphertext": "x"}}
    assert rule_id(encrypted, ctx(member_count=2)) == ".m.rule.encrypted_room_one_to_one"
    assert rule_id(encrypted) == ".m.rule.encrypted"


def test_own_events_never_notify() -> None:
    assert evaluate(default_ruleset(ME), message("alice!", sender=ME), ctx()) == []


def test_notices_reactions_acls_and_edits_are_silent() -> None:
    assert evaluate(default_ruleset(ME), message(msgtype="m.notice"), ctx()) == []
    reaction = {"type": "m.reaction", "sender": OTHER, "content": {}}
    acl = {"type": "m.room.server_acl", "sender": OTHER, "state_key": "", "content": {}}
    edit = message("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}})
    for event, rule in ((reaction, ".m.rule.reaction"), (acl, ".m.rule.room.server_acl"),
                        (edit, ".m.rule.suppress_edits")):
        assert rule_id(event) == rule
        assert evaluate(default_ruleset(ME), event, ctx()) == []


def test_user_name_in_body_highlights_at_word_boundaries() -> None:
    for body in ("hey alice", "ALICE: look", "@alice:example.org hi", "(alice)"):
        actions = evaluate(default_ruleset(ME), message(body), ctx(display_name=None))
        assert highlights(actions), body
        assert rule_id(message(body), ctx(display_name=None)) == ".m.rule.contains_user_name"
    for body in ("malice", "alice_x", "alices"):
        assert not highlights(evaluate(default_ruleset(ME), message(body),
                                       ctx(display_name=None))), body


def test_display_name_in_body_highlights() -> None:
    event = message("I saw alice liddell today")
    assert rule_id(event) == ".m.rule.contains_display_name"
    assert highlights(evaluate(default_ruleset(ME), event, ctx()))
    assert rule_id(message("Liddellish"), ctx(display_name="Liddell")) == ".m.rule.message"
    assert rule_id(message("A.L. here"), ctx(display_name="A.L.")) \
        == ".m.rule.contains_display_name"


def test_mentions_property_replaces_the_legacy_rules() -> None:
    mentioned = message("no name here", **{"m.mentions": {"user_ids": [ME]}})
    assert rule_id(mentioned) == ".m.rule.is_user_mention"
    assert highlights(evaluate(default_ruleset(ME), mentioned, ctx()))
    # With m.mentions present, the body's names and @room no longer count.
    legacy = message("alice liddell @room", **{"m.mentions": {}})
    assert rule_id(legacy, ctx(sender_power_level=100)) == ".m.rule.message"
    other = message("hi", **{"m.mentions": {"user_ids": ["@alice:elsewhere.org"]}})
    assert not highlights(evaluate(default_ruleset(ME), other, ctx()))


def test_room_mentions_need_the_sender_power() -> None:
    room_mention = message("everyone", **{"m.mentions": {"room": True}})
    assert rule_id(room_mention, ctx(sender_power_level=50)) == ".m.rule.is_room_mention"
    assert rule_id(room_mention, ctx(sender_power_level=49)) == ".m.rule.message"
    assert rule_id(room_mention, ctx(sender_power_level=10,
                                     notification_levels={"room": 10})) \
        == ".m.rule.is_room_mention"
    legacy = message("@room lunch")
    assert rule_id(legacy, ctx(sender_power_level=100)) == ".m.rule.roomnotif"
    assert highlights(evaluate(default_ruleset(ME), legacy, ctx(sender_power_level=100)))
    assert not highlights(evaluate(default_ruleset(ME), legacy, ctx()))
    not_true = message("x", **{"m.mentions": {"room": "true"}})
    assert rule_id(not_true, ctx(sender_power_level=100)) == ".m.rule.message"


def test_invites_members_tombstones_and_calls() -> None:
    invite = {"type": "m.room.member", "sender": OTHER, "state_key": ME,
              "content": {"membership": "invite"}}
    assert rule_id(invite) == ".m.rule.invite_for_me"
    assert tweaks(evaluate(default_ruleset(ME), invite, ctx())) == {"sound": "default"}
    other_invite = {**invite, "state_key": "@carol:example.org"}
    assert rule_id(other_invite) == ".m.rule.member_event"
    assert evaluate(default_ruleset(ME), other_invite, ctx()) == []
    tombstone = {"type": "m.room.tombstone", "sender": OTHER, "state_key": "",
                 "content": {"body": "moved"}}
    assert highlights(evaluate(default_ruleset(ME), tombstone, ctx()))
    assert rule_id({**tombstone, "state_key": "x"}) is None
    assert rule_id({"type": "m.room.tombstone", "sender": OTHER, "content": {}}) is None
    call = {"type": "m.call.invite", "sender": OTHER, "content": {}}
    assert tweaks(evaluate(default_ruleset(ME), call, ctx())) == {"sound": "ring"}


def test_polls() -> None:
    start = {"type": "org.matrix.msc3381.poll.start", "sender": OTHER, "content": {}}
    assert rule_id(start) == ".org.matrix.msc3930.rule.poll_start"
    assert rule_id({**start, "type": "m.poll.start"}, ctx(member_count=2)) \
        == ".m.rule.poll_start_one_to_one"
    response = {"type": "org.matrix.msc3381.poll.response", "sender": OTHER, "content": {}}
    assert evaluate(default_ruleset(ME), response, ctx()) == []


def test_unmatched_events_have_no_actions() -> None:
    topic = {"type": "m.room.topic", "sender": OTHER, "state_key": "", "content": {"topic": "x"}}
    assert rule_id(topic) is None and evaluate(default_ruleset(ME), topic, ctx()) == []


def test_master_rule_outranks_every_other_rule() -> None:
    rules = default_ruleset(ME)
    rules["override"].append({"rule_id": "mine", "enabled": True, "default": False,
                              "conditions": [], "actions": ["notify"]})
    rules["override"][0]["enabled"] = True
    rules["override"].append(rules["override"].pop(0))  # master last in the list
    assert rule_id(message(), rules=rules) == ".m.rule.master"
    assert evaluate(rules, message(), ctx()) == []


def test_priority_of_kinds_and_user_rules() -> None:
    rules = default_ruleset(ME)
    rules["underride"].insert(0, {"rule_id": "u", "enabled": True, "conditions": [],
                                  "actions": ["notify", {"set_tweak": "sound", "value": "u"}]})
    rules["sender"].append({"rule_id": OTHER, "enabled": True, "actions": []})
    rules["room"].append({"rule_id": ROOM, "enabled": True, "actions": ["notify"]})
    rules["content"].insert(0, {"rule_id": "cake", "enabled": True, "pattern": "cake*lie",
                                "actions": ["notify", {"set_tweak": "sound", "value": "cake"}]})
    assert rule_id(message("the cake is a lie"), rules=rules) == "cake"
    assert rule_id(message("pie"), rules=rules) == ROOM  # room before sender
    rules["room"][0]["enabled"] = False
    assert rule_id(message("pie"), rules=rules) == OTHER
    assert evaluate(rules, message("pie"), ctx()) == []
    rules["sender"].clear()
    assert rule_id(message("pie"), rules=rules) == "u"
    assert rule_id(message("pie", sender="@x:y"), rules=rules) == "u"


def test_unknown_or_malformed_conditions_never_match() -> None:
    for condition in ({"kind": "org.example.unknown"}, {"kind": "event_match", "key": "type"},
                      {"kind": "event_match", "pattern": "*"}, "not a dict",
                      {"kind": "event_property_is", "key": "type"},
                      {"kind": "event_property_is", "key": "type", "value": 1.5},
                      {"kind": "event_property_contains", "key": "x", "value": [1]},
                      {"kind": "room_member_count"}, {"kind": "room_member_count", "is": "~2"},
                      {"kind": "room_member_count", "is": 2},
                      {"kind": "sender_notification_permission"}):
        rules = {"override": [{"rule_id": "r", "enabled": True, "conditions": [condition],
                               "actions": ["notify"]}]}
        assert evaluate(rules, message(), ctx()) == [], condition
    not_a_list = {"override": [{"rule_id": "r", "conditions": "x", "actions": ["notify"]}]}
    assert evaluate(not_a_list, message(), ctx()) == []
    unknown_kind = {"postcontent": [{"rule_id": "r", "actions": ["notify"]}]}
    assert evaluate(unknown_kind, message(), ctx()) == []


def test_event_match_semantics() -> None:
    topic = {"type": "m.room.topic", "content": {"topic": "Lunch plans"}}
    assert glob_matches("lunc?*", "Lunch plans") and glob_matches("LUNC?*", "lunch")
    for value in (" lunch", "lunc"):
        assert not glob_matches("lunc?*", value)
    rules = {"override": [{"rule_id": "r", "enabled": True, "actions": ["notify"],
                           "conditions": [{"kind": "event_match", "key": "content.topic",
                                           "pattern": "*"}]}]}
    assert evaluate(rules, topic, ctx()) == ["notify"]
    assert evaluate(rules, {"type": "x", "content": {"topic": None}}, ctx()) == []
    assert evaluate(rules, {"type": "x", "content": {}}, ctx()) == []
    assert glob_matches("ex*ple", "An example event.", word_boundary=True)
    assert glob_matches("ex*ple", "exple", word_boundary=True)
    assert glob_matches("ex*ple", "An exciting triple-whammy", word_boundary=True)
    assert not glob_matches("ex*ple", "An examples", word_boundary=True)
    assert glob_matches("a.b", "A.B") and not glob_matches("a.b", "axb")  # no regex leaks
    assert glob_matches("x", "a\nx", word_boundary=True)


@pytest.mark.parametrize(("spec", "count", "expected"), [
    ("2", 2, True), ("2", 3, False), ("==2", 2, True), ("<2", 1, True), ("<2", 2, False),
    (">2", 3, True), (">2", 2, False), ("<=2", 2, True), ("<=2", 3, False), (">=2", 2, True),
    (">=2", 1, False), ("", 0, False), ("=2", 2, False),
])
def test_room_member_count(spec: str, count: int, expected: bool) -> None:
    rules = {"override": [{"rule_id": "r", "enabled": True, "actions": ["notify"],
                           "conditions": [{"kind": "room_member_count", "is": spec}]}]}
    assert (evaluate(rules, message(), ctx(member_count=count)) == ["notify"]) is expected


def test_event_property_is_and_contains_are_exact() -> None:
    create = {"type": "m.room.create", "sender": OTHER,
              "content": {"m.federate": True, "n": 1, "z": None, "list": ["a", 1, True, None]}}

    def matches(kind: str, key: str, value: Any) -> bool:
        rules = {"override": [{"rule_id": "r", "enabled": True, "actions": ["notify"],
                               "conditions": [{"kind": kind, "key": key, "value": value}]}]}
        return evaluate(rules, create, ctx()) == ["notify"]

    assert matches("event_property_is", r"content.m\.federate", True)
    assert not matches("event_property_is", r"content.m\.federate", "true")
    assert not matches("event_property_is", r"content.m\.federate", 1)
    assert matches("event_property_is", "content.n", 1)
    assert not matches("event_property_is", "content.n", True)
    assert matches("event_property_is", "content.z", None)
    assert not matches("event_property_is", "content.missing", None)
    assert not matches("event_property_is", "content.list", "a")
    for value in ("a", 1, True, None):
        assert matches("event_property_contains", "content.list", value)
    assert not matches("event_property_contains", "content.list", "b")
    assert not matches("event_property_contains", "content.list", False)
    assert not matches("event_property_contains", "content.n", 1)


def test_dot_separated_paths() -> None:
    assert split_path(r"content.m\.mentions.user_ids") == ("content", "m.mentions", "user_ids")
    assert split_path("content\\\\.x") == ("content\\", "x")
    assert split_path(r"a\b.c") == ("a\\b", "c")
    event = {"content": {"m.relates_to": {"rel_type": "x"}, "a\\": {"b": 1}}}
    assert lookup(event, r"content.m\.relates_to.rel_type") == (True, "x")
    assert lookup(event, "content.a\\\\.b") == (True, 1)
    assert lookup(event, "content.nope") == (False, None)
    assert lookup(event, r"content.m\.relates_to.rel_type.deeper") == (False, None)


def test_actions_helpers() -> None:
    assert clean_actions(["notify", "dont_notify", "coalesce", {"set_tweak": "x"}, 3]) \
        == ["notify", {"set_tweak": "x"}]
    assert clean_actions("notify") == []
    assert tweaks([{"set_tweak": "highlight"}]) == {"highlight": True}
    assert highlights([{"set_tweak": "highlight"}])
    assert not highlights([{"set_tweak": "highlight", "value": False}])
    assert not highlights(["notify"])
    rules = {"override": [{"rule_id": "r", "enabled": True, "conditions": [],
                           "actions": ["dont_notify"]}]}
    assert evaluate(rules, message(), ctx()) == []


def test_compiled_rulesets_agree_with_the_rules() -> None:
    compiled = compile_ruleset(default_ruleset(ME))
    events = [message(), message("alice?"), message(msgtype="m.notice"),
              {"type": "M.ROOM.MESSAGE", "sender": OTHER, "content": {"body": "x"}},
              {"type": "m.room.member", "sender": OTHER, "state_key": ME,
               "content": {"membership": "invite"}},
              {"type": 5, "sender": OTHER, "content": {"body": "alice"}},
              {"sender": OTHER, "content": {}}]
    for event in events:
        for context in (ctx(), ctx(member_count=2)):
            assert compiled.evaluate(event, context) \
                == evaluate(default_ruleset(ME), event, context), event
    # Event types match case-insensitively, through the type index too.
    assert compiled.evaluate(events[3], ctx()) == ["notify"]
    assert compiled.evaluate(events[5], ctx()) == evaluate(default_ruleset(ME), events[5], ctx())
    assert highlights(compiled.evaluate(events[5], ctx()))  # no type, still a content match
    # Disabled rules are left out entirely.
    assert ".m.rule.master" not in [r.rule["rule_id"] for r in compiled.rules]


# --- users' own rules --------------------------------------------------------------------


def test_effective_ruleset_merges_user_rules_and_default_changes() -> None:
    from conduwuit.protocol.push_rules import effective_ruleset

    assert effective_ruleset(ME, None) == default_ruleset(ME)
    stored = {
        "override": [
            {"rule_id": "mine", "default": False, "enabled": True, "actions": [],
             "conditions": []},
            {"rule_id": ".m.rule.master", "default": True, "enabled": True, "actions": []},
            {"rule_id": ".m.rule.gone_from_the_spec", "default": True, "enabled": True,
             "actions": ["notify"]},
        ],
        "underride": [{"rule_id": ".m.rule.message", "default": True, "enabled": False,
                       "actions": ["notify"]}],
        "content": "garbage",
    }
    merged = effective_ruleset(ME, stored)
    override = [r["rule_id"] for r in merged["override"]]
    assert override[:3] == [".m.rule.master", "mine", ".m.rule.suppress_notices"]
    assert ".m.rule.gone_from_the_spec" not in override
    assert merged["override"][0]["enabled"] is True
    message_rule = next(r for r in merged["underride"] if r["rule_id"] == ".m.rule.message")
    assert message_rule["enabled"] is False
    assert merged["content"] == default_ruleset(ME)["content"]
    # The master rule enabled: nothing notifies.
    assert evaluate(merged, message(f"hi {ME}"), ctx()) == []


def test_new_rule_checks_and_placement() -> None:
    from conduwuit.protocol.push_rules import RuleError, new_rule, place_rule

    rule = new_rule("content", "cake", {"pattern": "cake*lie", "actions": ["notify"]})
    assert rule == {"rule_id": "cake", "default": False, "enabled": True,
                    "actions": ["notify"], "pattern": "cake*lie"}
    for kind, rule_id, body, errcode in (
            ("content", ".x", {"actions": []}, "M_INVALID_PARAM"),
            ("content", "a/b", {"actions": []}, "M_INVALID_PARAM"),
            ("nope", "x", {"actions": []}, "M_INVALID_PARAM"),
            ("override", "x", {}, "M_MISSING_PARAM"),
            ("override", "x", {"actions": [3]}, "M_INVALID_PARAM")):
        with pytest.raises(RuleError) as refused:
            new_rule(kind, rule_id, body)
        assert refused.value.errcode == errcode
    ruleset = default_ruleset(ME)
    for name in ("a", "b"):
        place_rule(ruleset, "override", new_rule("override", name, {"actions": []}), None, None)
    place_rule(ruleset, "override", new_rule("override", "c", {"actions": []}), None, "b")
    place_rule(ruleset, "override", new_rule("override", "d", {"actions": []}), "b", None)
    assert [r["rule_id"] for r in ruleset["override"]][:5] == [
        ".m.rule.master", "d", "b", "c", "a"]
    with pytest.raises(RuleError):
        place_rule(ruleset, "override", new_rule("override", "e", {"actions": []}),
                   ".m.rule.reaction", None)
    with pytest.raises(RuleError):
        place_rule(ruleset, "override", new_rule("override", "e", {"actions": []}),
                   None, "missing")
