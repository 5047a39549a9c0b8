"""Alembic migrations on empty SQLite and PostgreSQL databases: upgrade, idempotence,
downgrade and re-upgrade, agreement with the models, and adopting an old-system database."""
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
    assert asyncio.run(_query(db_url, "SELECT version_num FROM alembic_version")) == [("0002_rewrite_additions",)]
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
