"""A bounded index of the actor queue's jobs, written by the actors as jobs start and end, read by
the queue dashboard (vidwiz/system/queue.py) so that reading never scans arq's result keys.

Per deployment (every key under the prefix, `RedisKeys`):
- `arq:results`: the last RESULTS_KEPT finished runs, newest first (a list of JSON entries);
- `arq:running`: the jobs running now (a hash job id → JSON; a killed worker's entries are dropped
  by the reader once arq's in-progress key is gone);
- `arq:stats:<minute>`: per-minute counters `<function>|<outcome>` and run-time histogram
  buckets `<function>|le<ms>`, kept STATS_TTL seconds (rates and p50/p95 over the last hour);
- `arq:last-run`: each function's last finished run; `arq:cron`: the cron schedule the workers run.

Writing never fails a job: a Redis error is logged and the job goes on.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from redis.exceptions import RedisError

from vidwiz.events import RedisKeys

log = logging.getLogger(__name__)

RESULTS_KEPT = 1000
STATS_MINUTES = 60
STATS_TTL = (STATS_MINUTES + 5) * 60
# Run-time histogram bucket bounds (ms): p50/p95 are reported as a bucket's upper bound.
BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000, 3_600_000)
OUTCOMES = ("success", "failure", "retry", "cancelled")
# An outcome as a finished entry's status (what the dashboard filters on).
STATUS_OF = {"success": "complete", "failure": "failed", "retry": "retry", "cancelled": "cancelled"}
RESULT_TEXT_LIMIT = 2000
REDIS_FAILURES = (RedisError, OSError)


def now_ms() -> int:
    return int(time.time() * 1000)


def jsonable(value: Any, limit: int = RESULT_TEXT_LIMIT) -> Any:
    """The value if it is JSON (and short), else its repr, cut to `limit` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)[:limit]
    return value if len(text) <= limit else text[:limit]


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class JobIndex:
    redis: ArqRedis
    keys: RedisKeys

    async def started(self, job_id: str, function: str, args: Iterable[Any], job_try: int, enqueued_ms: int) -> None:
        entry = {"function": function, "args": jsonable(list(args)), "tries": job_try}
        entry |= {"enqueue_ms": enqueued_ms, "start_ms": now_ms(), "pid": os.getpid()}
        try:
            await self.redis.hset(self.keys.arq_running, job_id, json.dumps(entry))  # type: ignore[misc]  # see below
        except REDIS_FAILURES as exc:
            log.warning("job index: could not record job %s as running: %s", job_id, exc)

    async def finished(
        self,
        job_id: str,
        function: str,
        args: Iterable[Any],
        *,
        job_try: int,
        enqueued_ms: int,
        started_ms: int,
        outcome: str,
        result: Any = None,
        error: str | None = None,
    ) -> None:
        finished = now_ms()
        entry = {
            "job_id": job_id,
            "function": function,
            "args": jsonable(list(args)),
            "status": STATUS_OF[outcome],
            "tries": job_try,
            "enqueue_ms": enqueued_ms,
            "start_ms": started_ms,
            "finish_ms": finished,
            "error": error,
            "result": jsonable(result),
        }
        minute = self.keys.arq_stats(finished // 60_000)
        run_ms = finished - started_ms
        bucket = next((bound for bound in BUCKETS_MS if run_ms <= bound), BUCKETS_MS[-1])
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hdel(self.keys.arq_running, job_id)
                pipe.lpush(self.keys.arq_results, json.dumps(entry))
                pipe.ltrim(self.keys.arq_results, 0, RESULTS_KEPT - 1)
                pipe.hincrby(minute, f"{function}|{outcome}", 1)
                pipe.hincrby(minute, f"{function}|le{bucket}", 1)
                pipe.expire(minute, STATS_TTL)
                last = {"finish_ms": finished, "status": entry["status"]}
                pipe.hset(self.keys.arq_last_run, function, json.dumps(last))
                await pipe.execute()
        except REDIS_FAILURES as exc:
            log.warning("job index: could not record the end of job %s: %s", job_id, exc)

    async def aborted_waiting(
        self, job_id: str, function: str, args: Iterable[Any], *, job_try: int, enqueued_ms: int
    ) -> None:
        """A job taken out of the queue before it started (the dashboard's abort)."""
        aborted = now_ms()
        entry = {"job_id": job_id, "function": function, "args": jsonable(list(args)), "status": "aborted"}
        entry |= {"tries": job_try, "enqueue_ms": enqueued_ms, "start_ms": None, "finish_ms": aborted}
        entry |= {"error": "aborted before it started", "result": None}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self.keys.arq_results, json.dumps(entry))
            pipe.ltrim(self.keys.arq_results, 0, RESULTS_KEPT - 1)
            await pipe.execute()

    async def record_cron(self, schedule: dict[str, dict[str, Any]]) -> None:
        """The cron jobs the workers run: name → {"function", "second", "minute"} (arq's options)."""
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.arq_cron)
                if schedule:
                    mapping = {name: json.dumps(spec) for name, spec in schedule.items()}
                    pipe.hset(self.keys.arq_cron, mapping=mapping)
                await pipe.execute()
        except REDIS_FAILURES as exc:
            log.warning("job index: could not record the cron schedule: %s", exc)

    # -- reading -----------------------------------------------------------------------------------
    # redis-py annotates its commands for the sync and asyncio clients at once (`Awaitable[T] | T`):
    # the awaits below carry `type: ignore[misc]`.

    async def results(self) -> list[dict[str, Any]]:
        """The last RESULTS_KEPT finished runs, newest first."""
        raw_entries = await self.redis.lrange(self.keys.arq_results, 0, -1)  # type: ignore[misc]
        return [json.loads(raw) for raw in raw_entries]

    async def running(self) -> dict[str, dict[str, Any]]:
        """Jobs running now (by job id); entries of a worker that died without ending them are dropped."""
        raw_entries = await self.redis.hgetall(self.keys.arq_running)  # type: ignore[misc]
        found = {key.decode(): json.loads(raw) for key, raw in raw_entries.items()}
        if not found:
            return found
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in found:
                pipe.exists(in_progress_key_prefix + job_id)
            alive = await pipe.execute()
        gone = [job_id for job_id, exists in zip(found, alive) if not exists]
        if gone:
            await self.redis.hdel(self.keys.arq_running, *gone)  # type: ignore[misc]
        return {job_id: entry for job_id, entry in found.items() if job_id not in gone}

    async def minutes(self, count: int = STATS_MINUTES) -> list[tuple[int, dict[str, int]]]:
        """The last `count` minutes' counters, oldest first: (minute since the epoch, {field: n})."""
        current = now_ms() // 60_000
        minutes = list(range(current - count + 1, current + 1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in minutes:
                pipe.hgetall(self.keys.arq_stats(minute))
            rows = await pipe.execute()
        return [(minute, {k.decode(): int(v) for k, v in row.items()}) for minute, row in zip(minutes, rows)]

    async def last_runs(self) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(self.keys.arq_last_run)  # type: ignore[misc]
        return {key.decode(): json.loads(value) for key, value in raw.items()}

    async def cron(self) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(self.keys.arq_cron)  # type: ignore[misc]
        return {key.decode(): json.loads(value) for key, value in raw.items()}


def percentile(histogram: dict[int, int], fraction: float) -> int | None:
    """The upper bound (ms) of the bucket holding the `fraction` quantile; None without runs."""
    total = sum(histogram.values())
    if not total:
        return None
    seen = 0
    for bound in sorted(histogram):
        seen += histogram[bound]
        if seen >= fraction * total:
            return bound
    return max(histogram)
