"""Alembic migrations on empty SQLite and PostgreSQL databases: upgrade, idempotence,
downgrade and re-upgrade, agreement with the models, adopting an old-system database, and
ids that are never reused (0003: SQLite tables recreated with AUTOINCREMENT, data kept)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from config.settings import to_async_db_url
from tests.conftest import BACKENDS, PG_URL
from vidwiz.models import Base

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield to_async_db_url(f"sqlite:///{tmp_path}/migrate.db")
        return
    name = f"mig_{uuid.uuid4().hex[:10]}"
    admin_url = to_async_db_url(PG_URL)
    asyncio.run(_pg_admin(admin_url, f'CREATE DATABASE "{name}"'))
    yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(_pg_admin(admin_url, f'DROP DATABASE "{name}" WITH (FORCE)'))


async def _pg_admin(url: str, sql: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


def _config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


async def _query(url: str, sql: str):
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        rows = (await conn.execute(text(sql))).all()
    await engine.dispose()
    return rows


async def _schema_diff(url: str):
    def diff(sync_conn):
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        # The partial expression index is DDL-only (not reflected as metadata): leave it out.
        return [d for d in compare_metadata(context, Base.metadata) if "uq_tasks_active_video" not in repr(d)]

    engine = create_async_engine(url)
    async with engine.connect() as conn:
        result = await conn.run_sync(diff)
    await engine.dispose()
    return result


def test_upgrade_is_idempotent_and_matches_models(db_url):
    cfg = _config(db_url)
    command.upgrade(cfg, "head")
    command.upgrade(cfg, "head")  # a second run is a no-op
    assert asyncio.run(_query(db_url, "SELECT version_num FROM alembic_version")) == [("0003_sqlite_ids_never_reused",)]
    assert asyncio.run(_schema_diff(db_url)) == []


def test_downgrade_then_upgrade_again(db_url):
    cfg = _config(db_url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    assert asyncio.run(_query(db_url, "SELECT count(*) FROM alembic_version")) == [(0,)]
    command.upgrade(cfg, "head")
    assert asyncio.run(_schema_diff(db_url)) == []


def test_adopting_an_old_database_cancels_duplicate_active_tasks(db_url):
    cfg = _config(db_url)
    command.upgrade(cfg, "0001_reference_schema")  # what the old system left behind
    insert = (
        "INSERT INTO tasks (task_type, status, task_details, retry_count) VALUES "
        "('fetch_transcript', 'PENDING', '{\"video_id\": \"abcdefghijk\"}', 0), "
        "('fetch_transcript', 'PENDING', '{\"video_id\": \"abcdefghijk\"}', 0), "
        "('fetch_metadata', 'PENDING', '{\"video_id\": \"abcdefghijk\"}', 0)"
    )
    asyncio.run(_pg_or_sqlite_exec(db_url, insert))
    command.upgrade(cfg, "head")
    rows = asyncio.run(_query(db_url, "SELECT id, task_type, status FROM tasks ORDER BY id"))
    assert [(r[1], str(r[2])) for r in rows] == [
        ("fetch_transcript", "PENDING"),
        ("fetch_transcript", "CANCELLED"),
        ("fetch_metadata", "PENDING"),
    ]


async def _pg_or_sqlite_exec(url: str, sql: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


# Rows the others refer to (each the first of its table: id 1), then one valid row per table.
ARRANGE = [
    "INSERT INTO users (email, name) VALUES ('a@example.com', 'A')",
    "INSERT INTO videos (video_id, title) VALUES ('abcdefghijk', 'T')",
    "INSERT INTO conversations (video_id, user_id) VALUES ('abcdefghijk', 1)",
]
ROWS = {
    "users": "INSERT INTO users (email) VALUES ('{n}@example.com')",
    "videos": "INSERT INTO videos (video_id) VALUES ('video{n:06d}')",
    "notes": "INSERT INTO notes (video_id, timestamp, text, user_id) VALUES ('abcdefghijk', '0:0{n}', 'n{n}', 1)",
    "conversations": "INSERT INTO conversations (video_id, guest_session_id) VALUES ('abcdefghijk', 'g{n}')",
    "messages": "INSERT INTO messages (conversation_id, role, content) VALUES (1, 'user', 'm{n}')",
    "tasks": "INSERT INTO tasks (task_type, status, task_details) VALUES ('t{n}', 'COMPLETED', '{{}}')",
    "outbox": "INSERT INTO outbox (note_id, body) VALUES (NULL, '{{}}')",
}


async def _run_all(url: str, *statements: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))
    await engine.dispose()


async def _max_id(url: str, table: str) -> int:
    return (await _query(url, f"SELECT max(id) FROM {table}"))[0][0]


def test_a_deleted_rows_id_is_never_reused(db_url):
    command.upgrade(_config(db_url), "head")
    asyncio.run(_run_all(db_url, *ARRANGE))
    for table, insert in ROWS.items():
        asyncio.run(_run_all(db_url, insert.format(n=1), insert.format(n=2)))
        deleted = asyncio.run(_max_id(db_url, table))
        asyncio.run(_run_all(db_url, f"DELETE FROM {table} WHERE id = {deleted}", insert.format(n=3)))
        assert asyncio.run(_max_id(db_url, table)) > deleted, table


def test_0003_keeps_data_indexes_and_foreign_keys(db_url):
    """Upgrading a database that has rows: every row and value stays, the partial unique
    index still refuses a second active task, and ids go on above what existed (and above
    the deleted notes the outbox still names)."""
    cfg = _config(db_url)
    command.upgrade(cfg, "0002_rewrite_additions")
    asyncio.run(
        _run_all(
            db_url,
            *ARRANGE,
            *(ROWS["notes"].format(n=n) for n in (1, 2, 3, 4)),
            "INSERT INTO outbox (note_id, body) VALUES (4, '{\"id\": 4}')",
            "DELETE FROM notes WHERE id = 4",  # its AI note was requested: a late PATCH may still come
            "INSERT INTO messages (conversation_id, role, content, metadata) "
            "VALUES (1, 'assistant', 'hi', '{\"k\": 1}')",
            "INSERT INTO tasks (task_type, status, task_details) VALUES "
            "('fetch_transcript', 'PENDING', '{\"video_id\": \"abcdefghijk\"}'), "
            "('fetch_metadata', 'FAILED', '{\"video_id\": \"abcdefghijk\"}')",
        )
    )
    tables = ("users", "videos", "notes", "conversations", "messages", "tasks", "outbox")
    before = {table: asyncio.run(_query(db_url, f"SELECT * FROM {table} ORDER BY id")) for table in tables}

    command.upgrade(cfg, "head")
    after = {table: asyncio.run(_query(db_url, f"SELECT * FROM {table} ORDER BY id")) for table in tables}
    assert after == before
    assert [str(status) for (status,) in asyncio.run(_query(db_url, "SELECT status FROM tasks ORDER BY id"))] == [
        "PENDING",
        "FAILED",
    ]
    assert asyncio.run(_schema_diff(db_url)) == []  # indexes, unique constraints, foreign keys
    with pytest.raises(IntegrityError):  # uq_tasks_active_video survived the copy
        asyncio.run(
            _run_all(
                db_url,
                "INSERT INTO tasks (task_type, status, task_details) VALUES "
                "('fetch_transcript', 'IN_PROGRESS', '{\"video_id\": \"abcdefghijk\"}')",
            )
        )
    asyncio.run(_run_all(db_url, ROWS["notes"].format(n=4)))
    assert asyncio.run(_max_id(db_url, "notes")) > 4
    if db_url.startswith("sqlite"):
        for table in tables:
            [(sql,)] = asyncio.run(
                _query(db_url, f"SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '{table}'")
            )
            assert "AUTOINCREMENT" in sql, sql
        assert asyncio.run(_query(db_url, "PRAGMA foreign_key_list(notes)"))[0][2:5] == (
            "videos",
            "video_id",
            "video_id",
        )
        assert asyncio.run(_query(db_url, "PRAGMA foreign_key_list(messages)"))[0][2:5] == (
            "conversations",
            "conversation_id",
            "id",
        )
