"""Local user accounts. This module alone writes the account trees.

An account exists when ``userid_password`` has its id (the value is the
argon2 hash, or empty for accounts without a password). Deactivation keeps
the id, so the name can never be registered again, and marks it deactivated.
"""

from __future__ import annotations

import time

import attrs

from conduwuit.store import Store, u64_be


@attrs.define
class Users:
    store: Store
    server_name: str = ""

    def has_any(self) -> bool:
        """True once at least one local account exists (including deactivated ones)."""
        return not self.store.tree("userid_password").is_empty()

    def count(self) -> int:
        return self.store.tree("userid_password").count()

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(f":{self.server_name}")

    def exists(self, user_id: str) -> bool:
        return user_id.encode() in self.store.tree("userid_password")

    def is_active(self, user_id: str) -> bool:
        return self.exists(user_id) and not self.is_deactivated(user_id)

    def is_deactivated(self, user_id: str) -> bool:
        return user_id.encode() in self.store.tree("userid_deactivated")

    def is_admin(self, user_id: str) -> bool:
        return user_id.encode() in self.store.tree("userid_admin")

    def is_guest(self, user_id: str) -> bool:
        return user_id.encode() in self.store.tree("userid_guest")

    def create(
        self, user_id: str, password_hash: str, *, admin: bool = False, guest: bool = False
    ) -> None:
        """Create the account in one atomic write; the caller checked the name is free."""
        key = user_id.encode()
        with self.store.batch(sync=True) as batch:
            batch.put("userid_password", key, password_hash.encode())
            if admin:
                batch.put("userid_admin", key, b"")
            if guest:
                batch.put("userid_guest", key, b"")

    def password_hash(self, user_id: str) -> str | None:
        value = self.store.tree("userid_password").get(user_id.encode())
        return value.decode() if value is not None else None

    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        self.store.tree("userid_password").put(user_id.encode(), password_hash.encode())

    def set_admin(self, user_id: str, admin: bool) -> None:
        tree = self.store.tree("userid_admin")
        if admin:
            tree.put(user_id.encode(), b"")
        else:
            tree.delete(user_id.encode())

    def deactivate(self, user_id: str) -> None:
        """Mark deactivated and drop the password; devices are the caller's to remove."""
        key = user_id.encode()
        with self.store.batch(sync=True) as batch:
            batch.put("userid_password", key, b"")
            batch.put("userid_deactivated", key, u64_be(int(time.time() * 1000)))
            batch.delete("userid_admin", key)

    def local_user_ids(self) -> list[str]:
        return [key.decode() for key in self.store.tree("userid_password").keys(b"")]
