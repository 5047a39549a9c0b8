"""Counting each actor job's outcome in vidwiz_actor_jobs_total{function, outcome}, and the level
of arq's per-job log lines."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from arq.typing import WorkerCoroutine
from arq.worker import Retry

from vidwiz.job_index import describe, now_ms
from vidwiz.metrics import ACTOR_JOBS

P = ParamSpec("P")
R = TypeVar("R")


def count_outcomes(
    function: Callable[Concatenate[dict[str, Any], P], Awaitable[R]],
) -> WorkerCoroutine:
    """Wrap an arq job function (name kept: it is the job's name, vidwiz.unit_of_work.Job) to
    count its runs: success, failure, retry, or cancelled (timed out, aborted or stopped), and to
    record them in the dashboard's job index (vidwiz/job_index.py) when run by arq."""
    name = function.__name__

    @functools.wraps(function)
    async def counted(ctx: dict[str, Any], *args: P.args, **kwargs: P.kwargs) -> R:
        index = ctx["resources"].job_index if "job_id" in ctx and "resources" in ctx else None
        job_id, job_try = ctx.get("job_id", ""), ctx.get("job_try", 1)
        enqueued_ms = int(ctx["enqueue_time"].timestamp() * 1000) if "enqueue_time" in ctx else now_ms()
        started_ms = now_ms()
        if index is not None:
            await index.started(job_id, name, args, job_try, enqueued_ms)
        outcome, result, error = "failure", None, None
        try:
            result = await function(ctx, *args, **kwargs)
            outcome = "success"
        except Retry:
            outcome = "retry"
            raise
        except asyncio.CancelledError:
            outcome, error = "cancelled", "cancelled (timed out, aborted or stopped)"
            raise
        except Exception as exc:
            outcome, error = "failure", describe(exc)
            raise
        finally:
            ACTOR_JOBS.labels(name, outcome).inc()
            if index is not None:
                # Shielded: a cancelled job still records how it ended.
                await asyncio.shield(
                    index.finished(
                        job_id,
                        name,
                        args,
                        job_try=job_try,
                        enqueued_ms=enqueued_ms,
                        started_ms=started_ms,
                        outcome=outcome,
                        result=result,
                        error=error,
                    )
                )
        return result

    return counted


# arq's worker logs every job's start ("→") and finish ("←"), and its health line, at INFO:
# two lines per job flood the log at a few jobs a second. Retries ("↻") are worth a WARNING.
ARQ_LOGGER = "arq.worker"
PER_JOB_FORMATS = ("%6.2fs → ", "%6.2fs ← ", "recording health")
RETRY_MARK = " ↻ "


class JobLogLevels(logging.Filter):
    """On arq's worker logger: per-job lines become DEBUG (unless `per_job_info`), retries WARNING.
    Failures are logged by arq at ERROR/WARNING with the job id and are left alone."""

    def __init__(self, *, per_job_info: bool):
        super().__init__()
        self.per_job_info = per_job_info

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if record.levelno != logging.INFO:
            return True
        if RETRY_MARK in message:
            return _relevel(record, logging.WARNING)
        if not self.per_job_info and message.startswith(PER_JOB_FORMATS):
            return _relevel(record, logging.DEBUG)
        return True


def _relevel(record: logging.LogRecord, level: int) -> bool:
    record.levelno, record.levelname = level, logging.getLevelName(level)
    # The logger checked the old level: drop what its effective level would not have let through.
    return logging.getLogger(record.name).isEnabledFor(level)


def set_job_log_levels(*, per_job_info: bool) -> None:
    """Install JobLogLevels on arq's worker logger (once; a second call replaces it)."""
    logger = logging.getLogger(ARQ_LOGGER)
    for existing in [f for f in logger.filters if isinstance(f, JobLogLevels)]:
        logger.removeFilter(existing)
    logger.addFilter(JobLogLevels(per_job_info=per_job_info))
