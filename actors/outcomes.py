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

from vidwiz.metrics import ACTOR_JOBS

P = ParamSpec("P")
R = TypeVar("R")


def count_outcomes(
    function: Callable[Concatenate[dict[str, Any], P], Awaitable[R]],
) -> WorkerCoroutine:
    """Wrap an arq job function (name kept: it is the job's name, vidwiz.unit_of_work.Job) to
    count its runs: success, failure, retry, or cancelled (timed out or stopped; arq runs it again)."""
    name = function.__name__

    @functools.wraps(function)
    async def counted(ctx: dict[str, Any], *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = await function(ctx, *args, **kwargs)
        except Retry:
            ACTOR_JOBS.labels(name, "retry").inc()
            raise
        except asyncio.CancelledError:
            ACTOR_JOBS.labels(name, "cancelled").inc()
            raise
        except Exception:
            ACTOR_JOBS.labels(name, "failure").inc()
            raise
        ACTOR_JOBS.labels(name, "success").inc()
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
