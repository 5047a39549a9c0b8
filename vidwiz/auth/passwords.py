"""Password hashing: argon2id, run off the event loop; old Werkzeug hashes still verify (docs/api.md D14).

Hashing runs in its own small thread pool whose threads (and the threads argon2 starts for its
lanes, which inherit it) run at a lower CPU priority. A burst of logins then queues here instead
of starving the event loop of CPU, so every other request keeps its latency, and it never
occupies the default executor other code relies on. At most HASH_WORKERS hashes (64 MiB each)
run at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from werkzeug.security import check_password_hash

log = logging.getLogger(__name__)

_hasher = PasswordHasher()  # argon2id with the library's recommended parameters (RFC 9106 low-memory)
HASH_WORKERS = max(1, min(4, (os.cpu_count() or 2) // 2))
HASH_THREAD_NICENESS = 10


@dataclass(frozen=True)
class Verification:
    ok: bool
    new_hash: str | None = None  # set when the stored hash should be upgraded


def _lower_priority() -> None:
    """Executor thread initializer: on Linux, niceness is per thread and inherited by new threads."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)
    except (AttributeError, OSError) as exc:  # not Linux: hashing runs at normal priority
        log.debug("could not lower the priority of the hashing thread: %r", exc)


_executor = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="argon2", initializer=_lower_priority)


def _hash(password: str) -> str:
    return _hasher.hash(password)


def _verify(stored: str | None, password: str) -> Verification:
    if stored is None:
        # No account (or no password): spend the same time, so timing does not reveal accounts.
        _verify(_dummy_hash(), password)
        return Verification(False)
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
    return await asyncio.get_running_loop().run_in_executor(_executor, _hash, password)


async def verify_password(stored: str | None, password: str) -> Verification:
    return await asyncio.get_running_loop().run_in_executor(_executor, _verify, stored, password)


@functools.cache
def _dummy_hash() -> str:
    """A real hash to verify against when there is none; made on first use, not at import."""
    return _hasher.hash("vidwiz-dummy-password")
