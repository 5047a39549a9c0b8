"""Run arq's worker until SIGTERM/SIGINT, through Redis outages.

arq's worker stops when a Redis error escapes its poll loop (it does not reconnect). Then
this closes it, waits for Redis with backoff, and starts a new worker (whose start-up
re-drives the outbox). The process never exits because Redis went away: under the
supervisor that would count against the restart intensity, and a few Redis restarts would
then stop the whole tree.

Jobs stay at-least-once: a job running when Redis went away finishes (or fails) and, if its
result never reached Redis, runs again once its in-progress key expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from typing import Protocol

from arq.connections import RedisSettings, create_pool
from arq.typing import WorkerSettingsBase
from arq.worker import Worker, create_worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("actors")

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
# What may escape arq's poll loop when Redis goes away mid-command: the connection errors, and
# the others redis-py raises from them (a WatchError "A ConnectionError occurred on while
# watching one or more keys" from arq's job pipeline).
WORKER_STOPPED_BY_REDIS = (*REDIS_DOWN, RedisError)
RECONNECT_FIRST_DELAY = 0.1
RECONNECT_MAX_DELAY = 5.0
STABLE_SECONDS = 10.0  # a worker that ran this long before failing restarts without delay


class ActorWorkerSettings(WorkerSettingsBase, Protocol):
    """arq's worker settings class, whose connection this module also reads (actors/worker.py builds it)."""

    redis_settings: RedisSettings


async def run_actors(worker_settings: type[ActorWorkerSettings]) -> None:
    """Return after a stop signal, once the worker has shut down."""
    quick_failures = 0
    while True:
        started = asyncio.get_running_loop().time()
        # arq handles SIGTERM/SIGINT while a worker runs: it stops taking jobs, gives running
        # ones job_completion_wait seconds, cancels the rest and cancels the worker's main task.
        worker = create_worker(worker_settings)
        try:
            await worker.async_run()
            return  # only in burst mode
        except asyncio.CancelledError:
            return  # stopped by a signal
        except WORKER_STOPPED_BY_REDIS as exc:
            log.warning("lost Redis (%s: %s); a new worker starts once it answers", type(exc).__name__, exc)
        finally:
            await close_worker(worker)
        # A worker that failed soon after its start waits longer each time (a Redis that answers
        # pings but fails the worker must not make this a busy loop).
        quick_failures = quick_failures + 1 if asyncio.get_running_loop().time() - started < STABLE_SECONDS else 0
        if not await wait_for_redis(worker_settings.redis_settings, pause=_backoff(quick_failures)):
            return


async def close_worker(worker: Worker) -> None:
    """arq's Worker.close, tolerant of a Redis that is gone."""
    results = await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    cancelled = sum(isinstance(result, asyncio.CancelledError) for result in results)
    if cancelled:
        log.warning("stopped %d unfinished job(s); they will run again", cancelled)
    if worker.pool is None:  # arq annotates `pool` as ArqRedis, but it is None until the worker connected
        return  # type: ignore[unreachable]  # never connected
    try:
        await worker.pool.delete(worker.health_check_key)
    except REDIS_DOWN:
        pass  # it expires
    if worker.on_shutdown:
        await worker.on_shutdown(worker.ctx)
    await worker.pool.close(close_connection_pool=True)


def _backoff(quick_failures: int) -> float:
    return (
        0.0 if quick_failures == 0 else min(RECONNECT_FIRST_DELAY * 2 ** min(quick_failures, 16), RECONNECT_MAX_DELAY)
    )


async def wait_for_redis(redis_settings: RedisSettings, *, pause: float = 0.0) -> bool:
    """True once Redis answers (connects, authenticates, pings), after at least `pause`
    seconds; False on a stop signal first."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # no worker runs now to handle them
        loop.add_signal_handler(sig, stopped.set)
    if pause:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), pause)
    one_try = dataclasses.replace(redis_settings, conn_retries=0)
    delay = RECONNECT_FIRST_DELAY
    while not stopped.is_set():
        try:
            pool = await create_pool(one_try)
        except (*REDIS_DOWN, RedisError) as exc:
            log.debug("Redis not answering yet: %s", exc)
            try:
                await asyncio.wait_for(stopped.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, RECONNECT_MAX_DELAY)
        else:
            await pool.aclose()
            log.info("Redis answers again")
            return True
    return False
