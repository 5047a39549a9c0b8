"""Operators' endpoints: liveness, readiness, and the Prometheus scrape."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from vidwiz import metrics
from vidwiz.auth.guards import require_admin
from vidwiz.context import ENGINE, REDIS, SESSIONS, SETTINGS
from vidwiz.middleware import error_response
from vidwiz.system.metrics import database_families
from vidwiz.system.openapi import HealthSchema, ReadySchema, operation

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


@routes.get("/health")
@operation("Liveness: the process answers", "system", responses={200: HealthSchema})
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/ready")
@operation(
    "Readiness: the database and Redis answer",
    "system",
    responses={200: ReadySchema, 503: "Not ready: `details.down` lists what is unreachable (SERVICE_UNAVAILABLE)"},
)
async def ready(request: web.Request) -> web.Response:
    """Ready when the database and Redis both answer; 503 names what is down."""
    down = []
    try:
        async with request.app[ENGINE].connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        log.warning("readiness: database unreachable", exc_info=True)
        down.append("database")
    try:
        await request.app[REDIS].ping()
    except Exception:
        log.warning("readiness: redis unreachable", exc_info=True)
        down.append("redis")
    if down:
        return error_response(503, "SERVICE_UNAVAILABLE", f"Not ready: {', '.join(down)} unreachable", {"down": down})
    fingerprint = request.app[SETTINGS].fingerprint
    return web.json_response({"status": "ready", "database": "ok", "redis": "ok", "fingerprint": fingerprint})


@routes.get("/metrics")
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
    body = await asyncio.to_thread(metrics.exposition, families)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
