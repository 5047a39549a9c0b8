"""Redis key and channel names, and the small helpers that publish wake-ups and enqueue actor jobs.

Every key carries the settings' prefix so tests (and co-hosted deployments) never collide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "vidwiz:"

    @property
    def arq_queue(self) -> str:
        return f"{self.prefix}arq:queue"

    def video_channel(self, video_id: str) -> str:
        return f"{self.prefix}video:{video_id}"

    @property
    def video_channel_pattern(self) -> str:
        return f"{self.prefix}video:*"

    def task_wakeup(self, task_type: str) -> str:
        return f"{self.prefix}tasks:wakeup:{task_type}"

    def quota(self, viewer_key: str, day: str) -> str:
        return f"{self.prefix}quota:{day}:{viewer_key}"

    def throttle(self, scope: str, subject: str) -> str:
        return f"{self.prefix}throttle:{scope}:{subject}"


async def enqueue_job(arq_redis, keys: RedisKeys, function: str, *args, job_id: str | None = None) -> None:
    """Enqueue an actor job. A Redis outage is logged, not raised: the sweeper re-drives
    from the database (the truth), so the request that committed must still succeed."""
    try:
        await arq_redis.enqueue_job(function, *args, _job_id=job_id, _queue_name=keys.arq_queue)
    except Exception:
        log.warning("could not enqueue %s%r; the sweeper will re-drive it", function, args, exc_info=True)


async def publish(redis: Redis, channel: str, message: str) -> None:
    try:
        await redis.publish(channel, message)
    except Exception:
        log.warning("could not publish on %s", channel, exc_info=True)
