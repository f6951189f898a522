"""argon2id parameters, rehashing of other parameters, generated passwords."""

from __future__ import annotations

import argon2

from conduwuit.services.passwords import (
    GENERATED_PASSWORD_LENGTH,
    MEMORY_COST_KIB,
    Passwords,
    generate_password,
)


async def test_hash_and_verify() -> None:
    passwords = Passwords()
    digest = await passwords.hash("hunter2")
    assert digest.startswith("$argon2id$") and f"m={MEMORY_COST_KIB}" in digest
    assert await passwords.verify(digest, "hunter2")
    assert not await passwords.verify(digest, "hunter3")
    assert not await passwords.verify("", "anything")
    assert not await passwords.verify("not a hash", "anything")
    assert not passwords.needs_rehash(digest)


async def test_hashes_with_other_parameters_still_verify_and_need_rehash() -> None:
    old = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=2).hash("pw")
    passwords = Passwords()
    assert await passwords.verify(old, "pw")
    assert passwords.needs_rehash(old)


def test_generated_passwords() -> None:
    generated = {generate_password() for _ in range(50)}
    assert len(generated) == 50
    assert all(len(p) == GENERATED_PASSWORD_LENGTH == 25 and p.isalnum() for p in generated)
