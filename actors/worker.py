"""The arq worker: functions, cron jobs, and the resources every actor finds in `ctx`
(actors/resources.py).

`WorkerSettings` is built lazily from `config.load_settings()` the first time it is read,
so `arq actors.worker.WorkerSettings` and `arq --check actors.worker.WorkerSettings`
work, while importing this module (tests) reads no environment.

Timing: jobs are short and idempotent. A SIGKILLed worker's job re-runs once its
in-progress key expires (job timeout + 10 s), the health key is refreshed every 5 s for
`--check`, and the queue is polled every 50 ms, up to 50 jobs at a time, so readiness
updates stay prompt (a faster poll buys latency with idle CPU: ~1 % of a core at 50 ms).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from arq import cron, func
from arq.connections import RedisSettings

from actors.outcomes import count_outcomes
from actors.quota import reconcile_quotas
from actors.readiness import video_changed
from actors.relay import relay_outbox
from actors.resources import open_resources
from actors.summaries import SUMMARY_JOB_TIMEOUT, SUMMARY_TRIES, summarize_video
from actors.sweeper import sweep
from config import Settings, load_settings
from vidwiz.events import RedisKeys
from vidwiz.metrics import zero_actor_series
from vidwiz.redis_connection import arq_redis_settings
from vidwiz.unit_of_work import Job

if TYPE_CHECKING:
    from arq.cron import CronJob
    from arq.typing import StartupShutdown, WorkerCoroutine
    from arq.worker import Function

    from actors.lifecycle import ActorWorkerSettings

MAX_TRIES = 5
HEALTH_CHECK_INTERVAL = 5
POLL_DELAY = 0.05
MAX_JOBS = 50
STOP_GRACE = 5  # seconds a SIGTERM leaves running jobs to finish
KEEP_RESULT = 3600
SWEEP_SECONDS = {0, 15, 30, 45}
QUOTA_MINUTES = set(range(0, 60, 10))


def build_worker_settings(settings: Settings) -> type[ActorWorkerSettings]:
    """An arq WorkerSettings class for these settings (arq reads the class's own attributes)."""
    timeout = settings.actor_job_timeout
    keys = RedisKeys(settings.redis_key_prefix)
    connection = arq_redis_settings(settings)

    class WorkerSettings:
        functions: Sequence[Function | WorkerCoroutine] = [
            # count_outcomes: vidwiz_actor_jobs_total{function, outcome} (name kept).
            func(count_outcomes(video_changed), name=Job.VIDEO_CHANGED.value),
            func(count_outcomes(relay_outbox), name=Job.RELAY_OUTBOX.value),
            # No kept result: its job id (one per video) must be free again once it finished.
            func(
                count_outcomes(summarize_video),
                name=Job.SUMMARIZE_VIDEO.value,
                timeout=max(timeout, SUMMARY_JOB_TIMEOUT),
                keep_result=0,
                max_tries=SUMMARY_TRIES,
            ),
        ]
        cron_jobs: Sequence[CronJob] | None = cron_jobs(keys)
        on_startup: StartupShutdown | None = startup
        on_shutdown: StartupShutdown | None = shutdown
        redis_settings: RedisSettings = connection
        queue_name = keys.arq_queue
        job_timeout = timeout
        max_tries = MAX_TRIES
        health_check_interval = HEALTH_CHECK_INTERVAL
        poll_delay = POLL_DELAY
        max_jobs = MAX_JOBS
        job_completion_wait = STOP_GRACE
        keep_result = KEEP_RESULT
        allow_abort_jobs = True  # the queue dashboard's abort (arq's Job.abort)
        ctx = {"settings": settings}

    return WorkerSettings


# Every host enqueues each tick's cron job under the same id; arq refuses an id whose job or
# result exists. A cron result is kept for a while so a host whose poll comes after the tick's
# run has finished (a busy loop) cannot enqueue that tick again (arq keeps none by default).
CRON_RESULT_SECONDS = 300


def cron_jobs(keys: RedisKeys) -> list[CronJob]:
    return [
        # Cron job ids are global to the Redis: the prefix keeps deployments apart.
        cron(
            count_outcomes(sweep),
            name=f"cron:{keys.prefix}{Job.SWEEP}",
            second=SWEEP_SECONDS,
            run_at_startup=True,
            keep_result=CRON_RESULT_SECONDS,
        ),
        cron(
            count_outcomes(reconcile_quotas),
            name=f"cron:{keys.prefix}{Job.RECONCILE_QUOTAS}",
            minute=QUOTA_MINUTES,
            second=0,
            keep_result=CRON_RESULT_SECONDS,
        ),
    ]


def cron_schedule(keys: RedisKeys) -> dict[str, dict[str, Any]]:
    """What the dashboard shows of each cron job (arq's options; None: every value)."""

    def listed(option: Any) -> list[int] | None:
        return None if option is None else sorted(option) if isinstance(option, set | list) else [option]

    return {
        job.name: {
            "function": job.name.removeprefix(f"cron:{keys.prefix}"),
            "second": listed(job.second),
            "minute": listed(job.minute),
        }
        for job in cron_jobs(keys)
    }


async def startup(ctx: dict[str, Any]) -> None:
    zero_actor_series(job.value for job in Job)
    stack = contextlib.AsyncExitStack()
    ctx["exit_stack"] = stack
    # arq's worker keeps this dict (the settings' ctx) across the worker restarts of one process.
    warned = ctx.setdefault("warned", set())
    res = await stack.enter_async_context(open_resources(ctx["settings"], ctx["redis"], warned=warned))
    ctx["resources"] = res
    await res.job_index.record_cron(cron_schedule(res.keys))
    # Whatever a crash left in the outbox goes out now rather than at the next sweep.
    await res.dispatcher.enqueue(Job.RELAY_OUTBOX)


async def shutdown(ctx: dict[str, Any]) -> None:
    stack = ctx.get("exit_stack")
    if stack is not None:
        await stack.aclose()


def __getattr__(name: str) -> Any:
    # Lazily: `arq actors.worker.WorkerSettings` reads the environment only when it runs.
    if name == "WorkerSettings":
        return build_worker_settings(load_settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
