"""Login throttling: failed logins per account and per client address are slowed, then
refused with 429 RATE_LIMIT_EXCEEDED; registration and Google sign-in are limited per address.

Counters live in Redis at `keys.throttle(scope, subject)` and expire a fixed window after
they are created. A refused attempt is not counted and never extends the window, so a
locked account opens again at most LOGIN_WINDOW_SECONDS after its first attempt whatever
an attacker keeps sending (they can lock it again afterwards, but never for good).

* Logins reserve before the password is checked. One Lua script admits an attempt only
  when both its account (LOGIN_ACCOUNT_LIMIT) and its address (LOGIN_ADDRESS_LIMIT) have
  room, counting attempts in flight, and then reserves a slot on both: a hash of `failed`
  logins and `pending` ones (admitted, password not yet checked). However many guesses
  arrive at once, at most the limit's worth of passwords is ever checked.
* The outcome settles the reservations: a wrong password (Unauthorized) turns both into
  failures; a success gives the address slot back and deletes the account hash (the user
  is back to a clean slate; the address keeps its failures, or an attacker could reset it
  with an account of their own); any other exception gives both slots back.
* Refused while failures fill the limit: Retry-After is the rest of that window. Refused
  only because attempts in flight fill it (they may all succeed): Retry-After is 1 s.
* Before the password check an attempt waits in proportion to how close the failures are
  to either limit, up to LOGIN_MAX_DELAY_SECONDS, holding no database connection.
* Registration and Google sign-in: every attempt counts per address (SIGNUP_ADDRESS_LIMIT,
  each its own counter).

Redis unavailable: throttling fails open (a warning); the password check still guards.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from config import Settings
from vidwiz.errors import RateLimited, Unauthorized
from vidwiz.events import RedisKeys
from vidwiz.metrics import THROTTLE_REFUSALS

log = logging.getLogger(__name__)

LOGIN_REFUSED = "Too many failed login attempts, try again later"
SIGNUP_REFUSED = "Too many attempts, try again later"

# Whole seconds until a counter's window ends, rounded up (a counter somehow without expiry
# gets its window now).
_RETRY_AFTER = """
local function retry_after(key, window)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('EXPIRE', key, window)
    return tonumber(window)
  end
  return math.max(math.ceil(ttl / 1000), 1)
end
"""

# KEYS[1]: the account's hash, KEYS[2]: the address's hash, each {failed, pending};
# ARGV: window, account limit, address limit. Refused: {0, retry_after}; admitted (a
# pending slot now reserved on both): {1, account failures, address failures}.
_ADMIT_LOGIN = (
    _RETRY_AFTER
    + """
local wait, failures = 0, {}
for i, key in ipairs(KEYS) do
  local failed = tonumber(redis.call('HGET', key, 'failed') or '0')
  local pending = tonumber(redis.call('HGET', key, 'pending') or '0')
  local limit = tonumber(ARGV[i + 1])
  if failed >= limit then
    wait = math.max(wait, retry_after(key, ARGV[1]))
  elseif failed + pending >= limit then
    wait = math.max(wait, 1)  -- the attempts in flight may all succeed
  end
  failures[i] = failed
end
if wait > 0 then return {0, wait} end
for _, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'pending', 1)
  if redis.call('TTL', key) == -1 then redis.call('EXPIRE', key, ARGV[1]) end
end
return {1, failures[1], failures[2]}
"""
)

# KEYS as above; ARGV: outcome (succeeded | failed | abandoned), window. Every outcome
# releases the pending slots; a failure keeps them as failures; a success clears the account.
_SETTLE_LOGIN = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('HGET', key, 'pending') or '0') > 0 then
    redis.call('HINCRBY', key, 'pending', -1)
  end
  if ARGV[1] == 'failed' then
    redis.call('HINCRBY', key, 'failed', 1)
    -- The window may have ended while the password was checked: the failure starts a new one.
    if redis.call('TTL', key) == -1 then redis.call('EXPIRE', key, ARGV[2]) end
  end
end
if ARGV[1] == 'succeeded' then redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1]: an attempts counter; ARGV: window, limit. Refused: {0, retry_after}; else {1}.
_ADMIT_COUNTED = (
    _RETRY_AFTER
    + """
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[2]) then
  return {0, retry_after(KEYS[1], ARGV[1])}
end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {1}
"""
)


def _account_subject(email: str) -> str:
    # Emails are long and personal: the key holds a digest instead.
    return hashlib.sha256(email.encode()).hexdigest()[:32]


class Throttle:
    def __init__(self, redis: Redis, keys: RedisKeys, settings: Settings):
        self.keys = keys
        self.settings = settings
        self._admit_login = redis.register_script(_ADMIT_LOGIN)
        self._settle_login = redis.register_script(_SETTLE_LOGIN)
        self._admit_counted = redis.register_script(_ADMIT_COUNTED)

    @contextlib.asynccontextmanager
    async def login_attempt(self, email: str, address: str) -> AsyncIterator[None]:
        """Wrap one password check: 429 unless both counters have room (a slot is then
        reserved on each), a delay after failures; the outcome (Unauthorized is a failed
        login) settles the reservations."""
        settings = self.settings
        keys = [
            self.keys.throttle("login:account", _account_subject(email)),
            # Not "login:address": that key held a plain counter before reservations.
            self.keys.throttle("login:address-attempts", address),
        ]
        window = settings.login_window_seconds
        counts = await self._admit(
            "login", self._admit_login, keys, [window, settings.login_account_limit, settings.login_address_limit]
        )
        if counts is None:  # Redis unavailable: not throttled
            yield
            return
        failed, by_address = counts
        try:
            # Below 1: an attempt at either limit was refused above.
            progress = max(failed / settings.login_account_limit, by_address / settings.login_address_limit)
            if progress:
                await asyncio.sleep(progress * settings.login_max_delay_seconds)
            yield
        except Unauthorized:
            await self._settle_attempt(keys, "failed")
            raise
        except BaseException:  # an error, or cancelled: the password verdict never came
            await self._settle_attempt(keys, "abandoned")
            raise
        await self._settle_attempt(keys, "succeeded")

    async def signup_attempt(self, scope: str, address: str) -> None:
        """Count a registration or Google sign-in attempt from `address`; 429 past the limit."""
        keys = [self.keys.throttle(f"{scope}:address", address)]
        await self._admit(
            scope, self._admit_counted, keys, [self.settings.signup_window_seconds, self.settings.signup_address_limit]
        )

    async def _admit(self, scope: str, script: AsyncScript, keys: list[str], args: list[int]) -> list[int] | None:
        """The counts an admission script read, None when Redis is unavailable; 429 when refused."""
        try:
            admitted, *answer = await script(keys=keys, args=args)
        except RedisError:
            log.warning("throttle counters unavailable; %s attempt not throttled", scope, exc_info=True)
            return None
        if not admitted:
            retry_after = int(answer[0])
            THROTTLE_REFUSALS.labels(scope).inc()
            message = LOGIN_REFUSED if scope == "login" else SIGNUP_REFUSED
            raise RateLimited(message, {"retry_after_seconds": retry_after}, headers={"Retry-After": str(retry_after)})
        return [int(count) for count in answer]

    async def _settle_attempt(self, keys: list[str], outcome: str) -> None:
        try:
            await self._settle_login(keys=keys, args=[outcome, self.settings.login_window_seconds])
        except RedisError:
            log.warning("could not record a %s login; its counters expire with their window", outcome, exc_info=True)
