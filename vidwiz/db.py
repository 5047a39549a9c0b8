"""Async engine, session factory and the declarative base shared by every domain."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import event
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry

from config import Settings


class Base(DeclarativeBase):
    pass


# Every table with a public id: SQLite must never hand a deleted row's id to a new row
# (a late write meant for the deleted one would land on it). PostgreSQL never does.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def utcnow() -> datetime:
    """Naive UTC: the tables store TIMESTAMP WITHOUT TIME ZONE holding UTC (docs/api.md D4)."""
    return datetime.now(UTC).replace(tzinfo=None)


def dialect_name(session: AsyncSession) -> str:
    """ "postgresql" or "sqlite": the few statements that differ (locking, upserts, JSON) ask this."""
    assert session.bind is not None, "sessions are made by create_session_factory"
    return session.bind.dialect.name


def rowcount(result: Result[*tuple[Any, ...]]) -> int:
    """The rows an INSERT, UPDATE or DELETE matched. Session.execute() answers a CursorResult for
    these (the only result with a row count), though it is annotated to return any Result."""
    return cast("CursorResult[*tuple[Any, ...]]", result).rowcount


def fits_int4(value: int) -> bool:
    """Ids are INTEGER columns: a larger id cannot exist (and must not reach the driver)."""
    return -(2**31) <= value < 2**31


def format_datetime(value: datetime | None) -> str | None:
    """docs/api.md §1.4 format, always rendered as UTC: 2025-01-31T09:23:17+0000."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S+0000")


# A rendered object's fields: the JSON key, or (JSON key, attribute) where they differ.
JsonFields = tuple[str | tuple[str, str], ...]


def as_json(row: object, fields: JsonFields) -> dict[str, Any]:
    """`row`'s fields as a JSON object, in order; datetimes in the API's format (§1.4)."""
    rendered: dict[str, Any] = {}
    for field in fields:
        key, attribute = field if isinstance(field, tuple) else (field, field)
        value = getattr(row, attribute)
        rendered[key] = format_datetime(value) if isinstance(value, datetime) else value
    return rendered


# Hosts of a fleet start at once: the first to take this lock migrates (migrations/env.py), the
# others wait for its commit and then find `head`. Advisory locks are per database.
MIGRATION_LOCK_KEY = 0x76696477697A  # "vidwiz"


def create_engine(settings: Settings, *, search_path: str | None = None) -> AsyncEngine:
    url = settings.async_db_url
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _tune_sqlite(engine)
        return engine
    connect_args = postgres_connect_args(settings)
    if search_path:
        connect_args["server_settings"] = {"search_path": search_path}
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        connect_args=connect_args,
    )


def postgres_connect_args(settings: Settings) -> dict[str, Any]:
    """asyncpg's connect arguments for DB_POOLER (the migrations' engine needs them too)."""
    return dict(_TRANSACTION_POOLER_ARGS) if settings.db_pooler == "pgbouncer" else {}


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


# Behind a transaction pooler, consecutive transactions of one connection run on different
# server connections: a prepared statement must not be reused after its transaction (both
# caches off), and its name must not collide with one another client left on a server
# connection (asyncpg numbers them per connection, so every client would use the same names).
_TRANSACTION_POOLER_ARGS: dict[str, Any] = {
    "statement_cache_size": 0,  # asyncpg's
    "prepared_statement_cache_size": 0,  # SQLAlchemy's
    "prepared_statement_name_func": _unique_statement_name,
}


def _tune_sqlite(engine: AsyncEngine) -> None:
    # WAL lets readers run beside the single writer; the busy timeout makes writers queue
    # instead of failing with "database is locked".
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(
        dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry
    ) -> None:  # pragma: no cover - trivial
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
