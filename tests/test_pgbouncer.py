"""PostgreSQL behind PgBouncer in transaction pooling mode (issue 13): with DB_POOLER=pgbouncer the
migrations and the API run through a real PgBouncer whose two server connections every client
transaction shares; without it, asyncpg's prepared statements break there."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from config import load_settings
from tests.conftest import ADMIN, ADMIN_TOKEN, REDIS_URL, SECRET_KEY, auth
from tests.supervised_tree import ROOT, drop_keys, next_frame
from vidwiz.app import create_app
from vidwiz.db import create_engine


def pooled_env(db_url: str, pooler: str, **more: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "test",
        "SECRET_KEY": SECRET_KEY,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DB_URL": db_url,
        "DB_POOLER": pooler,
        "DB_POOL_SIZE": "4",
        "DB_MAX_OVERFLOW": "4",
        **more,
    }


async def reuse_a_statement_on_another_server_connection(db_url: str, pooler: str) -> None:
    """Connection B runs a query on one server connection, then again on another: PgBouncer
    reuses the most recently released server connection first (LIFO), here A's."""
    engine = create_engine(load_settings(pooled_env(db_url, pooler), env_file=None))
    query = text("SELECT count(*) FROM pg_class WHERE relpages >= :n")
    try:
        async with engine.connect() as a, engine.connect() as b:
            await a.execute(text("SELECT 1"))  # A's transaction holds one server connection
            await b.execute(query, {"n": 0})  # B's runs on the other one
            await b.commit()
            await a.commit()  # released last: the next transaction gets A's server connection
            await b.execute(query, {"n": 1})
            await b.commit()
    finally:
        await engine.dispose()


def test_each_process_pools_db_pool_size_plus_db_max_overflow_connections():
    settings = load_settings(pooled_env("postgresql://u@db.invalid/vidwiz", "none", DB_MAX_OVERFLOW="7"), env_file=None)
    pool = create_engine(settings).pool
    assert (pool.size(), pool._max_overflow) == (4, 7)  # type: ignore[attr-defined]  # no public reader


async def test_prepared_statements_break_behind_pgbouncer_unless_db_pooler_says_so(pgbouncer_url):
    with pytest.raises(DBAPIError, match="prepared statement .* does not exist"):
        await reuse_a_statement_on_another_server_connection(pgbouncer_url, "none")
    await reuse_a_statement_on_another_server_connection(pgbouncer_url, "pgbouncer")


async def user_journey(client, video_id: str, streams_open: asyncio.Barrier) -> None:
    """register, login, a note's life, the video list, and a readiness stream that sees the
    video's tasks (created by the note) completed by a worker."""
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    resp = await client.post("/v2/auth/register", json={"email": email, "password": "password123", "name": "Pooled"})
    assert resp.status == 201, await resp.text()
    resp = await client.post("/v2/auth/login", json={"email": email, "password": "password123"})
    assert resp.status == 200, await resp.text()
    user = auth((await resp.json())["token"])

    resp = await client.post(f"/v2/videos/{video_id}/notes", json={"text": "first", "timestamp": "0:01"}, headers=user)
    assert resp.status == 201, await resp.text()
    note = await resp.json()
    resp = await client.patch(f"/v2/notes/{note['id']}", json={"text": "edited"}, headers=user)
    assert resp.status == 200 and (await resp.json())["text"] == "edited"
    resp = await client.get(f"/v2/videos/{video_id}/notes", headers=user)
    assert [n["text"] for n in await resp.json()] == ["edited"]
    resp = await client.get("/v2/videos", headers=user)
    assert [v["video_id"] for v in (await resp.json())["videos"]] == [video_id]

    stream = await client.get(f"/v2/videos/{video_id}/stream", headers=user)
    assert stream.status == 200
    await streams_open.wait()  # the worker starts once every stream is open
    video = (await next_frame(stream, ("update", "done")))["video"]
    while not (video["transcript_available"] and video["metadata"]):
        video = (await next_frame(stream, ("update", "done")))["video"]
    assert video["video_id"] == video_id and video["metadata"]["title"] == f"About {video_id}"
    stream.close()

    resp = await client.delete(f"/v2/notes/{note['id']}", headers=user)
    assert resp.status == 200, await resp.text()


async def worker(client, tasks: int, streams_open: asyncio.Barrier) -> list[int]:
    """Claims and completes `tasks` tasks of each type, as a transcript/metadata worker does."""
    await streams_open.wait()
    done = []
    for kind, result in (
        ("metadata", lambda video_id: {"metadata": {"id": video_id, "title": f"About {video_id}"}}),
        ("transcript", lambda video_id: {"transcript": [{"text": "hello", "offset": 0.0, "duration": 1.0}]}),
    ):
        for _ in range(tasks):
            resp = await client.get("/v2/internal/tasks", params={"type": kind, "timeout": "5"}, headers=ADMIN)
            assert resp.status == 200, f"no {kind} task left"
            task = await resp.json()
            video_id = task["task_details"]["video_id"]
            body: dict[str, Any] = {"video_id": video_id, "success": True, **result(video_id)}
            resp = await client.post(f"/v2/internal/tasks/{task['task_id']}/result", json=body, headers=ADMIN)
            assert (await resp.json())["status"] == "completed"
            done.append(task["task_id"])
    return done


async def migrate(env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alembic",
        "-c",
        str(ROOT / "alembic.ini"),
        "upgrade",
        "head",
        env={**os.environ, **env},
        cwd=ROOT,
    )
    assert await asyncio.wait_for(process.wait(), 60) == 0


async def test_migrations_and_the_api_through_pgbouncer(aiohttp_client, pgbouncer_url):
    prefix = f"test:{os.urandom(6).hex()}:"
    env = pooled_env(pgbouncer_url, "pgbouncer", REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=prefix)
    await migrate(env)
    client = await aiohttp_client(create_app(load_settings(env, env_file=None)))
    users = 4
    streams_open = asyncio.Barrier(users + 1)
    try:
        *_, done = await asyncio.gather(
            *(user_journey(client, f"pgbouncer{n:02d}", streams_open) for n in range(users)),
            worker(client, users, streams_open),
        )
        assert len(set(done)) == 2 * users  # no task handed out twice
        resp = await client.get("/ready")
        assert resp.status == 200
    finally:
        await drop_keys(prefix)


async def test_concurrent_claims_through_pgbouncer(aiohttp_client, pgbouncer_url):
    """Pollers claiming at once: each claim's prepare and execute must stay on one server
    connection (a claim outside a transaction lost its statement to another one: 500)."""
    prefix = f"test:{os.urandom(6).hex()}:"
    env = pooled_env(pgbouncer_url, "pgbouncer", REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=prefix)
    await migrate(env)
    client = await aiohttp_client(create_app(load_settings(env, env_file=None)))
    try:
        resp = await client.post(
            "/v2/auth/register", json={"email": "c@example.com", "password": "password123", "name": "Claims"}
        )
        assert resp.status == 201, await resp.text()
        resp = await client.post("/v2/auth/login", json={"email": "c@example.com", "password": "password123"})
        user = auth((await resp.json())["token"])
        videos = [f"claimsvid{n:02d}" for n in range(12)]
        for video_id in videos:
            resp = await client.post(
                f"/v2/videos/{video_id}/notes", json={"text": "x", "timestamp": "0:01"}, headers=user
            )
            assert resp.status == 201, await resp.text()

        async def poller() -> list[str]:
            claimed = []
            while True:
                resp = await client.get(
                    "/v2/internal/tasks", params={"type": "transcript", "timeout": "1"}, headers=ADMIN
                )
                assert resp.status in (200, 204), await resp.text()
                if resp.status == 204:
                    return claimed
                claimed.append((await resp.json())["task_details"]["video_id"])

        claims = [video for batch in await asyncio.gather(*(poller() for _ in range(8))) for video in batch]
        assert sorted(claims) == videos  # every task once, none twice, no error
    finally:
        await drop_keys(prefix)
