"""Password hashing: argon2id, run off the event loop; old Werkzeug hashes still verify (API.md D14)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from werkzeug.security import check_password_hash

_hasher = PasswordHasher()  # argon2id with the library's recommended parameters


@dataclass(frozen=True)
class Verification:
    ok: bool
    new_hash: str | None = None  # set when the stored hash should be upgraded


def _hash(password: str) -> str:
    return _hasher.hash(password)


def _verify(stored: str, password: str) -> Verification:
    if stored.startswith("$argon2"):
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return Verification(False)
        return Verification(True, _hasher.hash(password) if _hasher.check_needs_rehash(stored) else None)
    # Legacy scrypt:/pbkdf2: hashes from the old system: verify, then re-hash to argon2id.
    try:
        ok = check_password_hash(stored, password)
    except (ValueError, TypeError):
        return Verification(False)
    return Verification(True, _hasher.hash(password)) if ok else Verification(False)


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(None, _hash, password)


async def verify_password(stored: str, password: str) -> Verification:
    return await asyncio.get_running_loop().run_in_executor(None, _verify, stored, password)


# A real hash to verify against when the email is unknown, so timing does not reveal accounts.
DUMMY_HASH = _hasher.hash("vidwiz-dummy-password")
