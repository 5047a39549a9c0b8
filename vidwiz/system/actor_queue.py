"""What the queue dashboard reads and does on the actor (arq) queue: bounded reads only.

Waiting jobs come from the queue's sorted set (the first WAITING_SCAN of them), running and
finished ones from the actors' job index (vidwiz/job_index.py); no read scans `arq:result:*`.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from arq.constants import health_check_key_suffix, in_progress_key_prefix, job_key_prefix
from arq.cron import next_cron
from arq.jobs import DeserializationError, Job, JobStatus, deserialize_job
from redis.exceptions import WatchError

from vidwiz.db import format_datetime
from vidwiz.errors import Conflict, NotFound
from vidwiz.events import RedisKeys
from vidwiz.job_index import BUCKETS_MS, OUTCOMES, JobIndex, jsonable, now_ms, percentile
from vidwiz.unit_of_work import Job as JobName

WAITING_SCAN = 1000  # waiting jobs read per listing (the oldest due first)
ABORT_WAIT = 0.5  # seconds an abort of a running job waits for the worker to confirm it
# What may be enqueued again by hand (the cron jobs run on their schedule).
REENQUEUEABLE = {JobName.VIDEO_CHANGED.value, JobName.RELAY_OUTBOX.value, JobName.SUMMARIZE_VIDEO.value}
REENQUEUEABLE_STATUSES = ("failed", "cancelled", "aborted")
STATES = ("queued", "deferred", "in_progress", "finished")


def _time(ms: int | None) -> str | None:
    return None if ms is None else format_datetime(datetime.fromtimestamp(ms / 1000, UTC))


def render(job_id: str, entry: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    """A job as the API shows it, from an index entry (or a waiting job's definition)."""
    start, finish = entry.get("start_ms"), entry.get("finish_ms")
    ended = finish if finish is not None else (now_ms() if start is not None else None)
    return {
        "job_id": job_id,
        "function": entry["function"],
        "args": entry.get("args", []),
        "status": status or entry["status"],
        "tries": entry.get("tries", 0),
        "enqueue_time": _time(entry.get("enqueue_ms")),
        "scheduled_time": _time(entry.get("score_ms")),
        "start_time": _time(start),
        "finish_time": _time(finish),
        "run_seconds": None if start is None or ended is None else round((ended - start) / 1000, 3),
        "error": entry.get("error"),
        "result": entry.get("result"),
    }


class ActorQueue:
    def __init__(self, redis: ArqRedis, keys: RedisKeys):
        self.redis, self.keys, self.name = redis, keys, keys.arq_queue
        self.index = JobIndex(redis, keys)

    # -- listing -----------------------------------------------------------------------------------

    async def waiting(self) -> list[dict[str, Any]]:
        """The first WAITING_SCAN queued/deferred jobs (not running), rendered, earliest due first."""
        scored = await self.redis.zrange(self.name, 0, WAITING_SCAN - 1, withscores=True)
        if not scored:
            return []
        ids = [raw.decode() for raw, _ in scored]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.mget([job_key_prefix + job_id for job_id in ids])
            for job_id in ids:
                pipe.exists(in_progress_key_prefix + job_id)
            bodies, *running = await pipe.execute()
        now, rows = now_ms(), []
        for job_id, (_, score), body, in_progress in zip(ids, scored, bodies, running):
            if body is None or in_progress:
                continue  # finished or started between the reads; running jobs come from the index
            try:
                job = deserialize_job(body)
            except DeserializationError:
                continue
            entry = {"function": job.function, "args": jsonable(list(job.args)), "tries": job.job_try or 0}
            entry |= {"enqueue_ms": int(job.enqueue_time.timestamp() * 1000), "score_ms": int(score)}
            rows.append(render(job_id, entry, "deferred" if score > now else "queued"))
        return rows

    async def running(self) -> list[dict[str, Any]]:
        running = await self.index.running()
        rows = [render(job_id, entry, "in_progress") for job_id, entry in running.items()]
        return sorted(rows, key=lambda row: row["start_time"] or "")

    async def finished(self) -> list[dict[str, Any]]:
        return [render(entry["job_id"], entry) for entry in await self.index.results()]

    async def jobs(self, state: str) -> list[dict[str, Any]]:
        if state == "in_progress":
            return await self.running()
        if state == "finished":
            return await self.finished()
        return [row for row in await self.waiting() if row["status"] == state]

    # -- one job -----------------------------------------------------------------------------------

    async def detail(self, job_id: str) -> dict[str, Any]:
        """The job now (waiting, running or finished) and its finished runs (newest first)."""
        runs = [render(job_id, entry) for entry in await self.index.results() if entry["job_id"] == job_id]
        running = (await self.index.running()).get(job_id)
        current: dict[str, Any] | None
        if running is not None:
            current = render(job_id, running, "in_progress")
        else:
            current = next((row for row in await self.waiting() if row["job_id"] == job_id), None)
        if current is None and runs:
            current = runs[0]
        if current is None:
            raise NotFound("Job not found")
        return {**current, "runs": runs}

    async def abort(self, job_id: str) -> dict[str, Any]:
        """A waiting job leaves the queue at once; a running one is cancelled through arq's abort."""
        job = Job(job_id, self.redis, _queue_name=self.name)
        status = await job.status()
        if status in (JobStatus.complete, JobStatus.not_found):
            return self._not_abortable(job_id, await self.index.results())
        if status in (JobStatus.queued, JobStatus.deferred):
            definition = await job.info()
            if definition is not None and await self._take_out(job_id):
                # No actor code runs for it: the index learns it here.
                await self.index.aborted_waiting(
                    job_id,
                    definition.function,
                    definition.args,
                    job_try=definition.job_try or 0,
                    enqueued_ms=int(definition.enqueue_time.timestamp() * 1000),
                )
                return {"job_id": job_id, "status": "aborted"}
        aborted = False  # it started meanwhile: the worker cancels it
        with contextlib.suppress(TimeoutError):
            aborted = await job.abort(timeout=ABORT_WAIT, poll_delay=ABORT_WAIT / 5)
        return {"job_id": job_id, "status": "aborted" if aborted else "aborting"}

    async def _take_out(self, job_id: str) -> bool:
        """Remove a job that has not started, unless a worker starts it meanwhile (arq's workers
        watch the same in-progress key when they start a job)."""
        in_progress = in_progress_key_prefix + job_id
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(in_progress)
                if await pipe.exists(in_progress):
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py 5
                pipe.zrem(self.name, job_id)
                pipe.delete(job_key_prefix + job_id)
                removed, _ = await pipe.execute()
            except WatchError:
                return False
        return bool(removed)

    @staticmethod
    def _not_abortable(job_id: str, results: list[dict[str, Any]]) -> dict[str, Any]:
        if any(entry["job_id"] == job_id for entry in results):
            raise Conflict("Job already finished")
        raise NotFound("Job not found")

    async def reenqueue(self, job_id: str) -> dict[str, Any]:
        """Enqueue a failed (or cancelled/aborted) job's function and arguments again, as a new job."""
        entry: dict[str, Any] | None = next((e for e in await self.index.results() if e["job_id"] == job_id), None)
        if entry is None:
            raise NotFound("Job not found")
        if entry["status"] not in REENQUEUEABLE_STATUSES:
            raise Conflict(f"Only a failed, cancelled or aborted job can be enqueued again (it is {entry['status']})")
        if entry["function"] not in REENQUEUEABLE or not isinstance(entry["args"], list):
            raise Conflict("This job cannot be enqueued again (a cron job, or arguments that were not kept)")
        queued = await self.redis.enqueue_job(entry["function"], *entry["args"], _queue_name=self.name)
        if queued is None:
            raise Conflict("The job could not be enqueued")
        return {"job_id": queued.job_id, "function": entry["function"], "args": entry["args"], "status": "queued"}

    # -- overview ----------------------------------------------------------------------------------

    async def overview(self) -> dict[str, Any]:
        now = now_ms()
        running = await self.index.running()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(self.name, "-inf", now)
            pipe.zcount(self.name, f"({now}", "+inf")
            pipe.get(self.name + health_check_key_suffix)
            pipe.pttl(self.name + health_check_key_suffix)
            due, deferred, health, health_ttl = await pipe.execute()
        minutes = await self.index.minutes()
        return {
            "queue": self.name,
            "depth": {"queued": max(due - len(running), 0), "deferred": deferred, "in_progress": len(running)},
            "functions": _per_function(minutes),
            "minutes": [_minute_row(minute, counts) for minute, counts in minutes],
            "health": {
                "alive": health is not None,
                "status": health.decode() if health is not None else None,
                "expires_in_seconds": round(health_ttl / 1000, 1) if health is not None and health_ttl > 0 else None,
            },
            "cron": await self._cron(),
        }

    async def _cron(self) -> list[dict[str, Any]]:
        last_runs = await self.index.last_runs()
        now = datetime.now(UTC)
        rows = []
        for name, spec in sorted((await self.index.cron()).items()):
            last = last_runs.get(spec["function"], {})
            upcoming = next_cron(now, minute=_option(spec["minute"]), second=_option(spec["second"]), microsecond=0)
            rows.append(
                {
                    "name": name,
                    "function": spec["function"],
                    "schedule": _schedule_text(spec),
                    "last_run": _time(last.get("finish_ms")),
                    "last_status": last.get("status"),
                    "next_run": format_datetime(upcoming),
                }
            )
        return rows


def _option(values: list[int] | None) -> set[int] | None:
    return None if values is None else set(values)


def _schedule_text(spec: dict[str, Any]) -> str:
    parts = []
    for unit in ("minute", "second"):
        values = spec.get(unit)
        parts.append(f"every {unit}" if values is None else f"{unit} {','.join(map(str, values))}")
    return ", ".join(parts)


def _minute_row(minute: int, counts: dict[str, int]) -> dict[str, Any]:
    by_outcome = {outcome: 0 for outcome in OUTCOMES}
    for field, count in counts.items():
        _, _, outcome = field.partition("|")
        if outcome in by_outcome:
            by_outcome[outcome] += count
    return {"minute": _time(minute * 60_000), **by_outcome}


def _per_function(minutes: list[tuple[int, dict[str, int]]]) -> list[dict[str, Any]]:
    outcomes: dict[str, dict[str, int]] = {}
    histograms: dict[str, dict[int, int]] = {}
    for _, counts in minutes:
        for field, count in counts.items():
            function, _, what = field.partition("|")
            if what in OUTCOMES:
                outcomes.setdefault(function, dict.fromkeys(OUTCOMES, 0))[what] += count
            elif what.startswith("le") and what[2:].isdigit() and int(what[2:]) in BUCKETS_MS:
                histogram = histograms.setdefault(function, {})
                histogram[int(what[2:])] = histogram.get(int(what[2:]), 0) + count
    rows = []
    for function in sorted(outcomes.keys() | histograms.keys()):
        counts = outcomes.get(function, dict.fromkeys(OUTCOMES, 0))
        histogram = histograms.get(function, {})
        rows.append(
            {
                "function": function,
                **counts,
                "per_minute": round(sum(counts.values()) / len(minutes), 2) if minutes else 0.0,
                "p50_ms": percentile(histogram, 0.5),
                "p95_ms": percentile(histogram, 0.95),
            }
        )
    return rows


def matches(row: dict[str, Any], *, function: str | None, status: str | None, text: str | None) -> bool:
    """The list filters: exact function and status, `text` within the job id or the arguments."""
    if function is not None and row["function"] != function:
        return False
    if status is not None and row["status"] != status:
        return False
    if text is not None:
        return text.lower() in row["job_id"].lower() or text.lower() in json.dumps(row["args"]).lower()
    return True
