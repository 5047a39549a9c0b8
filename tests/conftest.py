"""Shared fixtures: every app test runs on the fast path (SQLite + fakeredis) and the real
path (PostgreSQL + Redis), each test in a fresh database/schema and Redis key prefix.

VIDWIZ_TEST_BACKENDS=sqlite (or postgres) narrows the matrix for quick local runs.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from config import load_settings
from vidwiz.app import create_app
from vidwiz.db import create_engine
from vidwiz.models import Base

PG_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = [b.strip() for b in os.environ.get("VIDWIZ_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()]

SECRET_KEY = "test-secret-key-0123456789abcdef0123456789"
ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def test_id() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def env(backend, tmp_path, test_id) -> dict[str, str]:
    """Environment for this test; tests may add keys before `settings` is built."""
    values = {
        "ENVIRONMENT": "test",
        "SECRET_KEY": SECRET_KEY,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DATA_DIR": str(tmp_path / "data"),
        "TRANSCRIPT_DIR": str(tmp_path / "transcripts"),
        "REDIS_KEY_PREFIX": f"test:{test_id}:",
        "DB_URL": f"sqlite:///{tmp_path}/vidwiz.db" if backend == "sqlite" else PG_URL,
    }
    if backend == "postgres":
        values["REDIS_URL"] = REDIS_URL
    return values


@pytest.fixture
def settings(env):
    return load_settings(env, env_file=None)


@pytest.fixture
async def engine(backend, settings, test_id):
    """A fresh SQLite file, or a fresh PostgreSQL schema, with every table created."""
    if backend == "sqlite":
        eng = create_engine(settings)
        async with eng.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield eng
        await eng.dispose()
        return
    schema = f"t_{test_id}"
    admin = create_async_engine(settings.async_db_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = create_engine(settings, search_path=schema)
    async with eng.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield eng
    await eng.dispose()
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await admin.dispose()


@pytest.fixture
async def redis(backend, settings):
    if backend == "sqlite":
        client = fakeredis.aioredis.FakeRedis()
        yield client
        await client.aclose()
        return
    client = aioredis.from_url(REDIS_URL)
    yield client
    # arq keeps job bodies under global keys (arq:job:<id>, for a day): drop this test's.
    queued = await client.zrange(f"{settings.redis_key_prefix}arq:queue", 0, -1)
    if queued:
        await client.delete(*[b"arq:job:" + job_id for job_id in queued])
    keys = [k async for k in client.scan_iter(match=f"{settings.redis_key_prefix}*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def app(settings, engine, redis):
    return create_app(settings, redis=redis, engine=engine)


@pytest.fixture
async def client(aiohttp_client, app):
    return await aiohttp_client(app)


@pytest.fixture
def sessions(client):
    """The app's session factory (after start-up), for arranging and checking rows directly."""
    from vidwiz.context import SESSIONS

    return client.app[SESSIONS]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = auth(ADMIN_TOKEN)


@pytest.fixture
def make_user(client):
    """Register and log in a user; returns (token, user_id)."""
    counter = {"n": 0}

    async def _make(
        email: str | None = None, password: str = "password123", name: str = "Test User"
    ) -> tuple[str, int]:
        counter["n"] += 1
        email = email or f"user{counter['n']}-{uuid.uuid4().hex[:6]}@example.com"
        resp = await client.post("/v2/auth/register", json={"email": email, "password": password, "name": name})
        assert resp.status == 201, await resp.text()
        resp = await client.post("/v2/auth/login", json={"email": email, "password": password})
        assert resp.status == 200, await resp.text()
        token = (await resp.json())["token"]
        me = await client.get("/v2/users/me", headers=auth(token))
        return token, (await me.json())["id"]

    return _make


async def add_note(client, token, video_id, **body):
    """Create a note through the API (which also upserts the video and schedules its tasks)."""
    resp = await client.post(f"/v2/videos/{video_id}/notes", json={"timestamp": "0:01", **body}, headers=auth(token))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def add_conversation(client, headers, video_id):
    """Start a Wiz conversation the way the web client does (creates the video when new)."""
    resp = await client.post("/v2/conversations", json={"video_id": video_id}, headers=headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def set_video(sessions, video_id, **values):
    """Arrange a video row directly (e.g. transcript_available, summary)."""
    from sqlalchemy import update

    from vidwiz.videos.models import Video

    async with sessions() as session:
        await session.execute(update(Video).where(Video.video_id == video_id).values(**values))
        await session.commit()


def assert_error(body: Any, code: str, message: str | None = None) -> None:
    """The error envelope of docs/api.md §1.2."""
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    if message is not None:
        assert body["error"]["message"] == message, body
