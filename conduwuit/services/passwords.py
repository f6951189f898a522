"""Password hashing with argon2id, off the event loop.

The library's default cost (RFC 9106 "low memory": t=3, 64 MiB, p=4) took
0.6-1.1 s per verify on a small VM, which caps logins at 1-2 per second per
core. We use OWASP's minimum argon2id profile (t=2, 19 MiB, p=1), about
140 ms there. Hashes carry their parameters, so hashes made with other
parameters (older releases, imports from conduwuit) still verify, and are
rehashed at the next successful login.
"""

from __future__ import annotations

import secrets
import string

import argon2
import attrs
import trio
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from conduwuit.errors import MatrixError

TIME_COST = 2
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1

GENERATED_PASSWORD_LENGTH = 25
MAX_PASSWORD_LENGTH = 512
_ALPHABET = string.ascii_letters + string.digits


def generate_password() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


def check_new_password(password: object, field: str) -> str:
    """A password a user wants to set: a non-empty string of sane length."""
    if not isinstance(password, str) or not password:
        raise MatrixError(400, "M_BAD_JSON", f"'{field}' must be a non-empty string")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise MatrixError(400, "M_INVALID_PARAM",
                          f"'{field}' is longer than {MAX_PASSWORD_LENGTH} characters")
    return password


@attrs.define
class Passwords:
    """Hash and verify passwords in worker threads, at most ``limiter`` at a time.

    Each running hash holds its memory cost, so the limiter also bounds memory.
    """

    limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(2))
    hasher: argon2.PasswordHasher = attrs.field(
        factory=lambda: argon2.PasswordHasher(
            time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM
        )
    )

    async def hash(self, password: str) -> str:
        return await trio.to_thread.run_sync(self.hasher.hash, password, limiter=self.limiter)

    async def verify(self, password_hash: str, password: str) -> bool:
        if not password_hash:
            return False
        return await trio.to_thread.run_sync(
            self._verify, password_hash, password, limiter=self.limiter
        )

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return False

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
