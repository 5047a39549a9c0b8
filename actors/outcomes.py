"""Counting each actor job's outcome in vidwiz_actor_jobs_total{function, outcome}."""

from __future__ import annotations

import asyncio
import functools
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
