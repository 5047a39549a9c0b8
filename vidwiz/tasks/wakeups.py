"""Non-blocking long-poll for task workers (docs/api.md §9.1 fixed).

Each web process holds ONE Redis pub/sub connection (`TaskWakeups`) subscribed to the
wake-up channel of every task type, and hands each wake-up to ONE waiting poller through
an asyncio.Event: a task created or released wakes a single claimer, not a herd. Waiting
pollers hold no database connection; they open a session only for each claim attempt.
The database stays the truth: a lost wake-up only delays a claim until the next periodic
re-check. Each waiting poller is also listed in Redis (`RedisKeys.task_pollers`, until its wait
ends), so the queue dashboard sees the pollers of every web process; that listing is written in
the background and never delays or fails a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from vidwiz.events import RedisKeys
from vidwiz.metrics import POLLERS_WAITING
from vidwiz.tasks.service import TASK_TYPES

log = logging.getLogger(__name__)

T = TypeVar("T")

READY_WAIT_SECONDS = 1.0  # how long a poller waits for the subscription before relying on re-checks
RECONNECT_BACKOFF = (0.1, 5.0)
LISTING_MARGIN_SECONDS = 5.0  # a poller stays listed this long past its wait (a crashed process's expire)


class Waiter:
    """One poller's slot: `woken` is set when a wake-up is handed to it."""

    __slots__ = ("listed", "name", "task_type", "woken")

    def __init__(self, task_type: str):
        self.task_type = task_type
        self.woken = asyncio.Event()
        self.name = uuid.uuid4().hex
        self.listed: asyncio.Task[None] | None = None


class TaskWakeups:
    """The per-process hub: one pub/sub connection, fanned out to waiting pollers."""

    def __init__(self, redis: Redis, keys: RedisKeys, *, recheck_seconds: float):
        # The safety net: a waiting poller claims again this often even without a wake-up.
        self.recheck_seconds = recheck_seconds
        self._redis = redis
        self._keys = keys
        self._process = f"{socket.gethostname()}:{os.getpid()}"
        self._listing: set[asyncio.Task[None]] = set()
        self._channels = {keys.task_wakeup(task_type): task_type for task_type in TASK_TYPES.values()}
        self._waiters: dict[str, dict[Waiter, None]] = {task_type: {} for task_type in TASK_TYPES.values()}
        self._ready = asyncio.Event()  # set while the subscription is confirmed
        self._reader: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None  # the current subscription (kept for tests that cut it)
        self._was_ready = False  # the last connection got as far as a confirmed subscription
        self.stopping = False  # the app is shutting down: waiting pollers answer "no task" now

    def waiting(self, task_type: str) -> int:
        return len(self._waiters[task_type])

    @property
    def subscribed(self) -> bool:
        return self._ready.is_set()

    @contextlib.asynccontextmanager
    async def waiter(self, task_type: str, *, wait_seconds: float = 0.0) -> AsyncIterator[Waiter]:
        """Register a poller. It is registered (and the subscription confirmed, when Redis
        answers) before the caller's first claim attempt, so no wake-up can fall between
        an empty claim and the wait. It is listed in Redis for `wait_seconds` (and a margin)."""
        waiter = Waiter(task_type)
        self._waiters[task_type][waiter] = None
        POLLERS_WAITING.labels(task_type).inc()
        waiter.listed = self._in_background(self._list(waiter, time.time() + wait_seconds + LISTING_MARGIN_SECONDS))
        try:
            if self._reader is None:
                self._reader = asyncio.create_task(self._read_forever(), name="task-wakeups")
            if not self._ready.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), READY_WAIT_SECONDS)
            yield waiter
        finally:
            del self._waiters[task_type][waiter]
            POLLERS_WAITING.labels(task_type).dec()
            self._in_background(self._unlist(waiter))
            if waiter.woken.is_set():
                self._wake(task_type, 1)  # an unused wake-up goes to the next poller

    def _in_background(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._listing.add(task)
        task.add_done_callback(self._listing.discard)
        return task

    async def _list(self, waiter: Waiter, until: float) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.zadd(self._keys.task_pollers(waiter.task_type), {f"{self._process}:{waiter.name}": until})

    async def _unlist(self, waiter: Waiter) -> None:
        if waiter.listed is not None:
            await waiter.listed  # listed before it is taken off the list
        with contextlib.suppress(RedisError, OSError):
            await self._redis.zrem(self._keys.task_pollers(waiter.task_type), f"{self._process}:{waiter.name}")

    def stop_waiting(self) -> None:
        self.stopping = True
        self._wake_all()

    async def close(self) -> None:
        await asyncio.gather(*self._listing, return_exceptions=True)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    def _wake(self, task_type: str, count: int) -> None:
        """Hand `count` wake-ups to the longest-waiting pollers not already woken."""
        for waiter in self._waiters[task_type]:
            if count <= 0:
                return
            if not waiter.woken.is_set():
                waiter.woken.set()
                count -= 1

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.woken.set()

    async def _read_forever(self) -> None:
        delay = RECONNECT_BACKOFF[0]
        while True:
            try:
                await self._read_once()
            except Exception:
                if self._was_ready:  # it had worked: start the backoff over
                    delay = RECONNECT_BACKOFF[0]
                log.warning("task wake-up subscription lost; retrying in %.1fs", delay, exc_info=True)
            self._wake_all()  # pollers re-check the DB now instead of trusting a dead subscription
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_BACKOFF[1])

    async def _read_once(self) -> None:
        self._was_ready = False
        pubsub = self._pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(*self._channels)
            pending = set(self._channels)
            async for message in pubsub.listen():
                channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
                if message["type"] == "subscribe":
                    pending.discard(channel)
                    if not pending:
                        self._ready.set()
                        self._was_ready = True
                elif message["type"] == "message" and channel in self._channels:
                    self._wake(self._channels[channel], _count(message["data"]))
        finally:
            self._ready.clear()
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py 5


def _count(data: bytes | str) -> int:
    try:
        return max(1, int(data))
    except (TypeError, ValueError):
        return 1


async def long_poll(
    wakeups: TaskWakeups,
    task_type: str,
    timeout: float,
    claim: Callable[[], Awaitable[T | None]],
    still_wanted: Callable[[], bool],
) -> T | None:
    """Claim now; else wait for a wake-up (or the periodic re-check) and claim again, until
    `timeout`. Stops early, claiming nothing, once `still_wanted()` is false (client gone)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with wakeups.waiter(task_type, wait_seconds=timeout) as waiter:
        while still_wanted() and not wakeups.stopping:
            waiter.woken.clear()  # a wake-up arriving during the claim keeps it set: claim again
            claimed = await claim()
            if claimed is not None:
                return claimed
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            # Jitter keeps many idle pollers from re-checking in lockstep.
            recheck = wakeups.recheck_seconds * random.uniform(0.8, 1.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.woken.wait(), min(remaining, recheck))
    return None


async def waiting_pollers(redis: Redis, keys: RedisKeys) -> dict[str, int]:
    """Long-pollers waiting now in every web process, per task type (listings past their wait are dropped)."""
    async with redis.pipeline(transaction=False) as pipe:
        for task_type in TASK_TYPES.values():
            pipe.zremrangebyscore(keys.task_pollers(task_type), "-inf", time.time())
            pipe.zcard(keys.task_pollers(task_type))
        replies = await pipe.execute()
    return {task_type: replies[2 * i + 1] for i, task_type in enumerate(TASK_TYPES.values())}
