"""Redis clients from the settings: the one place that reads REDIS_URL and REDIS_SENTINELS.

The web processes' client (readiness and wake-up pub/sub, quotas, throttles, job enqueueing)
and the actors' arq connection both come from here. With sentinels, each new connection asks
them for the current primary, so after a failover the clients reconnect to the promoted one;
a command on a connection to the old primary fails once (the callers already ride out Redis
errors: the database stays the truth).
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast
from urllib.parse import unquote

from arq.connections import ArqRedis, RedisSettings
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from config import Settings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CONNECT_TIMEOUT = 2.0
HEALTH_CHECK_INTERVAL = 30
# At start Redis may still be loading its data: the actors wait up to this many seconds.
ACTOR_CONNECT_RETRIES = 30


def open_redis(settings: Settings) -> ArqRedis:
    """A client of the deployment's Redis (its primary, with sentinels); close it with aclose()."""
    if settings.redis_sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # unannotated in redis-py 5
            list(settings.redis_sentinels), socket_connect_timeout=CONNECT_TIMEOUT
        )
        client = sentinel.master_for(
            settings.redis_sentinel_master,
            redis_class=ArqRedis,
            socket_connect_timeout=CONNECT_TIMEOUT,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            **_credentials(settings),
        )
        return cast(ArqRedis, client)
    url = settings.redis_url or DEFAULT_REDIS_URL
    client = ArqRedis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, health_check_interval=HEALTH_CHECK_INTERVAL)
    return cast(ArqRedis, client)


async def close_redis(client: ArqRedis) -> None:
    """Close a client of open_redis (and its connections to the sentinels)."""
    await client.aclose()
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


def _credentials(settings: Settings) -> dict[str, Any]:
    """With sentinels, REDIS_URL (when set) gives only the primary's username, password and database."""
    if not settings.redis_url:
        return {}
    parsed = parse_url(settings.redis_url)
    return {key: value for key, value in parsed.items() if key in ("username", "password", "db") and value is not None}


class QuietRedisSettings(RedisSettings):
    """arq's RedisSettings, whose repr (in a log line or a traceback) hides the password."""

    def __repr__(self) -> str:
        shown = {**self.__dict__, "password": "***" if self.password else None}
        return "RedisSettings({})".format(", ".join(f"{k}={v!r}" for k, v in shown.items()))


def arq_redis_settings(settings: Settings) -> QuietRedisSettings:
    """arq's connection (redis://, rediss:// for TLS, unix://; a password as redis://:password@host;
    or the sentinels' primary). arq's poll loop stops on a Redis error; actors/lifecycle.py then
    starts a new worker once Redis answers again."""
    parsed = RedisSettings.from_dsn(settings.redis_url or DEFAULT_REDIS_URL)
    values = {field.name: getattr(parsed, field.name) for field in dataclasses.fields(parsed)}
    # arq leaves them percent-encoded (redis-py, in the web processes, decodes them).
    values["username"] = unquote(parsed.username) if parsed.username else None
    values["password"] = unquote(parsed.password) if parsed.password else None
    if settings.redis_sentinels:
        values.update(
            host=list(settings.redis_sentinels), sentinel=True, sentinel_master=settings.redis_sentinel_master
        )
    return QuietRedisSettings(**{**values, "conn_retries": ACTOR_CONNECT_RETRIES, "conn_retry_delay": 1})
