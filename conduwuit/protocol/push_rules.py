"""Push rules: the spec's server-default rules and their evaluation.

A ruleset is the JSON form the spec uses (``m.push_rules`` account data,
``GET /pushrules/``): ``{"override": [...], "content": [...], "room": [...],
"sender": [...], "underride": [...]}``, each rule a dict with ``rule_id``,
``enabled``, ``default``, ``actions`` and, by kind, ``conditions`` (override,
underride) or ``pattern`` (content). :func:`default_ruleset` builds a user's
server-default rules; a user's own rules (a later concern) are merged into the
same shape, so :func:`evaluate` works on either.

``evaluate(ruleset, event, context)`` returns the actions of the first enabled
rule that matches, in the spec's order (``.m.rule.master`` always first), with
the historical ``dont_notify``/``coalesce`` actions stripped. Everything here is
pure: the caller supplies what the rules need to know about the room and the
user in a :class:`PushContext`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

Action = str | dict[str, Any]
Rule = Mapping[str, Any]
Ruleset = Mapping[str, Sequence[Rule]]

KINDS = ("override", "content", "room", "sender", "underride")
MASTER = ".m.rule.master"
# Deprecated since v1.7: only applied to events without an ``m.mentions`` property.
LEGACY_MENTION_RULES = frozenset(
    {".m.rule.contains_display_name", ".m.rule.roomnotif", ".m.rule.contains_user_name"}
)
HISTORICAL_ACTIONS = frozenset({"dont_notify", "coalesce"})
DEFAULT_NOTIFICATION_LEVEL = 50  # power needed for a notification kind absent from the room
MAX_SAFE_INT = 2**53 - 1

_WORD = "A-Za-z0-9_"  # the spec's word characters for content.body matching
_MEMBER_COUNT = re.compile(r"(==|<=|>=|<|>)?([0-9]+)")

# --- the context of one evaluation ----------------------------------------------------


@attrs.frozen
class PushContext:
    """What the conditions need beyond the event, for one user in one room."""

    user_id: str
    display_name: str | None = None  # the user's display name in the room
    member_count: int = 0  # joined members of the room
    sender_power_level: int | float = 0
    # m.room.power_levels content.notifications (kind -> level needed); defaults to 50.
    notification_levels: Mapping[str, int] = attrs.field(factory=dict)


# --- the server-default rules ----------------------------------------------------------


def _rule(rule_id: str, actions: list[Action], conditions: list[dict[str, Any]] | None = None,
          *, enabled: bool = True, pattern: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"rule_id": rule_id, "default": True, "enabled": enabled,
                            "actions": actions}
    if conditions is not None:
        rule["conditions"] = conditions
    if pattern is not None:
        rule["pattern"] = pattern
    return rule


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _is(key: str, value: Any) -> dict[str, Any]:
    return {"kind": "event_property_is", "key": key, "value": value}


def _type(pattern: str) -> dict[str, Any]:
    return _match("type", pattern)


_ONE_TO_ONE = {"kind": "room_member_count", "is": "2"}
_SOUND = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}
_ROOM_PERMISSION = {"kind": "sender_notification_permission", "key": "room"}
# Polls (MSC3381/MSC3930): the stable rule ids and the unstable ones clients still send.
_POLL_PREFIXES = ((".m.rule", "m.poll"),
                  (".org.matrix.msc3930.rule", "org.matrix.msc3381.poll"))


def default_ruleset(user_id: str) -> dict[str, list[dict[str, Any]]]:
    """The spec's server-default push rules for ``user_id`` (a fresh copy each call)."""
    localpart = user_id[1:].split(":", 1)[0]
    override = [
        _rule(MASTER, [], [], enabled=False),
        _rule(".m.rule.suppress_notices", [], [_match("content.msgtype", "m.notice")]),
        _rule(".m.rule.invite_for_me", ["notify", dict(_SOUND)],
              [_type("m.room.member"), _match("content.membership", "invite"),
               _match("state_key", user_id)]),
        _rule(".m.rule.member_event", [], [_type("m.room.member")]),
        _rule(".m.rule.is_user_mention", ["notify", dict(_SOUND), dict(_HIGHLIGHT)],
              [{"kind": "event_property_contains", "key": r"content.m\.mentions.user_ids",
                "value": user_id}]),
        _rule(".m.rule.contains_display_name", ["notify", dict(_SOUND), dict(_HIGHLIGHT)],
              [{"kind": "contains_display_name"}]),
        _rule(".m.rule.is_room_mention", ["notify", dict(_HIGHLIGHT)],
              [_is(r"content.m\.mentions.room", True), dict(_ROOM_PERMISSION)]),
        _rule(".m.rule.roomnotif", ["notify", dict(_HIGHLIGHT)],
              [_match("content.body", "@room"), dict(_ROOM_PERMISSION)]),
        _rule(".m.rule.tombstone", ["notify", dict(_HIGHLIGHT)],
              [_type("m.room.tombstone"), _match("state_key", "")]),
        _rule(".m.rule.reaction", [], [_type("m.reaction")]),
        _rule(".m.rule.room.server_acl", [],
              [_type("m.room.server_acl"), _match("state_key", "")]),
        _rule(".m.rule.suppress_edits", [], [_is(r"content.m\.relates_to.rel_type", "m.replace")]),
    ]
    override += [_rule(f"{rule}.poll_response", [], [_type(f"{kind}.response")])
                 for rule, kind in _POLL_PREFIXES]
    content = [
        _rule(".m.rule.contains_user_name", ["notify", dict(_SOUND), dict(_HIGHLIGHT)],
              pattern=localpart),
    ]
    underride = [
        _rule(".m.rule.call", ["notify", {"set_tweak": "sound", "value": "ring"}],
              [_type("m.call.invite")]),
        _rule(".m.rule.encrypted_room_one_to_one", ["notify", dict(_SOUND)],
              [dict(_ONE_TO_ONE), _type("m.room.encrypted")]),
        _rule(".m.rule.room_one_to_one", ["notify", dict(_SOUND)],
              [dict(_ONE_TO_ONE), _type("m.room.message")]),
        _rule(".m.rule.message", ["notify"], [_type("m.room.message")]),
        _rule(".m.rule.encrypted", ["notify"], [_type("m.room.encrypted")]),
    ]
    for rule, kind in _POLL_PREFIXES:
        for phase in ("start", "end"):
            underride.append(_rule(f"{rule}.poll_{phase}_one_to_one", ["notify", dict(_SOUND)],
                                   [dict(_ONE_TO_ONE), _type(f"{kind}.{phase}")]))
            underride.append(_rule(f"{rule}.poll_{phase}", ["notify"],
                                   [_type(f"{kind}.{phase}")]))
    return {"override": override, "content": content, "room": [], "sender": [],
            "underride": underride}


# --- evaluation -------------------------------------------------------------------------


def evaluate(ruleset: Ruleset, event: Mapping[str, Any], context: PushContext) -> list[Action]:
    """The actions for ``event`` from the first matching rule; ``[]`` when none matches.

    ``event`` is the event's JSON (client or federation form: ``type``, ``sender``,
    ``content``, ``state_key``, ``room_id``). A user is never notified of their own events.
    """
    if event.get("sender") == context.user_id:
        return []
    found = matching_rule(ruleset, event, context)
    if found is None:
        return []
    return clean_actions(found[1].get("actions", []))


def matching_rule(ruleset: Ruleset, event: Mapping[str, Any],
                  context: PushContext) -> tuple[str, Rule] | None:
    """``(kind, rule)`` of the first enabled rule that matches ``event``, in priority order."""
    legacy_off = _has_mentions(event)
    for kind, rule in _ordered(ruleset):
        if not rule.get("enabled", True):
            continue
        if legacy_off and rule.get("rule_id") in LEGACY_MENTION_RULES \
                and rule.get("default", False):
            continue
        if rule_matches(kind, rule, event, context):
            return kind, rule
    return None


def _ordered(ruleset: Ruleset) -> Iterator[tuple[str, Rule]]:
    overrides = list(ruleset.get("override", ()))
    # The master rule outranks every other rule, user-defined overrides included.
    yield from (("override", r) for r in overrides if r.get("rule_id") == MASTER)
    yield from (("override", r) for r in overrides if r.get("rule_id") != MASTER)
    for kind in KINDS[1:]:
        yield from ((kind, r) for r in ruleset.get(kind, ()))


def rule_matches(kind: str, rule: Rule, event: Mapping[str, Any], context: PushContext) -> bool:
    if kind in ("override", "underride"):
        conditions = rule.get("conditions", [])
        if not isinstance(conditions, list):
            return False
        return all(condition_matches(c, event, context) for c in conditions)
    if kind == "content":
        pattern = rule.get("pattern")
        found, body = lookup(event, "content.body")
        return isinstance(pattern, str) and found and isinstance(body, str) \
            and glob_matches(pattern, body, word_boundary=True)
    if kind == "room":
        return rule.get("rule_id") == event.get("room_id")
    if kind == "sender":
        return rule.get("rule_id") == event.get("sender")
    return False


def condition_matches(condition: Any, event: Mapping[str, Any], context: PushContext) -> bool:
    """One condition; unknown kinds and malformed conditions never match."""
    if not isinstance(condition, Mapping):
        return False
    kind = condition.get("kind")
    key = condition.get("key")
    if kind == "event_match":
        pattern = condition.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return False
        found, value = lookup(event, key)
        return found and isinstance(value, str) \
            and glob_matches(pattern, value, word_boundary=key == "content.body")
    if kind in ("event_property_is", "event_property_contains"):
        if not isinstance(key, str) or "value" not in condition:
            return False
        wanted = condition["value"]
        if not _is_scalar(wanted):
            return False
        found, value = lookup(event, key)
        if not found:
            return False
        if kind == "event_property_is":
            return _same(value, wanted)
        return isinstance(value, list) and any(_same(item, wanted) for item in value)
    if kind == "contains_display_name":
        name = context.display_name
        found, body = lookup(event, "content.body")
        return bool(name) and found and isinstance(body, str) \
            and _word_search(re.escape(name or ""), body)
    if kind == "room_member_count":
        return _member_count_matches(condition.get("is"), context.member_count)
    if kind == "sender_notification_permission":
        if not isinstance(key, str):
            return False
        needed = context.notification_levels.get(key, DEFAULT_NOTIFICATION_LEVEL)
        return context.sender_power_level >= needed
    return False


def _has_mentions(event: Mapping[str, Any]) -> bool:
    content = event.get("content")
    return isinstance(content, Mapping) and "m.mentions" in content


def _is_scalar(value: Any) -> bool:
    if value is None or isinstance(value, str | bool):
        return True
    return isinstance(value, int) and -MAX_SAFE_INT <= value <= MAX_SAFE_INT


def _same(value: Any, wanted: Any) -> bool:
    """Exact equality of canonical JSON scalars: no casts (``True`` is not ``1``)."""
    return _is_scalar(value) and type(value) is type(wanted) and value == wanted


def _member_count_matches(spec: Any, count: int) -> bool:
    if not isinstance(spec, str):
        return False
    parsed = _MEMBER_COUNT.fullmatch(spec)
    if parsed is None:
        return False
    op, number = parsed.group(1) or "==", int(parsed.group(2))
    return {"==": count == number, "<": count < number, ">": count > number,
            "<=": count <= number, ">=": count >= number}[op]


# --- dot-separated property paths and globs ---------------------------------------------


def split_path(key: str) -> list[str]:
    """Split a dot-separated property path; ``\\.`` is a literal dot, ``\\\\`` a backslash."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        char = key[i]
        if char == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            current.append(key[i + 1])
            i += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def lookup(event: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """``(found, value)`` of the property at ``key`` in the event."""
    value: Any = event
    for part in split_path(key):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


@functools.lru_cache(maxsize=4096)
def _glob_regex(pattern: str) -> str:
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*?")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _compiled(regex: str, word_boundary: bool) -> re.Pattern[str]:
    if word_boundary:
        regex = f"(?:^|[^{_WORD}])(?:{regex})(?:[^{_WORD}]|$)"
        return re.compile(regex, re.IGNORECASE | re.DOTALL)
    return re.compile(f"(?:{regex})", re.IGNORECASE | re.DOTALL)


def glob_matches(pattern: str, value: str, *, word_boundary: bool = False) -> bool:
    """Case-insensitive glob (``*``, ``?``): the whole value, or a word-bounded substring."""
    regex = _compiled(_glob_regex(pattern), word_boundary)
    if word_boundary:
        return regex.search(value) is not None
    return regex.fullmatch(value) is not None


def _word_search(regex: str, value: str) -> bool:
    return _compiled(regex, True).search(value) is not None


# --- reading actions ---------------------------------------------------------------------


def clean_actions(actions: Any) -> list[Action]:
    """The actions list without the historical ``dont_notify`` and ``coalesce``."""
    if not isinstance(actions, list):
        return []
    return [a for a in actions if (isinstance(a, str) and a not in HISTORICAL_ACTIONS)
            or isinstance(a, dict)]


def notifies(actions: Sequence[Action]) -> bool:
    return "notify" in actions


def tweaks(actions: Sequence[Action]) -> dict[str, Any]:
    """The ``set_tweak`` values; a tweak without ``value`` is ``True`` (highlight's rule)."""
    out: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, dict) and isinstance(action.get("set_tweak"), str):
            out[action["set_tweak"]] = action.get("value", True)
    return out


def highlights(actions: Sequence[Action]) -> bool:
    return tweaks(actions).get("highlight", False) is True
