"""Fixtures for running arq's worker in the test's own event loop, over the test app's queue and
resources (registered by tests/conftest.py): `actor_worker`, and `job_log_levels` for the log filter.

The worker's start-up is skipped (it asks Redis for INFO, which fakeredis has not): it polls as
arq's own loop does, in a background task, until the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from arq.worker import Function, Worker

from actors.outcomes import ARQ_LOGGER, JobLogLevels, set_job_log_levels
from vidwiz.context import KEYS, REDIS


@pytest.fixture
def actor_worker(client, actor_ctx) -> Callable[..., contextlib.AbstractAsyncContextManager[Worker]]:
    """`async with actor_worker(functions, **worker_options) as worker`: arq's worker polling the
    test app's queue, its jobs getting `actor_ctx` (the test app's resources)."""

    @contextlib.asynccontextmanager
    async def run(functions: Sequence[Function], **options: Any) -> AsyncIterator[Worker]:
        redis = client.app[REDIS]
        worker = Worker(
            functions=functions,
            redis_pool=redis,
            queue_name=client.app[KEYS].arq_queue,
            ctx={**actor_ctx, "redis": redis},
            allow_abort_jobs=True,
            poll_delay=0.01,
            **options,
        )

        async def poll_forever() -> None:
            while True:
                await worker._poll_iteration()
                await asyncio.sleep(0.01)

        polling = asyncio.create_task(poll_forever())
        try:
            yield worker
        finally:
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
            await worker.close()

    return run


@pytest.fixture
def job_log_levels():
    """set_job_log_levels(...) for one test; arq's logger is left without the filter after it."""
    yield set_job_log_levels
    logger = logging.getLogger(ARQ_LOGGER)
    for existing in [f for f in logger.filters if isinstance(f, JobLogLevels)]:
        logger.removeFilter(existing)
