"""Exact daily Wiz quotas (docs/api.md §4.2 and D10).

Each viewer has one Redis hash per UTC day, `keys.quota(viewer.key, day)`, holding `used`
(admitted user messages) and `touched` (unix time of the last admission); it expires at
the next UTC midnight.

* Admission is one Lua script: seed the counter if missing, refuse at the limit, else
  increment. Concurrent requests therefore never exceed the limit, and a refused request
  leaves the counter untouched.
* A missing counter (new day, Redis restarted or flushed) is seeded from the messages
  table: today's `user` messages in the viewer's conversations, minus failed turns
  (metadata `{"status": "failed"}`). Only admissions still in flight at the moment the
  counter vanished (reserved, message not yet stored) can be missed.
* A reservation that does not end as a stored, counted message is given back: the 202
  "transcript processing" answer, every error before the user message is stored, and a
  turn whose LLM call fails before any content was sent (D10).
* `reconcile` (run by the quota actor) brings counters back to the table: it always raises
  a counter that is below the table, and lowers one only when the viewer has been idle for
  `RECONCILE_IDLE_SECONDS`, so reservations in flight are never wiped out.
* Guests also share a cap per client address (WIZ_GUEST_ADDRESS_DAILY_QUOTA; the address
  resolved as for login throttling, TRUSTED_PROXIES honoured), so a new X-Guest-Session-ID
  per message does not buy a new quota. The same script reserves on both counters (the
  address counter is `keys.quota("address:<address>", day)`), and every release gives both
  back. The address counter is not seeded from the table (messages carry no address): a
  missing one starts at 0, and the reconciler leaves it alone. Users are not affected.
* Redis unreachable: no admission can be exact, so chat answers 503; usage reads (the
  profile) count from the table instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from config import Settings
from vidwiz.auth.identity import Viewer
from vidwiz.conversations.models import Conversation, Message
from vidwiz.db import utcnow
from vidwiz.errors import RateLimited, ServiceUnavailable
from vidwiz.events import RedisKeys
from vidwiz.metrics import QUOTA_REFUSALS

log = logging.getLogger(__name__)

FAILED = "failed"
# Longer than any admission takes to store its message (transcript load included).
RECONCILE_IDLE_SECONDS = 120

# Outcomes of _RESERVE (its first value).
ADMITTED, REFUSED, UNSEEDED, ADDRESS_REFUSED = 1, 0, -1, -2

# KEYS[1]: the viewer's counter; KEYS[2] (guests only): their address's counter.
# ARGV: viewer limit, seed ('' = not counted yet), expire-at, now, address limit.
# Returns {outcome, viewer's used, address's used}.
_RESERVE = """
local used = redis.call('HGET', KEYS[1], 'used')
if not used then
  if ARGV[2] == '' then return {-1, 0, 0} end
  used = ARGV[2]
  redis.call('HSET', KEYS[1], 'used', used)
  redis.call('EXPIREAT', KEYS[1], ARGV[3])
end
used = tonumber(used)
if used >= tonumber(ARGV[1]) then return {0, used, 0} end
local by_address = 0
if KEYS[2] then
  by_address = tonumber(redis.call('HGET', KEYS[2], 'used') or '0')
  if by_address >= tonumber(ARGV[5]) then return {-2, used, by_address} end
  by_address = redis.call('HINCRBY', KEYS[2], 'used', 1)
  if redis.call('TTL', KEYS[2]) == -1 then redis.call('EXPIREAT', KEYS[2], ARGV[3]) end
end
used = redis.call('HINCRBY', KEYS[1], 'used', 1)
redis.call('HSET', KEYS[1], 'touched', ARGV[4])
return {1, used, by_address}
"""

# KEYS: the counters a reservation holds; each loses one (a counter already gone stays gone).
# Returns the first counter's used.
_RELEASE = """
local first
for i, key in ipairs(KEYS) do
  local used = tonumber(redis.call('HGET', key, 'used') or '0')
  if used > 0 then used = redis.call('HINCRBY', key, 'used', -1) end
  if i == 1 then first = used end
end
return first
"""

_RECONCILE = """
local used = redis.call('HGET', KEYS[1], 'used')
if not used then return {-1, -1} end
used = tonumber(used)
local counted = tonumber(ARGV[1])
local touched = tonumber(redis.call('HGET', KEYS[1], 'touched') or '0')
if counted > used or (counted < used and touched < tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'used', counted)
  return {used, counted}
end
return {used, used}
"""


@dataclass(frozen=True)
class QuotaUsage:
    limit: int
    used: int
    reset_in_seconds: int

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)

    def as_dict(self) -> dict[str, int]:
        return {
            "limit": self.limit,
            "used": self.used,
            "remaining": self.remaining,
            "reset_in_seconds": self.reset_in_seconds,
        }

    def headers(self) -> dict[str, str]:
        return {
            "X-Quota-Limit": str(self.limit),
            "X-Quota-Used": str(self.used),
            "X-Quota-Remaining": str(self.remaining),
            "X-Quota-Reset": str(self.reset_in_seconds),
        }


@dataclass(frozen=True)
class Reservation:
    keys: tuple[str, ...]  # the viewer's counter, then (guests) their address's
    usage: QuotaUsage


@dataclass(frozen=True)
class Day:
    """One UTC day: its key label, bounds (naive UTC like the tables) and the time left."""

    label: str  # YYYY-MM-DD
    start: datetime
    end: datetime
    now: datetime

    @classmethod
    def of(cls, now: datetime) -> Day:
        """`now` is naive UTC (vidwiz.db.utcnow)."""
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return cls(start.strftime("%Y-%m-%d"), start, start + timedelta(days=1), now)

    @property
    def reset_in_seconds(self) -> int:
        return int((self.end - self.now).total_seconds())


def limit_for(settings: Settings, viewer: Viewer) -> int:
    return settings.wiz_guest_daily_quota if viewer.is_guest else settings.wiz_user_daily_quota


def limit_message(limit: int, viewer: Viewer) -> str:
    kind = "guest messages" if viewer.is_guest else "messages"
    return f"Daily limit reached ({limit} {kind}/day)"


def address_limit_message(limit: int) -> str:
    return f"Daily limit reached ({limit} guest messages/day from this address)"


async def count_used(session: AsyncSession, viewer: Viewer, day: Day) -> int:
    """Today's counted user messages of this viewer, from the table (the truth)."""
    owner = (
        Conversation.guest_session_id == viewer.guest_session_id
        if viewer.is_guest
        else Conversation.user_id == viewer.user_id
    )
    stmt = (
        select(func.count(Message.id))
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            owner,
            Message.role == "user",
            Message.created_at >= day.start,
            Message.created_at < day.end,
            func.coalesce(Message.metadata_["status"].as_string(), "") != FAILED,
        )
    )
    return int(await session.scalar(stmt) or 0)


def viewer_from_key(viewer_key: str) -> Viewer | None:
    """Inverse of `Viewer.key` (`user:<id>` / `guest:<id>`)."""
    kind, _, ident = viewer_key.partition(":")
    if kind == "user" and ident.isdigit():
        return Viewer(user_id=int(ident))
    if kind == "guest" and ident:
        return Viewer(guest_session_id=ident)
    return None


class DailyQuota:
    def __init__(self, redis: Redis, keys: RedisKeys, settings: Settings):
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self._reserve = redis.register_script(_RESERVE)
        self._release = redis.register_script(_RELEASE)
        self._reconcile = redis.register_script(_RECONCILE)

    async def reserve(self, session: AsyncSession, viewer: Viewer, address: str) -> Reservation:
        """Admit one message or raise 429 RATE_LIMIT_EXCEEDED (exact envelope of docs/api.md §4.2).

        `address` is the client's (vidwiz.auth.throttle.client_address); it caps guests only."""
        day = Day.of(utcnow())
        keys = [self.keys.quota(viewer.key, day.label)]
        if viewer.is_guest:
            keys.append(self.keys.quota(f"address:{address}", day.label))
        limit = limit_for(self.settings, viewer)
        address_limit = self.settings.wiz_guest_address_daily_quota
        args: list[int | str] = [limit, "", _unix(day.end), _unix(day.now), address_limit]
        try:
            outcome, used, by_address = await self._reserve(keys=keys, args=args)
            if outcome == UNSEEDED:  # seed it from the table (the script keeps a concurrent seed)
                args[1] = await count_used(session, viewer, day)
                outcome, used, by_address = await self._reserve(keys=keys, args=args)
        except RedisError:
            # Without the counter no admission can be exact: refuse clearly rather than guess.
            log.warning("quota counter unavailable for %s", viewer.log_label, exc_info=True)
            raise ServiceUnavailable("Wiz chat is temporarily unavailable") from None
        usage = QuotaUsage(limit, int(used), day.reset_in_seconds)
        if outcome == ADMITTED:
            return Reservation(tuple(keys), usage)
        QUOTA_REFUSALS.labels("guest" if viewer.is_guest else "user").inc()
        details = {"reset_in_seconds": day.reset_in_seconds}
        if outcome == ADDRESS_REFUSED:  # the headers describe the limit that refused
            address_usage = QuotaUsage(address_limit, int(by_address), day.reset_in_seconds)
            raise RateLimited(address_limit_message(address_limit), details, headers=address_usage.headers())
        raise RateLimited(limit_message(limit, viewer), details, headers=usage.headers())

    async def release(self, reservation: Reservation) -> QuotaUsage:
        """Give a reservation back (a no-op once its day's counter is gone). A Redis failure is
        logged, not raised: the caller is already answering, and the reconciler repairs it."""
        try:
            used = int(await self._release(keys=list(reservation.keys)))
        except RedisError:
            log.warning("could not give back a quota reservation; the reconciler will repair it", exc_info=True)
            used = reservation.usage.used
        return QuotaUsage(reservation.usage.limit, used, reservation.usage.reset_in_seconds)

    async def usage(self, session: AsyncSession, viewer: Viewer) -> QuotaUsage:
        """The viewer's usage today (read-only; the table answers when the counter is missing)."""
        day = Day.of(utcnow())
        try:
            # redis-py annotates hget for its sync and asyncio clients at once (`Awaitable[str | None] | str | None`).
            raw = await self.redis.hget(self.keys.quota(viewer.key, day.label), "used")  # type: ignore[misc]
        except RedisError:  # a profile page must not fail because Redis does
            log.warning("quota counter unreadable for %s; counting from the table", viewer.log_label, exc_info=True)
            raw = None
        used = int(raw) if raw is not None else await count_used(session, viewer, day)
        return QuotaUsage(limit_for(self.settings, viewer), used, day.reset_in_seconds)

    async def reconcile(self, session: AsyncSession) -> int:
        """Align today's counters with the table; returns how many counters changed."""
        day = Day.of(utcnow())
        prefix = self.keys.quota("", day.label)
        idle_before = _unix(day.now) - RECONCILE_IDLE_SECONDS
        changed = 0
        async for raw_key in self.redis.scan_iter(match=f"{_glob_escape(prefix)}*", count=500):
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            viewer = viewer_from_key(key[len(prefix) :])
            if viewer is None:
                continue
            counted = await count_used(session, viewer, day)
            before, after = await self._reconcile(keys=[key], args=[counted, idle_before])
            changed += int(before) != int(after)
        return changed


def _unix(naive_utc: datetime) -> int:
    return int((naive_utc - datetime(1970, 1, 1)).total_seconds())


def _glob_escape(text: str) -> str:
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in text)
