"""The application factory: routes, middlewares and resources tied to the app's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from arq.connections import ArqRedis
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from vidwiz.auth.google import GoogleVerifier
from vidwiz.context import (
    CHAT_MODEL,
    ENGINE,
    GOOGLE,
    HTTP,
    HUB,
    KEYS,
    REDIS,
    SESSIONS,
    SETTINGS,
    SNAPSHOTS,
    TASK_WAKEUPS,
    TRANSCRIPTS,
    UNITS,
)
from vidwiz.db import create_engine, create_session_factory, open_write_sessions
from vidwiz.events import RedisKeys
from vidwiz.llm import open_chat_model
from vidwiz.middleware import cors_middleware, error_middleware, request_id_middleware, security_headers
from vidwiz.redis_connection import close_redis, open_redis
from vidwiz.storage import open_transcript_store
from vidwiz.system.metrics import count_open_streams, metrics_middleware, zero_web_series
from vidwiz.system.openapi import setup_docs
from vidwiz.tasks.wakeups import TaskWakeups
from vidwiz.unit_of_work import Dispatcher, UnitsOfWork
from vidwiz.videos.hub import ReadinessHub
from vidwiz.videos.snapshots import SnapshotReader


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
    app.cleanup_ctx.append(_units_of_work)
    app.cleanup_ctx.append(_task_wakeups)
    app.on_shutdown.append(_stop_task_waiters)
    app.cleanup_ctx.append(_readiness_hub)
    app.on_shutdown.append(_end_readiness_streams)
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
    from vidwiz.internal.routes import routes as internal_routes
    from vidwiz.notes.routes import routes as note_routes
    from vidwiz.system.queue import routes as queue_routes
    from vidwiz.system.routes import routes as system_routes
    from vidwiz.system.task_queue import routes as task_queue_routes
    from vidwiz.videos.routes import routes as video_routes
    from vidwiz.videos.stream import routes as stream_routes

    for table in (
        system_routes,
        auth_routes,
        video_routes,
        stream_routes,
        note_routes,
        conversation_routes,
        internal_routes,
        queue_routes,
        task_queue_routes,
    ):
        app.add_routes(table)
    setup_docs(app)


CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _database(engine: AsyncEngine | None) -> CleanupContext:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        owned = engine is None
        app[ENGINE] = engine or create_engine(app[SETTINGS])
        app[SESSIONS] = create_session_factory(app[ENGINE])
        yield
        if owned:
            await app[ENGINE].dispose()

    return ctx


def _redis(redis: Redis | None) -> CleanupContext:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        if redis is not None:
            client = ArqRedis(connection_pool=redis.connection_pool)
        else:
            client = open_redis(settings)
        app[REDIS] = client
        yield
        if redis is None:
            await close_redis(client)

    return ctx


async def _units_of_work(app: web.Application) -> AsyncIterator[None]:
    async with open_write_sessions(app[SESSIONS]) as writes:
        app[UNITS] = UnitsOfWork(app[SESSIONS], Dispatcher(app[REDIS], app[KEYS]), writes)
        yield


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


async def _task_wakeups(app: web.Application) -> AsyncIterator[None]:
    """The process's long-poll wake-up hub; its connection opens at the first poll."""
    app[TASK_WAKEUPS] = TaskWakeups(app[REDIS], app[KEYS], recheck_seconds=app[SETTINGS].task_recheck_seconds)
    yield
    await app[TASK_WAKEUPS].close()


async def _stop_task_waiters(app: web.Application) -> None:
    """on_shutdown: end waiting long-polls with 204 so a restart is not held up for a minute."""
    app[TASK_WAKEUPS].stop_waiting()


async def _readiness_hub(app: web.Application) -> AsyncIterator[None]:
    """The process's readiness hub, started after Redis and closed before it."""
    hub = ReadinessHub(app[REDIS], app[KEYS])
    hub.start()
    app[HUB] = hub
    app[SNAPSHOTS] = SnapshotReader(app[SESSIONS])
    yield
    await hub.close()
    await app[SNAPSHOTS].close()


async def _end_readiness_streams(app: web.Application) -> None:
    """on_shutdown: streams end now rather than holding the shutdown for up to 60 s."""
    hub = app.get(HUB)
    if hub is not None:
        hub.end_streams()
