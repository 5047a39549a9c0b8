"""Prometheus metrics: the series, the request middleware and `GET /metrics` (admin token).

Multiprocess: the supervisor gives every child PROMETHEUS_MULTIPROC_DIR (a fresh directory
under DATA_DIR); each process writes its samples to its own files there and `/metrics` in
any web process sums them all. prometheus_client picks that storage when it is first
imported, so the variable must be set before: children have it from their start, and the
supervisor sets it before it imports this module. Without it (tests, a lone web process)
each process serves its own default registry.

Tasks and outbox rows are counted from the database at scrape time (GROUP BY over indexed
columns), so every web process reports the same truth and nothing needs refreshing.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from arq.worker import Retry
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from vidwiz.auth.viewer import require_admin
from vidwiz.context import SESSIONS
from vidwiz.internal.models import Task, TaskStatus
from vidwiz.internal.tasks import TASK_TYPES
from vidwiz.notes.models import OutboxMessage
from vidwiz.openapi import operation

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "unmatched"  # 404s, 405s and CORS preflights share one route label
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_CLOSED = 499  # the handler was cancelled (shutdown or a vanished client)
OUTBOX_STATUSES = ("pending", "sent", "failed")
# Long polls and SSE streams last up to a minute: the top buckets keep them apart from +Inf.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter("vidwiz_http_requests", "HTTP requests answered", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "vidwiz_http_request_duration_seconds",
    "Time to answer an HTTP request (SSE: the whole stream)",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
SSE_STREAMS = Gauge(
    "vidwiz_sse_streams_open", "Open SSE streams (readiness and Wiz chat)", ["route"], multiprocess_mode="livesum"
)
POLLERS_WAITING = Gauge(
    "vidwiz_task_pollers_waiting",
    "Workers waiting in a /v2/internal/tasks long poll",
    ["task_type"],
    multiprocess_mode="livesum",
)
ACTOR_JOBS = Counter("vidwiz_actor_jobs", "Actor job runs by outcome", ["function", "outcome"])
QUOTA_REFUSALS = Counter("vidwiz_wiz_quota_refusals", "Wiz messages refused by the daily quota", ["viewer"])
THROTTLE_REFUSALS = Counter("vidwiz_auth_throttle_refusals", "Auth attempts refused by throttling", ["scope"])
SUPERVISOR_RESTARTS = Counter("vidwiz_supervisor_restarts", "Children restarted by the supervisor", ["child"])

# Label values known in advance, so each series exists at zero from its process's start
# (absent() alerts and rate() need the series before its first event). The label values
# vidwiz/conversations/quota.py and vidwiz/auth/throttle.py count under:
QUOTA_VIEWERS = ("user", "guest")
THROTTLE_SCOPES = ("login", "register", "google")
JOB_OUTCOMES = ("success", "failure", "retry", "cancelled")


def _create(metric: Counter | Gauge, *label_sets: Iterable[str]) -> None:
    """Create the series of every combination of these label values (at zero)."""
    for labels in itertools.product(*label_sets):
        metric.labels(*labels)


async def zero_web_series(app: web.Application) -> None:
    """on_startup of each web process: its labelled series (HTTP requests excepted: routes
    times statuses is unbounded, and they appear with the first request)."""
    _create(SSE_STREAMS, sse_routes(app))
    _create(POLLERS_WAITING, TASK_TYPES.values())
    _create(QUOTA_REFUSALS, QUOTA_VIEWERS)
    _create(THROTTLE_REFUSALS, THROTTLE_SCOPES)


def zero_actor_series(functions: Iterable[Callable[..., Any]]) -> None:
    """At an actor worker's start: every job function (the names count_outcomes counts under) × outcome."""
    _create(ACTOR_JOBS, [function.__name__ for function in functions], JOB_OUTCOMES)


def zero_supervisor_series(children: Iterable[str]) -> None:
    """At the supervisor's start: restarts of each child it may restart."""
    _create(SUPERVISOR_RESTARTS, children)


def sse_routes(app: web.Application) -> list[str]:
    """The routes whose @operation documents a text/event-stream answer."""
    routes = set()
    for route in app.router.routes():
        doc = getattr(route.handler, "__openapi__", None)
        answer = doc.responses.get(200) if doc is not None else None
        if isinstance(answer, tuple) and answer[0] == "text/event-stream" and route.resource is not None:
            routes.add(route.resource.canonical)
    return sorted(routes)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def mark_process_dead(pid: int) -> None:
    """A child has exited: drop its live gauges (its counters keep counting in the sums)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)


# -- HTTP ------------------------------------------------------------------------------------


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
async def metrics_middleware(request: web.Request, handler):
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
        labels = (_method(request), route, str(status))
        REQUESTS.labels(*labels).inc()
        REQUEST_SECONDS.labels(*labels).observe(time.perf_counter() - started)
        if request.get(_STREAM_OPEN):
            SSE_STREAMS.labels(route).dec()


async def count_open_streams(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: an SSE response counts as open until its handler returns."""
    if response.content_type == "text/event-stream" and not request.get(_STREAM_OPEN):
        request[_STREAM_OPEN] = True
        SSE_STREAMS.labels(canonical_route(request)).inc()


# -- actors ----------------------------------------------------------------------------------


def count_outcomes(function: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap an arq job function (name kept) to count its runs: success, failure, retry, or
    cancelled (timed out or stopped; arq runs it again)."""
    name = function.__name__

    @functools.wraps(function)
    async def counted(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
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


# -- /metrics --------------------------------------------------------------------------------


class _Families(Collector):
    """Metric families computed before the scrape (the database counts)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


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
    outbox_counts = dict.fromkeys(OUTBOX_STATUSES, 0) | {status: count for status, count in outbox_rows}
    outbox = GaugeMetricFamily("vidwiz_outbox_messages", "Outbox rows by status", labels=["status"])
    for status, count in sorted(outbox_counts.items()):
        outbox.add_metric([status], count)
    return [tasks, outbox]


def _exposition(families: list[Metric]) -> bytes:
    """Sync (file reads in multiprocess mode): run off the event loop."""
    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry = REGISTRY
    extra = CollectorRegistry()
    extra.register(_Families(families))
    return generate_latest(registry) + generate_latest(extra)


@operation(
    "Prometheus metrics (text exposition format)",
    "system",
    auth="admin",
    responses={200: ("text/plain", "Every series of vidwiz/metrics.py, summed over the processes of the tree")},
)
async def metrics_handler(request: web.Request) -> web.Response:
    """`GET /metrics`: Prometheus text format, for the admin token only (like /v2/internal)."""
    require_admin(request)
    try:
        families = await database_families(request.app[SESSIONS])
    except (SQLAlchemyError, OSError):  # the rest of the scrape is still worth having
        log.warning("metrics: database counts unavailable", exc_info=True)
        families = []
    body = await asyncio.to_thread(_exposition, families)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
