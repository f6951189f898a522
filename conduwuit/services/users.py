"""Local user accounts. This module alone writes the user trees."""

from __future__ import annotations

import attrs

from conduwuit.store import Store


@attrs.define
class Users:
    store: Store

    def has_any(self) -> bool:
        """True once at least one local account exists (including deactivated ones)."""
        return not self.store.tree("userid_password").is_empty()

    def count(self) -> int:
        return self.store.tree("userid_password").count()
