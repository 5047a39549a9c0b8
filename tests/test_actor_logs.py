"""The actors' log volume: arq's per-job lines are DEBUG unless ACTOR_JOB_LOGS, retries and
failures stay WARNING/ERROR with the job id, once-per-process warnings are said once."""

from __future__ import annotations

import asyncio
import logging

import pytest
from arq import Retry
from arq.worker import Worker

from actors.outcomes import ARQ_LOGGER
from actors.resources import open_resources
from tests.conftest import eventually
from vidwiz.context import REDIS, SESSIONS, TRANSCRIPTS

NO_DELIVERY = "neither SQS_AI_NOTE_QUEUE_URL nor an LLM provider is configured"


async def ok(ctx):
    return "fine"


async def flaky(ctx):
    if ctx["job_try"] == 1:
        raise Retry(defer=0)
    return "second time"


async def broken(ctx):
    raise RuntimeError("it broke")


async def run_jobs(arq_redis, queue: str) -> None:
    for function, job_id in (("ok", "job-ok"), ("flaky", "job-flaky"), ("broken", "job-broken")):
        await arq_redis.enqueue_job(function, _queue_name=queue, _job_id=f"{queue}-{job_id}")
    worker = Worker(functions=[ok, flaky, broken], redis_pool=arq_redis, queue_name=queue, burst=True, poll_delay=0.01)
    worker.ctx["redis"] = arq_redis
    try:
        # arq's burst loop without its start-up (which asks Redis for INFO; fakeredis has none).
        async def drained() -> bool:
            await worker._poll_iteration()
            await asyncio.gather(*worker.tasks.values())
            return await arq_redis.zcard(queue) == 0

        await eventually(drained, "the jobs to run")
    finally:
        await worker.close()


def arq_lines(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == ARQ_LOGGER]


@pytest.mark.parametrize("per_job_info", [False, True])
async def test_per_job_lines_follow_the_setting_and_retries_and_failures_warn(
    arq_redis, settings, caplog, job_log_levels, per_job_info
):
    job_log_levels(per_job_info=per_job_info)
    caplog.set_level(logging.INFO)
    queue = settings.redis_key_prefix + "logs:queue"
    await run_jobs(arq_redis, queue)
    lines = arq_lines(caplog)
    per_job = [line for line in lines if " → " in line[1] or " ← " in line[1]]
    assert bool(per_job) is per_job_info and all(level == "INFO" for level, _ in per_job)
    [retry] = [line for line in lines if "↻" in line[1]]
    assert retry[0] == "WARNING" and f"{queue}-job-flaky" in retry[1]
    [failure] = [line for line in lines if "it broke" in line[1]]
    assert failure[0] == "ERROR" and f"{queue}-job-broken" in failure[1]


async def test_per_job_lines_are_debug_when_the_level_allows(arq_redis, settings, caplog, job_log_levels):
    job_log_levels(per_job_info=False)
    caplog.set_level(logging.DEBUG)
    await run_jobs(arq_redis, settings.redis_key_prefix + "debug:queue")
    per_job = [line for line in arq_lines(caplog) if " ← " in line[1]]
    assert per_job and all(level == "DEBUG" for level, _ in per_job)


async def test_once_per_process_warnings_are_said_once_across_worker_starts(client, settings, caplog):
    app = client.app
    warned: set[str] = set()  # what actors/worker.py keeps in the worker settings' ctx
    caplog.set_level(logging.WARNING)
    for _ in range(3):  # a worker restart after a Redis outage opens the resources again
        async with open_resources(
            settings, app[REDIS], sessions=app[SESSIONS], transcripts=app[TRANSCRIPTS], warned=warned
        ) as res:
            assert res.delivery is None
            res.warn_once(NO_DELIVERY + ": AI-note requests stay pending")
    assert sum(NO_DELIVERY in record.getMessage() for record in caplog.records) == 1
