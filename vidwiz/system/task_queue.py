"""The queue dashboard's view of the task queue (the `tasks` table the external workers claim
from): what waits, what is stuck, what failed, who is polling; retry and cancel (admin token)."""

from __future__ import annotations

from aiohttp import web

from vidwiz.auth.guards import require_admin
from vidwiz.context import KEYS, REDIS, SESSIONS, UNITS
from vidwiz.system import queue_schemas as schemas
from vidwiz.system.openapi import operation
from vidwiz.tasks import operators
from vidwiz.tasks.wakeups import waiting_pollers
from vidwiz.validation import load_path, load_query

routes = web.RouteTableDef()

TASK_NOT_FOUND = "Task not found (NOT_FOUND)"


@routes.get("/v2/internal/queue/tasks")
@operation(
    "The task queue: counts per type and status, stale, failed and pending tasks, waiting pollers",
    "internal",
    auth="admin",
    query=schemas.PageQuerySchema,
    responses={200: schemas.TaskQueueSchema},
)
async def task_queue(request: web.Request) -> web.Response:
    require_admin(request)
    query = load_query(request, schemas.PageQuerySchema)
    async with request.app[SESSIONS]() as session:
        view = await operators.task_queue(session, limit=query["limit"], offset=query["offset"])
    view["pollers"] = await waiting_pollers(request.app[REDIS], request.app[KEYS])
    return web.json_response(view)


@routes.post("/v2/internal/queue/tasks/{task_id}/retry")
@operation(
    "Retry a failed task: pending again, its retry count reset; waiting workers are woken",
    "internal",
    auth="admin",
    path=schemas.TaskActionPathSchema,
    responses={
        200: schemas.TaskRowSchema,
        404: TASK_NOT_FOUND,
        409: "The task is not failed, or another task already fetches this for the video (CONFLICT)",
    },
)
async def retry_task(request: web.Request) -> web.Response:
    require_admin(request)
    task_id = load_path(request, schemas.TaskActionPathSchema)["task_id"]
    async with request.app[UNITS]() as work:
        task = await operators.retry_task(work.session, work.effects, task_id)
        body = operators.render_task(task)
    return web.json_response(body)


@routes.post("/v2/internal/queue/tasks/{task_id}/cancel")
@operation(
    "Cancel a pending task (status `cancelled`: no worker claims it)",
    "internal",
    auth="admin",
    path=schemas.TaskActionPathSchema,
    responses={200: schemas.TaskRowSchema, 404: TASK_NOT_FOUND, 409: "The task is not pending (CONFLICT)"},
)
async def cancel_task(request: web.Request) -> web.Response:
    require_admin(request)
    task_id = load_path(request, schemas.TaskActionPathSchema)["task_id"]
    async with request.app[UNITS]() as work:
        task = await operators.cancel_task(work.session, task_id)
        body = operators.render_task(task)
    return web.json_response(body)
