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
the historical ``dont_notify``/``coalesce`` actions stripped. Hot paths (every
member of a room, for every event) compile a ruleset once with
:func:`compile_ruleset` and call its ``evaluate``. Everything here is pure: the
caller supplies what the rules need to know about the room and the user in a
:class:`PushContext`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
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

# (event, context) -> whether a rule or condition matches.
Predicate = Callable[[Mapping[str, Any], PushContext], bool]
_MISSING = object()


@attrs.frozen
class CompiledRule:
    kind: str
    rule: Rule
    actions: tuple[Action, ...]
    matches: Predicate
    legacy: bool  # a deprecated mention rule: skipped for events with ``m.mentions``
    # The one event type the rule can match (from an exact ``type`` condition), if any.
    event_type: str | None = None


@attrs.frozen(eq=False)
class CompiledRuleset:
    """A ruleset prepared for fast evaluation: enabled rules only, in priority order,
    each a predicate with its paths split and its patterns compiled, and indexed by
    the event type a rule requires, so an event is only tried against rules that can
    match its type. Build it once per ruleset (:func:`compile_ruleset`) and evaluate
    it for many events."""

    rules: tuple[CompiledRule, ...]
    _untyped: tuple[CompiledRule, ...] = attrs.field(init=False)
    _by_type: dict[str, tuple[CompiledRule, ...]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        untyped = tuple(r for r in self.rules if r.event_type is None)
        by_type = {t: tuple(r for r in self.rules if r.event_type in (None, t))
                   for t in {r.event_type for r in self.rules if r.event_type is not None}}
        object.__setattr__(self, "_untyped", untyped)
        object.__setattr__(self, "_by_type", by_type)

    def match(self, event: Mapping[str, Any], context: PushContext) -> CompiledRule | None:
        content = event.get("content")
        legacy_off = isinstance(content, Mapping) and "m.mentions" in content
        event_type = event.get("type")
        candidates = self._by_type.get(event_type.lower(), self._untyped) \
            if isinstance(event_type, str) else self._untyped
        for rule in candidates:
            if legacy_off and rule.legacy:
                continue
            if rule.matches(event, context):
                return rule
        return None

    def evaluate(self, event: Mapping[str, Any], context: PushContext) -> list[Action]:
        if event.get("sender") == context.user_id:
            return []
        rule = self.match(event, context)
        return list(rule.actions) if rule is not None else []


def compile_ruleset(ruleset: Ruleset) -> CompiledRuleset:
    compiled = []
    for kind, rule in _ordered(ruleset):
        if not isinstance(rule, Mapping) or not rule.get("enabled", True):
            continue
        rule_id = rule.get("rule_id")
        compiled.append(CompiledRule(
            kind, rule, tuple(clean_actions(rule.get("actions", []))),
            _compile_rule(kind, rule),
            rule_id in LEGACY_MENTION_RULES and bool(rule.get("default", False)),
            _required_type(kind, rule)))
    return CompiledRuleset(tuple(compiled))


def _required_type(kind: str, rule: Rule) -> str | None:
    if kind not in ("override", "underride") or not isinstance(rule.get("conditions"), list):
        return None
    for condition in rule["conditions"]:
        if isinstance(condition, Mapping) and condition.get("kind") == "event_match" \
                and condition.get("key") == "type":
            pattern = condition.get("pattern")
            if isinstance(pattern, str) and "*" not in pattern and "?" not in pattern:
                return pattern.lower()
    return None


def evaluate(ruleset: Ruleset | CompiledRuleset, event: Mapping[str, Any],
             context: PushContext) -> list[Action]:
    """The actions for ``event`` from the first matching rule; ``[]`` when none matches.

    ``event`` is the event's JSON (client or federation form: ``type``, ``sender``,
    ``content``, ``state_key``, ``room_id``). A user is never notified of their own events.
    For many events, compile the ruleset once with :func:`compile_ruleset`.
    """
    if not isinstance(ruleset, CompiledRuleset):
        ruleset = compile_ruleset(ruleset)
    return ruleset.evaluate(event, context)


def matching_rule(ruleset: Ruleset | CompiledRuleset, event: Mapping[str, Any],
                  context: PushContext) -> tuple[str, Rule] | None:
    """``(kind, rule)`` of the first enabled rule that matches ``event``, in priority order."""
    if not isinstance(ruleset, CompiledRuleset):
        ruleset = compile_ruleset(ruleset)
    found = ruleset.match(event, context)
    return (found.kind, found.rule) if found is not None else None


def _ordered(ruleset: Ruleset) -> Iterator[tuple[str, Rule]]:
    overrides = list(ruleset.get("override", ()))
    # The master rule outranks every other rule, user-defined overrides included.
    yield from (("override", r) for r in overrides if r.get("rule_id") == MASTER)
    yield from (("override", r) for r in overrides if r.get("rule_id") != MASTER)
    for kind in KINDS[1:]:
        yield from ((kind, r) for r in ruleset.get(kind, ()))


def _never(event: Mapping[str, Any], context: PushContext) -> bool:
    return False


def _always(event: Mapping[str, Any], context: PushContext) -> bool:
    return True


def _compile_rule(kind: str, rule: Rule) -> Predicate:
    if kind in ("override", "underride"):
        conditions = rule.get("conditions", [])
        if not isinstance(conditions, list):
            return _never
        predicates = tuple(compile_condition(c) for c in conditions)
        if not predicates:
            return _always
        if len(predicates) == 1:
            return predicates[0]

        def all_of(event: Mapping[str, Any], context: PushContext) -> bool:
            return all(predicate(event, context) for predicate in predicates)

        return all_of
    if kind == "content":
        pattern = rule.get("pattern")
        if not isinstance(pattern, str):
            return _never
        return _string_predicate(("content", "body"), _compiled(_glob_regex(pattern), True).search)
    rule_id = rule.get("rule_id")
    if kind in ("room", "sender"):
        field = "room_id" if kind == "room" else "sender"
        return lambda event, context: rule_id == event.get(field)
    return _never


def _string_predicate(path: tuple[str, ...], test: Callable[[str], object]) -> Predicate:
    def matches(event: Mapping[str, Any], context: PushContext) -> bool:
        value = _get(event, path)
        return isinstance(value, str) and bool(test(value))

    return matches


def compile_condition(condition: Any) -> Predicate:
    """A condition as a predicate; unknown kinds and malformed conditions never match."""
    if not isinstance(condition, Mapping):
        return _never
    kind = condition.get("kind")
    key = condition.get("key")
    if kind == "event_match":
        pattern = condition.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return _never
        path = split_path(key)
        if key == "content.body":
            return _string_predicate(path, _compiled(_glob_regex(pattern), True).search)
        if "*" not in pattern and "?" not in pattern:
            literal = pattern.lower()
            return _string_predicate(path, lambda value: value.lower() == literal)
        return _string_predicate(path, _compiled(_glob_regex(pattern), False).fullmatch)
    if kind in ("event_property_is", "event_property_contains"):
        if not isinstance(key, str) or "value" not in condition \
                or not _is_scalar(condition["value"]):
            return _never
        path = split_path(key)
        wanted = condition["value"]
        if kind == "event_property_is":
            return lambda event, context: _same(_get(event, path), wanted)

        def contains(event: Mapping[str, Any], context: PushContext) -> bool:
            value = _get(event, path)
            return isinstance(value, list) and any(_same(item, wanted) for item in value)

        return contains
    if kind == "contains_display_name":
        return _contains_display_name
    if kind == "room_member_count":
        compare = _member_count_test(condition.get("is"))
        if compare is None:
            return _never
        return lambda event, context: compare(context.member_count)
    if kind == "sender_notification_permission":
        if not isinstance(key, str):
            return _never

        def permitted(event: Mapping[str, Any], context: PushContext) -> bool:
            needed = context.notification_levels.get(key, DEFAULT_NOTIFICATION_LEVEL)
            return context.sender_power_level >= needed

        return permitted
    return _never


def condition_matches(condition: Any, event: Mapping[str, Any], context: PushContext) -> bool:
    return compile_condition(condition)(event, context)


def _contains_display_name(event: Mapping[str, Any], context: PushContext) -> bool:
    name = context.display_name
    if not name:
        return False
    body = _get(event, ("content", "body"))
    return isinstance(body, str) and _word_search(re.escape(name), body)


def _get(event: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = event
    for part in path:
        if type(value) is not dict and not isinstance(value, Mapping):
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _is_scalar(value: Any) -> bool:
    if value is None or isinstance(value, str | bool):
        return True
    return isinstance(value, int) and -MAX_SAFE_INT <= value <= MAX_SAFE_INT


def _same(value: Any, wanted: Any) -> bool:
    """Exact equality of canonical JSON scalars: no casts (``True`` is not ``1``)."""
    return _is_scalar(value) and type(value) is type(wanted) and value == wanted


def _member_count_test(spec: Any) -> Callable[[int], bool] | None:
    if not isinstance(spec, str):
        return None
    parsed = _MEMBER_COUNT.fullmatch(spec)
    if parsed is None:
        return None
    number = int(parsed.group(2))
    return {"==": lambda n: n == number, "<": lambda n: n < number,
            ">": lambda n: n > number, "<=": lambda n: n <= number,
            ">=": lambda n: n >= number}[parsed.group(1) or "=="]


# --- dot-separated property paths and globs ---------------------------------------------


@functools.lru_cache(maxsize=4096)
def split_path(key: str) -> tuple[str, ...]:
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
    return tuple(parts)


def lookup(event: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """``(found, value)`` of the property at ``key`` in the event."""
    value: Any = event
    for part in split_path(key):
        if not (type(value) is dict or isinstance(value, Mapping)) or part not in value:
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


# --- users' own rules: validation and merging with the server defaults --------------------

ACTION_STRINGS = frozenset({"notify", *HISTORICAL_ACTIONS})


class RuleError(ValueError):
    """A rule or request the spec refuses; ``errcode`` is the Matrix error code to show."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise RuleError("M_INVALID_PARAM", f"Unknown push rule kind {kind!r}")


def check_actions(actions: Any) -> list[Action]:
    """The actions as given, if each is ``notify``, a historical no-op or a ``set_tweak``."""
    if not isinstance(actions, list):
        raise RuleError("M_INVALID_PARAM", "actions must be a list")
    for action in actions:
        if isinstance(action, str):
            if action not in ACTION_STRINGS:
                raise RuleError("M_INVALID_PARAM", f"Unknown action {action!r}")
        elif isinstance(action, dict):
            if not isinstance(action.get("set_tweak"), str):
                raise RuleError("M_INVALID_PARAM", "An object action needs a set_tweak string")
        else:
            raise RuleError("M_INVALID_PARAM", "Actions are strings or objects")
    return list(actions)


def check_condition(condition: Any) -> dict[str, Any]:
    """A condition whose known kind has the fields it needs (unknown kinds pass: they
    never match, and the spec lets servers add kinds)."""
    if not isinstance(condition, dict) or not isinstance(condition.get("kind"), str):
        raise RuleError("M_INVALID_PARAM", "Each condition is an object with a kind")
    kind = condition["kind"]

    def needs(field: str, test: Callable[[Any], bool], what: str) -> None:
        if field not in condition or not test(condition[field]):
            raise RuleError("M_INVALID_PARAM", f"{kind} conditions need {field} ({what})")

    if kind == "event_match":
        needs("key", lambda v: isinstance(v, str), "a string")
        needs("pattern", lambda v: isinstance(v, str), "a string")
    elif kind in ("event_property_is", "event_property_contains"):
        needs("key", lambda v: isinstance(v, str), "a string")
        needs("value", _is_scalar, "a string, integer, boolean or null")
    elif kind == "room_member_count":
        needs("is", lambda v: isinstance(v, str) and _MEMBER_COUNT.fullmatch(v) is not None,
              "a number with an optional ==, <, >, <= or >= prefix")
    elif kind == "sender_notification_permission":
        needs("key", lambda v: isinstance(v, str), "a string")
    return dict(condition)


def new_rule(kind: str, rule_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """A user rule from a ``PUT /pushrules/global/{kind}/{ruleId}`` body, checked."""
    check_kind(kind)
    if not rule_id or rule_id.startswith(".") or "/" in rule_id or "\\" in rule_id:
        raise RuleError("M_INVALID_PARAM",
                        "Rule ids may not start with '.' (reserved for server-default rules) "
                        "or contain slashes")
    if "actions" not in body:
        raise RuleError("M_MISSING_PARAM", "actions is required")
    rule: dict[str, Any] = {"rule_id": rule_id, "default": False, "enabled": True,
                            "actions": check_actions(body["actions"])}
    if kind in ("override", "underride"):
        conditions = body.get("conditions", [])
        if not isinstance(conditions, list):
            raise RuleError("M_INVALID_PARAM", "conditions must be a list")
        rule["conditions"] = [check_condition(c) for c in conditions]
    elif kind == "content":
        pattern = body.get("pattern")
        if pattern is None:
            raise RuleError("M_MISSING_PARAM", "content rules need a pattern")
        if not isinstance(pattern, str) or not pattern:
            raise RuleError("M_INVALID_PARAM", "pattern must be a non-empty string")
        rule["pattern"] = pattern
    elif kind == "room" and not rule_id.startswith("!"):
        raise RuleError("M_INVALID_PARAM", "room rules are named by a room id")
    elif kind == "sender" and not rule_id.startswith("@"):
        raise RuleError("M_INVALID_PARAM", "sender rules are named by a user id")
    return rule


def effective_ruleset(user_id: str, stored: Any) -> dict[str, list[dict[str, Any]]]:
    """The user's ruleset: today's server defaults with the ``enabled``/``actions`` the
    user set on them, and the user's own rules before the defaults of their kind
    (``.m.rule.master`` stays first). ``stored`` is the ``global`` ruleset kept in
    ``m.push_rules``; anything malformed in it is skipped, and default rules this
    server no longer has are dropped, so a server upgrade brings new defaults in."""
    defaults = default_ruleset(user_id)
    if not isinstance(stored, Mapping):
        return defaults
    merged: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        kept = stored.get(kind)
        rules = [r for r in kept if isinstance(r, Mapping)] if isinstance(kept, list) else []
        by_id = {r.get("rule_id"): r for r in rules if r.get("default") is True
                 or str(r.get("rule_id", "")).startswith(".")}
        own = [dict(r) for r in rules if r.get("rule_id") not in by_id
               and isinstance(r.get("rule_id"), str)]
        for rule in own:
            rule["default"] = False
        server = []
        for rule in defaults[kind]:
            changed = by_id.get(rule["rule_id"])
            if changed is not None:
                if isinstance(changed.get("enabled"), bool):
                    rule["enabled"] = changed["enabled"]
                if isinstance(changed.get("actions"), list):
                    rule["actions"] = list(changed["actions"])
            server.append(rule)
        if kind == "override":
            master = [r for r in server if r["rule_id"] == MASTER]
            merged[kind] = master + own + [r for r in server if r["rule_id"] != MASTER]
        else:
            merged[kind] = own + server
    return merged


def find_rule(ruleset: Mapping[str, list[dict[str, Any]]], kind: str,
              rule_id: str) -> dict[str, Any] | None:
    for rule in ruleset.get(kind, ()):
        if rule.get("rule_id") == rule_id:
            return rule
    return None


def place_rule(ruleset: dict[str, list[dict[str, Any]]], kind: str, rule: dict[str, Any],
               before: str | None, after: str | None) -> None:
    """Insert or update a user rule: next to ``before``/``after`` (user rules only;
    ``before`` wins when both are given), else in its old place, else first."""
    rules = ruleset[kind]
    old = next((i for i, r in enumerate(rules) if r.get("rule_id") == rule["rule_id"]), None)
    anchor_id = before if before is not None else after
    if anchor_id is not None:
        anchor = find_rule(ruleset, kind, anchor_id)
        if anchor is None or anchor.get("default") or anchor_id == rule["rule_id"]:
            # The spec's example answer: 400 M_UNKNOWN "before/after rule not found".
            raise RuleError("M_UNKNOWN" if anchor is None else "M_INVALID_PARAM",
                            f"before/after rule not found: {anchor_id}" if anchor is None
                            else f"cannot place a rule relative to {anchor_id}")
    if old is not None:
        rules.pop(old)
    if anchor_id is not None:
        index = next(i for i, r in enumerate(rules) if r.get("rule_id") == anchor_id)
        rules.insert(index if before is not None else index + 1, rule)
    elif old is not None:
        rules.insert(old, rule)
    else:
        first = 1 if kind == "override" and rules and rules[0].get("rule_id") == MASTER else 0
        rules.insert(first, rule)
