"""The application factory: routes, middlewares and resources tied to the app's lifetime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from arq.connections import ArqRedis
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from vidwiz.auth.google import GoogleVerifier
from vidwiz.context import CHAT_MODEL, ENGINE, GOOGLE, HTTP, KEYS, REDIS, SESSIONS, SETTINGS, TRANSCRIPTS
from vidwiz.db import create_engine, create_session_factory
from vidwiz.errors import error_middleware, error_response
from vidwiz.events import RedisKeys
from vidwiz.internal.longpoll import stop_task_waiters, task_wakeups_ctx
from vidwiz.llm import open_chat_model
from vidwiz.metrics import count_open_streams, metrics_handler, metrics_middleware, zero_web_series
from vidwiz.middleware import cors_middleware, request_id_middleware, security_headers
from vidwiz.openapi import HealthSchema, ReadySchema, operation, setup_docs
from vidwiz.storage import open_transcript_store
from vidwiz.videos.hub import end_readiness_streams, readiness_hub_context

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, redis: Redis | None = None, engine: AsyncEngine | None = None) -> web.Application:
    """Build the /v2 app. `redis`/`engine` may be injected (tests pass fakeredis / a per-test schema)."""
    app = web.Application(
        middlewares=[metrics_middleware, request_id_middleware, cors_middleware, error_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[KEYS] = RedisKeys(settings.redis_key_prefix)
    app.cleanup_ctx.append(_database(engine))
    app.cleanup_ctx.append(_redis(redis))
    app.cleanup_ctx.append(task_wakeups_ctx)
    app.on_shutdown.append(stop_task_waiters)
    app.cleanup_ctx.append(readiness_hub_context)
    app.on_shutdown.append(end_readiness_streams)
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(_transcripts)
    app.cleanup_ctx.append(_chat_model)
    app.on_response_prepare.append(security_headers)
    app.on_response_prepare.append(count_open_streams)
    app.on_startup.append(zero_web_series)
    _add_routes(app)
    return app


def _add_routes(app: web.Application) -> None:
    from vidwiz.auth.routes import routes as auth_routes
    from vidwiz.conversations.routes import routes as conversation_routes
    from vidwiz.internal.queue import routes as queue_routes
    from vidwiz.internal.routes import routes as internal_routes
    from vidwiz.notes.routes import routes as note_routes
    from vidwiz.videos.routes import routes as video_routes
    from vidwiz.videos.stream import routes as stream_routes

    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_handler)
    for table in (
        auth_routes,
        video_routes,
        stream_routes,
        note_routes,
        conversation_routes,
        internal_routes,
        queue_routes,
    ):
        app.add_routes(table)
    setup_docs(app)


def _database(engine: AsyncEngine | None):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        owned = engine is None
        app[ENGINE] = engine or create_engine(app[SETTINGS])
        app[SESSIONS] = create_session_factory(app[ENGINE])
        yield
        if owned:
            await app[ENGINE].dispose()

    return ctx


def _redis(redis: Redis | None):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        if redis is not None:
            client = ArqRedis(connection_pool=redis.connection_pool)
        else:
            url = settings.redis_url or "redis://127.0.0.1:6379/0"
            client = ArqRedis.from_url(url, socket_connect_timeout=2, health_check_interval=30)
        app[REDIS] = client
        yield
        if redis is None:
            await client.aclose()

    return ctx


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    """One outbound HTTP session per process (Google certificates, and other HTTP peers)."""
    settings = app[SETTINGS]
    async with aiohttp.ClientSession() as session:
        app[HTTP] = session
        app[GOOGLE] = (
            GoogleVerifier(settings.google_client_id, settings.google_certs_url, session)
            if settings.google_client_id
            else None
        )
        yield


async def _chat_model(app: web.Application) -> AsyncIterator[None]:
    """The Wiz chat LLM client (None when no provider is configured)."""
    async with open_chat_model(app[SETTINGS]) as chat_model:
        app[CHAT_MODEL] = chat_model
        yield


async def _transcripts(app: web.Application) -> AsyncIterator[None]:
    async with open_transcript_store(app[SETTINGS]) as store:
        app[TRANSCRIPTS] = store
        yield


@operation("Liveness: the process answers", "system", responses={200: HealthSchema})
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


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
    return web.json_response({"status": "ready", "database": "ok", "redis": "ok"})
