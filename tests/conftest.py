"""Shared fixtures and helpers: every app test runs on the fast path (SQLite + fakeredis) and the
real path (PostgreSQL + Redis), each test in a fresh database/schema and Redis key prefix.

VIDWIZ_TEST_BACKENDS=sqlite (or postgres) narrows the matrix for quick local runs.

What a test module finds here (it never imports another test module):
- the app: `settings` (from `env`, which a module may extend), `client`, `sessions`,
  `make_client(**setting_overrides)` for an app with other settings;
- `factory`: users, videos, notes, conversations, tasks and outbox rows (`db_factory`: rows only);
- `actor_ctx` / `make_actor_ctx`: an actor job's ctx over the test app's own resources;
- `db_sessions`, `units`: the database and units of work without any HTTP (service tests);
- `eventually()`: the one way to wait for something that happens asynchronously;
- the fixtures of the support modules (registered below): `llm_standin` (tests/standins.py),
  `moto_endpoint`, `sqs`, `sqs_queue_url` (tests/moto.py), `google_certs` (tests/google_certs.py),
  `actor_worker`, `job_log_levels` (tests/actor_worker.py), `fresh_pg_url`, `pgbouncer_url`,
  `sentinel_redis` (tests/fleet_support.py),
  `fleet_network` (tests/fleet.py: hosts as network namespaces sharing PostgreSQL and Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import create_async_engine

from actors.resources import open_resources
from config import load_settings
from vidwiz.app import create_app
from vidwiz.context import KEYS, REDIS, SESSIONS, SETTINGS, TRANSCRIPTS
from vidwiz.db import create_engine, create_session_factory, utcnow
from vidwiz.events import RedisKeys
from vidwiz.models import Base, Message, Note, OutboxMessage, Task, TaskStatus, User, Video
from vidwiz.notes.models import AI_NOTE
from vidwiz.tasks.service import FETCH_TRANSCRIPT, ensure_task
from vidwiz.unit_of_work import Dispatcher, UnitsOfWork

pytest_plugins = [
    "tests.standins",
    "tests.moto",
    "tests.google_certs",
    "tests.actor_worker",
    "tests.fleet_support",
    "tests.fleet",
]

PG_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = [b.strip() for b in os.environ.get("VIDWIZ_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()]

SECRET_KEY = "test-secret-key-0123456789abcdef0123456789"
ADMIN_TOKEN = "test-admin-token"
# Upper bound for anything that should happen "now": only reached when something is broken.
WAIT = 20.0


# -- the backend matrix -------------------------------------------------------------------------


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


# -- the app ------------------------------------------------------------------------------------


@pytest.fixture
def app(settings, engine, redis):
    return create_app(settings, redis=redis, engine=engine)


@pytest.fixture
async def client(aiohttp_client, app):
    return await aiohttp_client(app)


@pytest.fixture
def sessions(client):
    """The app's session factory (after start-up), for arranging and checking rows directly."""
    return client.app[SESSIONS]


@pytest.fixture
def make_client(aiohttp_client, settings, engine, redis):
    """`await make_client(environment="staging")`: a test client of an app whose settings differ
    from `settings` by the given fields, on this test's database and Redis (`redis=` and
    `engine=` replace those, e.g. with one that is down)."""

    async def make(*, redis=redis, engine=engine, **overrides: Any):
        changed = dataclasses.replace(settings, **overrides)
        return await aiohttp_client(create_app(changed, redis=redis, engine=engine))

    return make


# -- without HTTP: services and units of work ------------------------------------------------------


@pytest.fixture
def db_sessions(engine):
    """A session factory on this test's database, with no app started (service-level tests)."""
    return create_session_factory(engine)


@pytest.fixture
def arq_redis(redis) -> ArqRedis:
    """This test's Redis as the app and the actors use it (arq's client, same connections)."""
    return ArqRedis(connection_pool=redis.connection_pool)


@pytest.fixture
def units(db_sessions, arq_redis, settings) -> UnitsOfWork:
    """Units of work on this test's database and Redis, as an actor process builds them."""
    return UnitsOfWork(db_sessions, Dispatcher(arq_redis, RedisKeys(settings.redis_key_prefix)))


# -- actors ---------------------------------------------------------------------------------------


@pytest.fixture
async def make_actor_ctx(client):
    """`await make_actor_ctx(**setting_overrides)`: an actor job's ctx as the worker's start-up
    builds it (actors/resources.py), over the test app's settings, database, Redis and transcript
    store. The chat model and the AI-note delivery follow the settings (SQS when its queue is
    set, else the built-in writer with an LLM provider, else none)."""
    app = client.app
    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> dict[str, Any]:
            changed = dataclasses.replace(app[SETTINGS], **{"actor_job_timeout": 10.0, **overrides})
            resources = await stack.enter_async_context(
                open_resources(changed, app[REDIS], sessions=app[SESSIONS], transcripts=app[TRANSCRIPTS])
            )
            return {"resources": resources}

        yield make


@pytest.fixture
async def actor_ctx(make_actor_ctx) -> dict[str, Any]:
    """The ctx an actor job gets, made of the test app's resources (no worker process needed)."""
    return await make_actor_ctx()


def with_resources(ctx: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of an actor ctx whose resources differ, e.g. `delivery=None` or `chat_model=None`."""
    return {**ctx, "resources": dataclasses.replace(ctx["resources"], **changes)}


# -- waiting --------------------------------------------------------------------------------------


async def eventually(
    condition: Callable[[], Any],
    what: str,
    *,
    timeout: float = WAIT,
    interval: float = 0.02,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Wait until `condition()` (plain or async) returns something truthy, and return it.

    For what the code under test reaches asynchronously: never a fixed sleep, never a timing
    assertion. After `timeout` seconds the test fails saying what it waited for (and what
    `explain()` returns, e.g. the tail of a process's log)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() >= deadline:
            message = f"gave up after {timeout:g} s waiting for: {what}"
            if explain is not None:
                message += f"\n{explain()}"
            raise AssertionError(message)
        await asyncio.sleep(interval)


# -- HTTP helpers ---------------------------------------------------------------------------------


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = auth(ADMIN_TOKEN)


def assert_error(body: Any, code: str, message: str | None = None) -> None:
    """The error envelope of docs/api.md §1.2."""
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    if message is not None:
        assert body["error"]["message"] == message, body


def closed_port() -> int:
    """A local TCP port nothing listens on (a Redis or an HTTP peer that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def queued_jobs(app) -> list:
    """The jobs waiting in this deployment's arq queue (arq's JobDef: function, args, job_id)."""
    return await app[REDIS].queued_jobs(queue_name=app[KEYS].arq_queue)


async def poll_task(client, kind: str = "transcript", timeout: int = 1):
    """A worker's long-poll of GET /v2/internal/tasks (the response)."""
    return await client.get("/v2/internal/tasks", params={"type": kind, "timeout": str(timeout)}, headers=ADMIN)


async def claim_task(client, kind: str = "transcript") -> dict:
    """Claim the next task of a kind as a worker does; its JSON."""
    resp = await poll_task(client, kind)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def submit_result(client, task_id, body):
    return await client.post(f"/v2/internal/tasks/{task_id}/result", json=body, headers=ADMIN)


async def send_message(client, conversation_id: int, message, headers):
    """POST a Wiz chat message; returns (response, SSE data frames or parsed JSON body)."""
    from tests.standins import parse_sse  # imported once pytest_plugins has registered it

    resp = await client.post(
        f"/v2/conversations/{conversation_id}/messages", json={"message": message}, headers=headers
    )
    body = await resp.text()
    if resp.headers.get("Content-Type", "").startswith("text/event-stream"):
        return resp, parse_sse(body)
    return resp, json.loads(body)


# -- rows -----------------------------------------------------------------------------------------


async def messages_of(sessions, conversation_id: int) -> list[Message]:
    async with sessions() as session:
        result = await session.scalars(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
        )
        return list(result)


async def outbox_rows(sessions) -> list[OutboxMessage]:
    async with sessions() as session:
        return list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


async def make_outbox_due(sessions) -> None:
    """Every outbox row due now (as if its backoff or lease had run out)."""
    async with sessions() as session:
        await session.execute(update(OutboxMessage).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        await session.commit()


class Factory:
    """The one way tests make users, videos, notes, conversations, tasks and outbox rows: through
    the API where the API's side effects matter (tasks scheduled, outbox rows written), as rows
    otherwise. `db_factory` makes rows only (no app, no HTTP)."""

    def __init__(self, sessions, client=None) -> None:
        self.sessions = sessions
        self._client = client
        self._users = 0

    @property
    def client(self):
        assert self._client is not None, "through the API: use the `factory` fixture, not `db_factory`"
        return self._client

    def on(self, client) -> Factory:
        """The same factory for another test client's app (one `make_client` built)."""
        return Factory(client.app[SESSIONS], client)

    # -- users

    async def user(
        self, email: str | None = None, password: str = "password123", name: str = "Test User"
    ) -> tuple[str, int]:
        """Register and log in a user; returns (token, user_id)."""
        self._users += 1
        email = email or f"user{self._users}-{uuid.uuid4().hex[:6]}@example.com"
        resp = await self.client.post("/v2/auth/register", json={"email": email, "password": password, "name": name})
        assert resp.status == 201, await resp.text()
        resp = await self.client.post("/v2/auth/login", json={"email": email, "password": password})
        assert resp.status == 200, await resp.text()
        token = (await resp.json())["token"]
        me = await self.client.get("/v2/users/me", headers=auth(token))
        return token, (await me.json())["id"]

    async def user_row(self, email: str | None = None, **fields: Any) -> int:
        """A user row as given (no password unless `password_hash` is), its id."""
        async with self.sessions() as session:
            user = User(email=email or f"{uuid.uuid4().hex}@example.com", **fields)
            session.add(user)
            await session.commit()
            return user.id

    async def enable_ai_notes(self, token: str) -> None:
        resp = await self.client.patch("/v2/users/me", json={"ai_notes_enabled": True}, headers=auth(token))
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["ai_notes_enabled"] is True

    # -- videos

    async def video(self, video_id: str, **fields: Any) -> None:
        """A video row (no tasks scheduled)."""
        async with self.sessions() as session:
            session.add(Video(video_id=video_id, **fields))
            await session.commit()

    async def set_video(self, video_id: str, **values: Any) -> None:
        """Change a video row directly (nothing published, no job enqueued)."""
        async with self.sessions() as session:
            await session.execute(update(Video).where(Video.video_id == video_id).values(**values))
            await session.commit()

    async def transcript(self, video_id: str, transcript: list[dict[str, Any]]) -> None:
        """Store a transcript and mark the (existing) video's transcript available, directly."""
        await self.client.app[TRANSCRIPTS].save(video_id, transcript)
        await self.set_video(video_id, transcript_available=True)

    # -- notes

    async def note(self, token: str, video_id: str, **body: Any) -> dict:
        """Create a note through the API (which also upserts the video and schedules its tasks)."""
        resp = await self.client.post(
            f"/v2/videos/{video_id}/notes", json={"timestamp": "0:01", **body}, headers=auth(token)
        )
        assert resp.status == 201, await resp.text()
        return await resp.json()

    async def note_row(self, user_id: int, video_id: str, text: str | None = None, timestamp: str = "0:01") -> int:
        """A note row (its video row too when missing), no tasks nor outbox row; its id."""
        async with self.sessions() as session:
            if await session.scalar(select(Video.id).where(Video.video_id == video_id)) is None:
                session.add(Video(video_id=video_id))
                await session.flush()
            note = Note(video_id=video_id, timestamp=timestamp, text=text, user_id=user_id)
            session.add(note)
            await session.commit()
            return note.id

    async def read_note(self, note_id: int) -> Note | None:
        async with self.sessions() as session:
            return await session.get(Note, note_id)

    # -- conversations

    async def conversation(self, headers: dict[str, str], video_id: str) -> dict:
        """Start a Wiz conversation the way the web client does (creates the video when new)."""
        resp = await self.client.post("/v2/conversations", json={"video_id": video_id}, headers=headers)
        assert resp.status == 201, await resp.text()
        return await resp.json()

    async def ready_conversation(self, headers: dict[str, str], video_id: str, transcript: list[dict[str, Any]]) -> int:
        """A conversation on a video whose transcript is there (the chat can answer); its id."""
        conversation = await self.conversation(headers, video_id)
        await self.transcript(video_id, transcript)
        return conversation["id"]

    # -- tasks

    async def task(self, video_id: str, task_type: str = FETCH_TRANSCRIPT, **values: Any) -> int:
        """A pending task (the scheduler's insert), then changed by `values` (e.g. a status); its id."""
        async with self.sessions() as session:
            assert await ensure_task(session, task_type, video_id)
            task_id = await session.scalar(
                select(Task.id)
                .where(Task.task_type == task_type, Task.status == TaskStatus.PENDING)
                .order_by(Task.id.desc())
            )
            if values:
                await session.execute(update(Task).where(Task.id == task_id).values(**values))
            await session.commit()
            return task_id

    async def get_task(self, task_id: int) -> Task:
        async with self.sessions() as session:
            return await session.get(Task, task_id)

    # -- the outbox

    async def outbox_row(self, note_id: int = 1, *, due_in: float = -1.0, **values: Any) -> int:
        """An AI-note request due `due_in` seconds from now (negative: already due), with other
        columns as given; its id (no note row behind it)."""
        async with self.sessions() as session:
            row = OutboxMessage(
                kind=values.pop("kind", AI_NOTE),
                note_id=note_id,
                body=values.pop("body", {"id": note_id}),
                next_attempt_at=utcnow() + timedelta(seconds=due_in),
                **values,
            )
            session.add(row)
            await session.commit()
            return row.id

    async def outbox_rows(self, count: int, video_id: str) -> list[int]:
        """`count` due AI-note requests for notes 1000, 1001, … of a video with its transcript."""
        async with self.sessions() as session:
            if await session.scalar(select(Video).where(Video.video_id == video_id)) is None:
                session.add(Video(video_id=video_id, transcript_available=True))
                await session.commit()
        return [
            await self.outbox_row(
                1000 + i, body={"id": 1000 + i, "video_id": video_id, "timestamp": f"0:{i:02d}", "user_id": 7}
            )
            for i in range(count)
        ]


@pytest.fixture
def factory(client) -> Factory:
    return Factory(client.app[SESSIONS], client)


@pytest.fixture
def db_factory(db_sessions) -> Factory:
    """The factory's rows without an app (service-level tests)."""
    return Factory(db_sessions)
