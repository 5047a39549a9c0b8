"""Operators' view of the actor queue, read through arq's own job API (admin only).

`GET /v2/internal/queue` answers JSON: queued and deferred jobs, jobs in progress and
recent results of this deployment's queue. `GET /v2/internal/queue/ui` is a small page
over it, served only where the docs are (local/staging). arq-dashboard cannot live
beside arq 0.28, so this is the built-in stand-in; arq's key layout is untouched, so
external arq tools pointed at the same Redis still work.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiohttp import web
from arq.connections import ArqRedis
from arq.constants import result_key_prefix, retry_key_prefix
from arq.jobs import DeserializationError, Job, JobDef, JobResult, JobStatus, deserialize_result
from marshmallow import EXCLUDE, Schema, fields

from vidwiz.auth.guards import require_admin
from vidwiz.context import KEYS, REDIS, SETTINGS
from vidwiz.db import format_datetime
from vidwiz.errors import NotFound
from vidwiz.fields import DateTimeText, StrictInteger, int_range
from vidwiz.system.openapi import operation
from vidwiz.validation import load_query

routes = web.RouteTableDef()

SCAN_BATCH = 500


class QueueQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = StrictInteger(from_text=True, load_default=50, validate=int_range(1, 500))


class JobSchema(Schema):
    job_id = fields.String(required=True)
    function = fields.String(required=True)
    args = fields.Raw(required=True, metadata={"description": "the job's arguments (repr() when not JSON)"})
    status = fields.String(required=True)
    tries = fields.Integer(required=True)
    enqueue_time = DateTimeText(required=True, allow_none=True)
    start_time = DateTimeText(required=True, allow_none=True)
    finish_time = DateTimeText(required=True, allow_none=True)
    error = fields.String(required=True, allow_none=True)
    result = fields.Raw(required=True, allow_none=True)


class QueueSnapshotSchema(Schema):
    queue = fields.String(required=True)
    queued_total = fields.Integer(required=True)
    queued = fields.List(fields.Nested(JobSchema), required=True)
    in_progress = fields.List(fields.Nested(JobSchema), required=True)
    results = fields.List(fields.Nested(JobSchema), required=True)


@routes.get("/v2/internal/queue")
@operation(
    "The actor queue: waiting and running jobs, recent results",
    "internal",
    auth="admin",
    query=QueueQuerySchema,
    responses={200: QueueSnapshotSchema},
)
async def queue_status(request: web.Request) -> web.Response:
    require_admin(request)
    limit = load_query(request, QueueQuerySchema())["limit"]
    snapshot = await read_queue(request.app[REDIS], request.app[KEYS].arq_queue, limit=limit)
    return web.json_response(snapshot)


@routes.get("/v2/internal/queue/ui")
@operation(
    "A page over the queue (asks for the admin token; local/staging only)",
    "internal",
    responses={200: ("text/html", "The queue page"), 404: "Not served in this environment (NOT_FOUND)"},
)
async def queue_page(request: web.Request) -> web.Response:
    # The page holds no data: it asks for the admin token and calls the JSON endpoint.
    if not request.app[SETTINGS].docs_enabled:
        raise NotFound("Not Found")
    return web.Response(text=QUEUE_PAGE, content_type="text/html")


async def read_queue(redis: ArqRedis, queue_name: str, *, limit: int) -> dict[str, Any]:
    """Jobs of `queue_name`: waiting (queued/deferred), running, and the latest `limit` results."""
    job_ids = [raw.decode() for raw in await redis.zrange(queue_name, 0, limit - 1)]
    waiting: list[dict[str, Any]] = []
    running: list[dict[str, Any]] = []
    for job_id in job_ids:
        job = Job(job_id, redis, _queue_name=queue_name)
        status, info = await job.status(), await job.info()
        if info is None or status in (JobStatus.complete, JobStatus.not_found):
            continue  # finished between the two reads
        tries = await redis.get(retry_key_prefix + job_id)
        row = _job_row(job_id, status.value, info, tries=int(tries) if tries else info.job_try or 0)
        (running if status is JobStatus.in_progress else waiting).append(row)
    return {
        "queue": queue_name,
        "queued_total": await redis.zcard(queue_name),
        "queued": waiting,
        "in_progress": running,
        "results": await _recent_results(redis, queue_name, limit),
    }


async def _recent_results(redis: ArqRedis, queue_name: str, limit: int) -> list[dict[str, Any]]:
    # Result keys are global in arq's layout; keep this queue's, newest first.
    results: list[tuple[str, JobResult]] = []
    keys = [key async for key in redis.scan_iter(match=f"{result_key_prefix}*", count=SCAN_BATCH)]
    # The pickled result holds its queue name verbatim: skip other queues' results unread, so a
    # Redis shared by many deployments costs a byte search per result, not an unpickle on the loop.
    queue_marker = queue_name.encode()
    for start in range(0, len(keys), SCAN_BATCH):
        chunk = keys[start : start + SCAN_BATCH]
        for key, raw in zip(chunk, await redis.mget(chunk)):
            if raw is None or queue_marker not in raw:
                continue
            try:
                result = deserialize_result(raw)
            except DeserializationError:
                continue  # a result another arq deployment wrote with its own serializer
            if result.queue_name == queue_name:
                results.append((key.decode()[len(result_key_prefix) :], result))
    results.sort(key=lambda item: item[1].finish_time, reverse=True)
    return [
        _job_row(
            job_id,
            "complete" if result.success else "failed",
            result,
            tries=result.job_try or 0,
            started=result.start_time,
            finished=result.finish_time,
            error=None if result.success else _describe(result.result),
            result=_jsonable(result.result) if result.success else None,
        )
        for job_id, result in results[:limit]
    ]


def _job_row(
    job_id: str,
    status: str,
    info: JobDef,
    *,
    tries: int,
    started: datetime | None = None,
    finished: datetime | None = None,
    error: str | None = None,
    result: Any = None,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "function": info.function,
        "args": _jsonable(list(info.args)),
        "status": status,
        "tries": tries,
        "enqueue_time": format_datetime(info.enqueue_time),
        "start_time": format_datetime(started),
        "finish_time": format_datetime(finished),
        "error": error,
        "result": result,
    }


def _describe(exc: Any) -> str:
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


QUEUE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VidWiz actor queue</title>
<style>
 body{font:14px system-ui,sans-serif;margin:1.5rem;color:#222}
 table{border-collapse:collapse;margin-bottom:1.5rem;width:100%}
 th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
 th{background:#f3f3f3} .failed{color:#b00} code{font-size:12px}
</style></head>
<body>
<h1>Actor queue <small id="queue"></small></h1>
<p><label>Admin token <input id="token" type="password" size="40"></label>
 <button id="load">Load</button> <label><input id="auto" type="checkbox" checked> refresh every 3 s</label>
 <span id="status"></span></p>
<div id="tables"></div>
<script>
const cols = ["job_id","function","args","status","tries","enqueue_time","start_time","finish_time","error"];
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("vidwizAdminToken") || "";
function cell(value) {
  const td = document.createElement("td");
  const code = document.createElement("code");
  code.textContent =
    value === null || value === undefined ? "" : (typeof value === "string" ? value : JSON.stringify(value));
  td.appendChild(code);
  return td;
}
function table(title, rows) {
  const wrap = document.createElement("section");
  const h = document.createElement("h2");
  h.textContent = `${title} (${rows.length})`;
  wrap.appendChild(h);
  const t = document.createElement("table");
  const head = t.insertRow();
  for (const c of cols) { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); }
  for (const r of rows) {
    const tr = t.insertRow();
    if (r.status === "failed") tr.className = "failed";
    for (const c of cols) tr.appendChild(cell(r[c]));
  }
  wrap.appendChild(t);
  return wrap;
}
async function load() {
  sessionStorage.setItem("vidwizAdminToken", tokenInput.value);
  const status = document.getElementById("status");
  const resp = await fetch("/v2/internal/queue", {headers: {Authorization: "Bearer " + tokenInput.value}});
  const body = await resp.json();
  if (!resp.ok) { status.textContent = body.error ? body.error.message : resp.status; return; }
  status.textContent = "updated " + new Date().toLocaleTimeString();
  document.getElementById("queue").textContent = body.queue + " (" + body.queued_total + " in queue)";
  const tables = document.getElementById("tables");
  tables.replaceChildren(table("In progress", body.in_progress), table("Queued", body.queued),
                         table("Recent results", body.results));
}
document.getElementById("load").onclick = load;
setInterval(() => { if (document.getElementById("auto").checked && tokenInput.value) load(); }, 3000);
if (tokenInput.value) load();
</script>
</body></html>
"""
