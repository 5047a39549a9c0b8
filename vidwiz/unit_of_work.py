"""One unit of work: a transaction, and what it changed, dispatched once it has committed.

Handlers and actors open the unit of work; services take its session and its `Effects`,
never commit, and record there what happened (a video's readiness changed, tasks became
claimable, outbox rows wait for the relay). When the block ends without an error the unit of
work commits, then the one `Dispatcher` publishes the committed readiness to the video's
streams, enqueues the actor jobs and wakes the long-polling workers. An error (the commit's
included) rolls back, dispatches nothing, and runs the compensations a service registered
for that case (giving back a quota reservation). A write path therefore has one place where
its side effects start.

Dispatching never raises: Redis down must not fail a write that has committed. Every
effect is re-driven from the database (the truth) by the sweeper or the next snapshot.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from vidwiz.events import RedisKeys, publish
from vidwiz.videos.models import Video
from vidwiz.videos.readiness import readiness_message

log = logging.getLogger(__name__)


class Job(enum.StrEnum):
    """The actors' arq functions (actors/worker.py registers one per name)."""

    VIDEO_CHANGED = "video_changed"  # (video_id): re-publish readiness, start follow-up work
    RELAY_OUTBOX = "relay_outbox"  # (): deliver due AI-note requests
    SUMMARIZE_VIDEO = "summarize_video"  # (video_id): the built-in summary writer
    SWEEP = "sweep"  # cron: stale tasks, due outbox rows
    RECONCILE_QUOTAS = "reconcile_quotas"  # cron: quota counters vs the messages table


@dataclass
class Effects:
    """What a unit of work changed, for after its commit."""

    videos: dict[str, Video] = field(default_factory=dict)
    claimable: Counter[str] = field(default_factory=Counter)
    relay: bool = False
    compensations: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    def video_changed(self, video: Video) -> None:
        """Its readiness may have changed: publish the committed row, then `video_changed`."""
        self.videos[video.video_id] = video

    def tasks_claimable(self, task_types: list[str] | tuple[str, ...], count: int = 1) -> None:
        """Tasks of these types were created or released: wake that many pollers each."""
        for task_type in task_types:
            self.claimable[task_type] += count

    def wake_relay(self) -> None:
        """Outbox rows are waiting (written now, or due): run the relay."""
        self.relay = True

    def on_rollback(self, compensation: Callable[[], Awaitable[Any]]) -> None:
        """Run `compensation` if the unit of work does not commit (what Redis holds is not
        rolled back with the transaction)."""
        self.compensations.append(compensation)


class Dispatcher:
    """Publishes, enqueues and wakes after a commit; every Redis failure is logged, not raised."""

    def __init__(self, redis: ArqRedis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def dispatch(self, effects: Effects) -> None:
        for video in effects.videos.values():
            await self.publish_readiness(video)
        for task_type, count in effects.claimable.items():
            await self.wake_pollers(task_type, count)
        for video_id in effects.videos:
            await self.enqueue(Job.VIDEO_CHANGED, video_id)
        if effects.relay:
            await self.enqueue(Job.RELAY_OUTBOX)

    async def publish_readiness(self, video: Video) -> None:
        """The committed row to the video's SSE streams (they skip a state they already have)."""
        await publish(self.redis, self.keys.video_channel(video.video_id), readiness_message(video))

    async def wake_pollers(self, task_type: str, count: int = 1) -> None:
        """The message is the number of tasks made claimable: that many pollers wake."""
        await publish(self.redis, self.keys.task_wakeup(task_type), str(count))

    async def enqueue(
        self, job: Job, *args: Any, job_id: str | None = None, defer_until: datetime | None = None
    ) -> bool:
        """Enqueue an actor job; False when Redis is unavailable (the sweeper re-drives from the
        database) or a job with this id already exists."""
        try:
            queued = await self.redis.enqueue_job(
                job.value, *args, _job_id=job_id, _queue_name=self.keys.arq_queue, _defer_until=defer_until
            )
        except Exception:
            log.warning("could not enqueue %s%r; the sweeper will re-drive it", job.value, args, exc_info=True)
            return False
        return queued is not None

    def job_id(self, job: Job, key: object) -> str:
        """A job id unique to this deployment's queue (arq's ids are global to the Redis)."""
        return f"{self.keys.arq_queue}:{job.value}:{key}"


class UnitOfWork:
    """`async with UnitOfWork(sessions, dispatcher) as work:` use `work.session` and
    `work.effects`; commit and dispatch happen when the block ends without an error."""

    def __init__(self, writes: async_sessionmaker[AsyncSession], dispatcher: Dispatcher) -> None:
        self._writes = writes
        self.dispatcher = dispatcher
        self.effects = Effects()

    async def __aenter__(self) -> UnitOfWork:
        self.session = self._writes()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        committed = False
        try:
            if exc_type is None:
                await self.session.commit()
                committed = True
        finally:
            await self.session.close()  # rolls back whatever was not committed
            if not committed:
                for compensation in reversed(self.effects.compensations):
                    await compensation()
        if committed:  # an error in the block ends here too (it is re-raised once this returns)
            await self.dispatcher.dispatch(self.effects)


class UnitsOfWork:
    """The factory a process keeps: `async with units() as work: ...`. Units of work write through
    `writes` (vidwiz/db.py `open_write_sessions`; default: `sessions`); `sessions` are for reads."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        dispatcher: Dispatcher,
        writes: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.sessions = sessions
        self.writes = writes or sessions
        self.dispatcher = dispatcher

    def __call__(self) -> UnitOfWork:
        return UnitOfWork(self.writes, self.dispatcher)
