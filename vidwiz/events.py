"""Redis key and channel names, and publishing on a channel.

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

    # The actor queue's dashboard index (vidwiz/job_index.py).
    @property
    def arq_results(self) -> str:
        return f"{self.prefix}arq:results"

    @property
    def arq_running(self) -> str:
        return f"{self.prefix}arq:running"

    def arq_stats(self, minute: int) -> str:
        return f"{self.prefix}arq:stats:{minute}"

    @property
    def arq_last_run(self) -> str:
        return f"{self.prefix}arq:last-run"

    @property
    def arq_cron(self) -> str:
        return f"{self.prefix}arq:cron"

    def task_pollers(self, task_type: str) -> str:
        """Long-pollers waiting now (a sorted set: poller → when its wait ends)."""
        return f"{self.prefix}tasks:pollers:{task_type}"

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


async def publish(redis: Redis, channel: str, message: str) -> None:
    try:
        await redis.publish(channel, message)
    except Exception:
        log.warning("could not publish on %s", channel, exc_info=True)
