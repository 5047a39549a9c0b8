"""Operators' view of the actor (arq) queue, and the queue dashboard page (admin token).

`GET /v2/internal/queue` (the first view, kept as it was) and `/v2/internal/queue/…`: an
overview, job lists with filters, a job's detail, abort and re-enqueue (vidwiz/system/actor_queue.py
reads and acts; no endpoint scans arq's result keys). The task queue's views are in
vidwiz/system/task_queue.py. `GET /v2/internal/queue/ui` is the page over them: static files of
this package, served in local/staging, and in production with QUEUE_DASHBOARD; it holds no
data and no token (the operator pastes the admin token; it stays in the tab's sessionStorage).
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from aiohttp import web

from vidwiz.auth.guards import require_admin
from vidwiz.context import KEYS, REDIS, SETTINGS
from vidwiz.errors import NotFound
from vidwiz.system import queue_schemas as schemas
from vidwiz.system.actor_queue import ActorQueue, matches
from vidwiz.system.openapi import operation
from vidwiz.validation import load_path, load_query

routes = web.RouteTableDef()

JOB_NOT_FOUND = "Unknown job: not waiting, running or among the recent results (NOT_FOUND)"
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _queue(request: web.Request) -> ActorQueue:
    return ActorQueue(request.app[REDIS], request.app[KEYS])


@routes.get("/v2/internal/queue")
@operation(
    "The actor queue: waiting and running jobs, recent results",
    "internal",
    auth="admin",
    query=schemas.QueueQuerySchema,
    responses={200: schemas.QueueSnapshotSchema},
)
async def queue_status(request: web.Request) -> web.Response:
    require_admin(request)
    limit = load_query(request, schemas.QueueQuerySchema)["limit"]
    queue = _queue(request)
    waiting = await queue.waiting()
    return web.json_response(
        {
            "queue": queue.name,
            "queued_total": await request.app[REDIS].zcard(queue.name),
            "queued": waiting[:limit],
            "in_progress": (await queue.running())[:limit],
            "results": (await queue.finished())[:limit],
        }
    )


@routes.get("/v2/internal/queue/overview")
@operation(
    "The actor queue at a glance: depth, jobs per function in the last hour, health, cron schedule",
    "internal",
    auth="admin",
    responses={200: schemas.QueueOverviewSchema},
)
async def queue_overview(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(await _queue(request).overview())


@routes.get("/v2/internal/queue/jobs")
@operation(
    "Actor jobs in one state, filtered by function, status and text, a page at a time",
    "internal",
    auth="admin",
    query=schemas.JobListQuerySchema,
    responses={200: schemas.JobPageSchema},
)
async def list_jobs(request: web.Request) -> web.Response:
    require_admin(request)
    query = load_query(request, schemas.JobListQuerySchema)
    rows = [
        row
        for row in await _queue(request).jobs(query["state"])
        if matches(row, function=query["function"], status=query["status"], text=query["q"])
    ]
    offset, limit = query["offset"], query["limit"]
    page = {"state": query["state"], "total": len(rows), "offset": offset, "limit": limit}
    return web.json_response({**page, "jobs": rows[offset : offset + limit]})


@routes.get("/v2/internal/queue/jobs/{job_id}")
@operation(
    "One actor job: arguments, tries, timings, result or error, and its finished runs",
    "internal",
    auth="admin",
    path=schemas.JobPathSchema,
    responses={200: schemas.JobDetailSchema, 404: JOB_NOT_FOUND},
)
async def job_detail(request: web.Request) -> web.Response:
    require_admin(request)
    job_id = load_path(request, schemas.JobPathSchema)["job_id"]
    return web.json_response(await _queue(request).detail(job_id))


@routes.post("/v2/internal/queue/jobs/{job_id}/abort")
@operation(
    "Abort a waiting job (it leaves the queue) or a running one (arq's abort cancels it)",
    "internal",
    auth="admin",
    path=schemas.JobPathSchema,
    responses={200: schemas.JobActionSchema, 404: JOB_NOT_FOUND, 409: "The job already finished (CONFLICT)"},
)
async def abort_job(request: web.Request) -> web.Response:
    require_admin(request)
    job_id = load_path(request, schemas.JobPathSchema)["job_id"]
    return web.json_response(await _queue(request).abort(job_id))


@routes.post("/v2/internal/queue/jobs/{job_id}/reenqueue")
@operation(
    "Enqueue a failed, cancelled or aborted job again (a new job, same function and arguments)",
    "internal",
    auth="admin",
    path=schemas.JobPathSchema,
    responses={
        200: schemas.JobActionSchema,
        404: JOB_NOT_FOUND,
        409: "The job did not fail, or cannot be enqueued again (a cron job) (CONFLICT)",
    },
)
async def reenqueue_job(request: web.Request) -> web.Response:
    require_admin(request)
    job_id = load_path(request, schemas.JobPathSchema)["job_id"]
    return web.json_response(await _queue(request).reenqueue(job_id))


# -- the page ---------------------------------------------------------------------------------------


def _page_served(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    if not (settings.docs_enabled or settings.queue_dashboard):
        raise NotFound("Not Found")


async def _asset(name: str) -> bytes:
    return await asyncio.to_thread((resources.files("vidwiz.system") / "dashboard" / name).read_bytes)


def _page_file(handler_name: str, path: str, name: str, content_type: str, summary: str, what: str) -> None:
    """One route serving one of the page's files (package data), documented like every route."""

    async def serve(request: web.Request) -> web.Response:
        _page_served(request)
        body = await _asset(name)
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=_page_headers())

    serve.__name__ = serve.__qualname__ = handler_name  # its OpenAPI operationId
    responses = {200: (content_type, what), 404: "Not served in this environment (NOT_FOUND)"}
    routes.get(path)(operation(summary, "internal", responses=responses)(serve))


_page_file(
    "queue_page",
    "/v2/internal/queue/ui",
    "index.html",
    "text/html",
    "The queue dashboard page (asks for the admin token; local/staging, or QUEUE_DASHBOARD)",
    "The queue page",
)
_page_file(
    "queue_page_script",
    "/v2/internal/queue/ui/app.js",
    "app.js",
    "application/javascript",
    "The queue page's script",
    "The script",
)
_page_file(
    "queue_page_style",
    "/v2/internal/queue/ui/style.css",
    "style.css",
    "text/css",
    "The queue page's style sheet",
    "The style sheet",
)


def _page_headers() -> dict[str, Any]:
    return {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
