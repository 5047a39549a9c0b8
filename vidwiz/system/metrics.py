"""The web side of the metrics (vidwiz/metrics.py defines the series): the request middleware,
open-stream counting, the series each web process creates at start, and the scrape-time
database counts that `GET /metrics` adds.

Tasks and outbox rows are counted from the database at scrape time (GROUP BY over indexed
columns), so every web process reports the same truth and nothing needs refreshing.
"""

from __future__ import annotations

import asyncio
import functools
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from vidwiz import metrics
from vidwiz.notes.models import OutboxMessage, OutboxStatus
from vidwiz.system.openapi import operation_of
from vidwiz.tasks.models import Task, TaskStatus
from vidwiz.tasks.service import TASK_TYPES

UNMATCHED = "unmatched"  # 404s, 405s and CORS preflights share one route label
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_CLOSED = 499  # the handler was cancelled (shutdown or a vanished client)


def canonical_route(request: web.BaseRequest) -> str:
    """The matched route's template (`/v2/videos/{video_id}`), never the raw path, so labels
    and log lines stay few and free of ids."""
    try:
        match_info = request.match_info  # type: ignore[attr-defined]
    except (AttributeError, AssertionError):
        # A bare BaseRequest, or a request the HTTP parser refused before any routing
        # (aiohttp asserts that the match info exists).
        return UNMATCHED
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else UNMATCHED


def _method(request: web.BaseRequest) -> str:
    return request.method if request.method in METHODS else "OTHER"


_STREAM_OPEN = web.RequestKey("metrics_stream_open", bool)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: counts every answer, the envelope errors and CORS preflights included."""
    started = time.perf_counter()
    status = 500  # anything escaping every middleware becomes aiohttp's own 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        route = canonical_route(request)
        count, seconds = _request_series(_method(request), route, status)
        count.inc()
        seconds.observe(time.perf_counter() - started)
        if request.get(_STREAM_OPEN):
            _open_streams(route).dec()


async def count_open_streams(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: an SSE response counts as open until its handler returns."""
    if response.content_type == "text/event-stream" and not request.get(_STREAM_OPEN):
        request[_STREAM_OPEN] = True
        _open_streams(canonical_route(request)).inc()


# The labelled children, resolved once per label set: `labels()` (a lock, a tuple of str()s) was
# ~9 % of a stream open. The sets are few (methods x canonical routes x statuses), the bound a guard.
@functools.lru_cache(maxsize=4096)
def _request_series(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    labels = (method, route, str(status))
    return metrics.REQUESTS.labels(*labels), metrics.REQUEST_SECONDS.labels(*labels)


@functools.lru_cache(maxsize=256)
def _open_streams(route: str) -> Gauge:
    return metrics.SSE_STREAMS.labels(route)


async def zero_web_series(app: web.Application) -> None:
    """on_startup of each web process: its labelled series exist at zero from the start."""
    metrics.zero_web_series(sse_routes(app), TASK_TYPES.values())


def sse_routes(app: web.Application) -> list[str]:
    """The routes whose @operation documents a text/event-stream answer."""
    routes = set()
    for route in app.router.routes():
        doc = operation_of(route.handler)
        answer = doc.responses.get(200) if doc is not None else None
        if isinstance(answer, tuple) and answer[0] == "text/event-stream" and route.resource is not None:
            routes.add(route.resource.canonical)
    return sorted(routes)


async def database_families(sessions: async_sessionmaker[AsyncSession]) -> list[Metric]:
    """Tasks by type and status and outbox rows by status; every known pair is present (0 too)."""
    async with sessions() as session:
        task_rows = (
            await session.execute(
                select(Task.task_type, Task.status, func.count()).group_by(Task.task_type, Task.status)
            )
        ).all()
        outbox_rows = (
            await session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))
        ).all()
    task_counts = {(task_type, status.value): 0 for task_type in TASK_TYPES.values() for status in TaskStatus}
    task_counts.update({(task_type, status.value): count for task_type, status, count in task_rows})
    tasks = GaugeMetricFamily("vidwiz_tasks", "Tasks by type and status", labels=["task_type", "status"])
    for (task_type, status), count in sorted(task_counts.items()):
        tasks.add_metric([task_type, status], count)
    outbox_counts = {status.value: 0 for status in OutboxStatus} | {str(status): count for status, count in outbox_rows}
    outbox = GaugeMetricFamily("vidwiz_outbox_messages", "Outbox rows by status", labels=["status"])
    for status, count in sorted(outbox_counts.items()):
        outbox.add_metric([status], count)
    return [tasks, outbox]
