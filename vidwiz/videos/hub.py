"""ReadinessHub: one Redis pub/sub connection per web process, fanned out to every SSE stream.

The hub pattern-subscribes to every video channel once and hands each message to the
in-memory queues of the streams watching that video, so 1,000 open streams cost one
Redis connection and no database polling. After a Redis outage it reconnects and tells
every stream to re-read its snapshot: messages published while it was away are lost, and
the database (the truth) fills the gap.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Final, TypedDict, TypeGuard

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from vidwiz.events import RedisKeys

log = logging.getLogger(__name__)


class Signal(enum.Enum):
    """What a subscription may get instead of a message."""

    RESYNC = "resync"  # "your view may be stale, read the database"
    CLOSED = "closed"  # the stream must end (client gone, shutdown); nothing is queued after it


RESYNC: Final = Signal.RESYNC
CLOSED: Final = Signal.CLOSED


class ReadinessMessage(TypedDict):
    """A message on a video's channel (vidwiz/videos/readiness.py `readiness_message`)."""

    video: dict[str, Any]  # the rendered `VideoRead`
    state: list[bool]  # (metadata present, transcript available, summary present)


class Subscription:
    """One stream's view of one video channel. Use as a context manager: leaving it unsubscribes."""

    def __init__(self, hub: ReadinessHub, channel: str, maxsize: int):
        self.hub = hub
        self.channel = channel
        self._queue: asyncio.Queue[ReadinessMessage | Signal] = asyncio.Queue(maxsize)
        self._closed = False

    def push(self, item: ReadinessMessage | Signal) -> None:
        if self._closed:
            return
        if item is CLOSED:
            self._closed = True
            self._drain()
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            # A consumer this far behind re-reads the database instead of every message.
            self._drain()
            self._queue.put_nowait(RESYNC)

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def get(self) -> ReadinessMessage | Signal:
        """The next message dict, RESYNC or CLOSED."""
        return await self._queue.get()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.hub._remove(self)


class ReadinessHub:
    """Multiplexes `keys.video_channel_pattern` to per-stream queues.

    `stream_timeout` and `keepalive_interval` are the SSE stream's limits (docs/api.md §4.1, D11);
    they live here so tests can shorten them on a running app.
    """

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        *,
        stream_timeout: float = 60.0,
        keepalive_interval: float = 15.0,
        idle_check_interval: float = 30.0,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 5.0,
        queue_size: int = 16,
    ):
        self.redis = redis
        self.keys = keys
        self.stream_timeout = stream_timeout
        self.keepalive_interval = keepalive_interval
        self.idle_check_interval = idle_check_interval
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.queue_size = queue_size
        self._subscriptions: dict[str, set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0

    # -- lifetime ------------------------------------------------------------------------

    def start(self) -> None:
        """Start listening. Streams may subscribe at once: until the pub/sub connection is up
        they hold their snapshot, and the (re)connect makes them re-read it."""
        self._task = asyncio.create_task(self._run(), name="readiness-hub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.end_streams()
        self._subscriptions.clear()

    def end_streams(self) -> None:
        """Tell every open stream to finish (graceful shutdown: clients reconnect elsewhere)."""
        self._broadcast(CLOSED)

    # -- streams -------------------------------------------------------------------------

    def subscribe(self, video_id: str) -> Subscription:
        subscription = Subscription(self, self.keys.video_channel(video_id), self.queue_size)
        self._subscriptions[subscription.channel].add(subscription)
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        subscriptions = self._subscriptions.get(subscription.channel)
        if subscriptions is None:
            return
        subscriptions.discard(subscription)
        if not subscriptions:
            del self._subscriptions[subscription.channel]

    @property
    def stream_count(self) -> int:
        return sum(len(s) for s in self._subscriptions.values())

    @property
    def channel_count(self) -> int:
        return len(self._subscriptions)

    # -- the one pub/sub connection ------------------------------------------------------

    async def _run(self) -> None:
        delay = self.reconnect_delay
        connects = 0
        warned = False
        while True:
            pubsub = self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self.keys.video_channel_pattern)
                connects += 1
                self.reconnects = connects - 1
                self.connected.set()
                delay, warned = self.reconnect_delay, False
                if self._subscriptions:
                    # Anything published while we were away is lost: re-read the database.
                    log.info("readiness hub: (re)connected to Redis; streams re-read their snapshots")
                    self._broadcast(RESYNC)
                async for message in self._messages(pubsub):
                    self._dispatch(message)
            except (RedisError, OSError) as exc:
                if not warned:  # once per outage
                    log.warning("readiness hub: no Redis (%s); retrying", exc)
                    warned = True
                self.connected.clear()
            finally:
                await _close_quietly(pubsub)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_reconnect_delay)

    async def _messages(self, pubsub: PubSub) -> AsyncIterator[dict[str, Any]]:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.idle_check_interval)
            if message is None:
                # Quiet for a while: prove the connection still works (a dead server raises here).
                await pubsub.ping()
                continue
            yield message

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        subscriptions = self._subscriptions.get(channel) if isinstance(channel, str) else None
        if not subscriptions:
            return
        try:
            payload = json.loads(message["data"])
        except (TypeError, ValueError):
            payload = None
        if not _is_readiness_payload(payload):
            log.warning("readiness hub: ignoring a malformed message on %s", channel)
            return
        for subscription in list(subscriptions):
            subscription.push(payload)

    def _broadcast(self, item: Signal) -> None:
        for subscriptions in list(self._subscriptions.values()):
            for subscription in list(subscriptions):
                subscription.push(item)


def _is_readiness_payload(payload: Any) -> TypeGuard[ReadinessMessage]:
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("video"), dict)
        and isinstance(payload.get("state"), list)
        and len(payload["state"]) == 3
    )


async def _close_quietly(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py 5
    except (RedisError, OSError) as exc:
        log.debug("readiness hub: error closing the old pub/sub connection: %s", exc)
