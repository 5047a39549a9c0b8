"""Fixtures for fleet tests (issue 13): a fresh PostgreSQL database that several supervisor
trees share, as hosts of one deployment would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from config.settings import to_async_db_url
from tests.conftest import BACKENDS, PG_URL


async def pg_admin(sql: str) -> None:
    """One statement on the test server's maintenance connection (CREATE/DROP DATABASE)."""
    engine = create_async_engine(to_async_db_url(PG_URL), isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


@pytest.fixture
async def fresh_pg_url() -> AsyncIterator[str]:
    """DB_URL of a new, empty PostgreSQL database (dropped afterwards): nothing migrated yet."""
    if "postgres" not in BACKENDS:
        pytest.skip("needs PostgreSQL (VIDWIZ_TEST_BACKENDS excludes it)")
    name = f"fleet_{uuid.uuid4().hex[:10]}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    await pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)')
