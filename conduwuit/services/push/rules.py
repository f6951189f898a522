"""Users' push rules: the CRUD of ``/pushrules`` and the compiled rules evaluation uses.

A user's rules live in their global account data ``m.push_rules`` as the whole
ruleset (``{"global": {...}}``), so clients see them in ``/sync`` too. What is
stored is only trusted for the user's own rules and for the ``enabled`` and
``actions`` of server-default rules: every read merges it with today's defaults
(``push_rules.effective_ruleset``). A user who never changed a rule has no
``m.push_rules`` at all and is evaluated with the shared default rules.

Compiled rulesets are cached per user (bounded) and dropped whenever the user's
global account data changes.
"""

from __future__ import annotations

from typing import Any

import attrs

from conduwuit.errors import MatrixError
from conduwuit.protocol import push_rules
from conduwuit.protocol.push_rules import CompiledRuleset, RuleError
from conduwuit.services.account_data import AccountData
from conduwuit.services.cache import LruCache

EVENT_TYPE = "m.push_rules"
Ruleset = dict[str, list[dict[str, Any]]]


def matrix_error(error: RuleError) -> MatrixError:
    return MatrixError(404 if error.errcode == "M_NOT_FOUND" else 400, error.errcode, str(error))


@attrs.define
class PushRules:
    account_data: AccountData
    # user_id -> (compiled rules, or None for the server defaults)
    _compiled: LruCache[str, tuple[CompiledRuleset | None]] = attrs.field(
        factory=lambda: LruCache(50_000))

    # --- evaluation ------------------------------------------------------------------

    def custom(self, user_id: str) -> CompiledRuleset | None:
        """The user's compiled rules; ``None`` while they equal the server defaults."""
        cached = self._compiled.get(user_id)
        if cached is not None:
            return cached[0]
        stored = self._stored(user_id)
        compiled = None
        if stored is not None:
            ruleset = push_rules.effective_ruleset(user_id, stored)
            if ruleset != push_rules.default_ruleset(user_id):
                compiled = push_rules.compile_ruleset(ruleset)
        self._compiled.put(user_id, (compiled,))
        return compiled

    def invalidate(self, user_id: str) -> None:
        self._compiled.pop(user_id)

    def on_account_data(self, user_id: str, room_id: str | None, _position: int) -> None:
        """``AccountData.on_change``: a global write may have replaced ``m.push_rules``."""
        if room_id is None:
            self.invalidate(user_id)

    # --- the client API --------------------------------------------------------------

    def ruleset(self, user_id: str) -> Ruleset:
        """The user's whole ``global`` ruleset, as ``GET /pushrules/global/`` shows it."""
        return push_rules.effective_ruleset(user_id, self._stored(user_id))

    def rule(self, user_id: str, kind: str, rule_id: str) -> dict[str, Any]:
        return self._find(self.ruleset(user_id), kind, rule_id)

    def put_rule(self, user_id: str, kind: str, rule_id: str, body: dict[str, Any],
                 before: str | None = None, after: str | None = None) -> None:
        try:
            rule = push_rules.new_rule(kind, rule_id, body)
            ruleset = self.ruleset(user_id)
            existing = push_rules.find_rule(ruleset, kind, rule_id)
            if existing is not None:
                rule["enabled"] = existing.get("enabled", True)  # an update keeps it
            push_rules.place_rule(ruleset, kind, rule, before, after)
        except RuleError as error:
            raise matrix_error(error) from None
        self._save(user_id, ruleset)

    def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        ruleset = self.ruleset(user_id)
        rule = self._find(ruleset, kind, rule_id)
        if rule.get("default"):
            raise MatrixError(400, "M_INVALID_PARAM", "Server-default rules cannot be deleted")
        ruleset[kind].remove(rule)
        self._save(user_id, ruleset)

    def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: Any) -> None:
        if not isinstance(enabled, bool):
            raise MatrixError(400, "M_INVALID_PARAM", "enabled must be true or false")
        ruleset = self.ruleset(user_id)
        self._find(ruleset, kind, rule_id)["enabled"] = enabled
        self._save(user_id, ruleset)

    def set_actions(self, user_id: str, kind: str, rule_id: str, actions: Any) -> None:
        try:
            checked = push_rules.check_actions(actions)
        except RuleError as error:
            raise matrix_error(error) from None
        ruleset = self.ruleset(user_id)
        self._find(ruleset, kind, rule_id)["actions"] = checked
        self._save(user_id, ruleset)

    # --- storage ---------------------------------------------------------------------

    def _stored(self, user_id: str) -> Any:
        content = self.account_data.get(user_id, None, EVENT_TYPE)
        return content.get("global") if isinstance(content, dict) else None

    def _save(self, user_id: str, ruleset: Ruleset) -> None:
        self.account_data.set(user_id, None, EVENT_TYPE, {"global": ruleset})
        self.invalidate(user_id)

    @staticmethod
    def _find(ruleset: Ruleset, kind: str, rule_id: str) -> dict[str, Any]:
        try:
            push_rules.check_kind(kind)
        except RuleError as error:
            raise matrix_error(error) from None
        rule = push_rules.find_rule(ruleset, kind, rule_id)
        if rule is None:
            raise MatrixError(404, "M_NOT_FOUND", "The push rule was not found.")
        return rule
