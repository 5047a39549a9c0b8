"""Async engine, session factory and the declarative base shared by every domain."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, CursorResult, Result, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_only

from config import Settings

log = logging.getLogger(__name__)


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
    # isoformat is 3x cheaper than the equivalent strftime("%Y-%m-%dT%H:%M:%S+0000") (a hot path:
    # two per rendered note); the same text for every year from 1000 on.
    return value.isoformat(timespec="seconds") + "+0000"


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
        pool: dict[str, Any] = {}
        if not _memory_url(make_url(url)):
            # Keep every connection opened (up to the same total as PostgreSQL's pool): an SQLite
            # connection is a thread and PRAGMAs to open, and the default pool (5 + 10 overflow)
            # closed the overflow ones after each request at 16 concurrent readers.
            pool = {"pool_size": settings.db_pool_size + settings.db_max_overflow, "max_overflow": 0}
        engine = create_async_engine(url, connect_args={"timeout": 30}, **pool)
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
        execution_options={_TRANSACTION_POOLER: settings.db_pooler == "pgbouncer"},
    )


# An engine option (read back by `behind_transaction_pooler`), not a setting a service sees.
_TRANSACTION_POOLER = "vidwiz_transaction_pooler"


def behind_transaction_pooler(session: AsyncSession) -> bool:
    """Whether statements outside a transaction may run on different server connections (a
    PgBouncer in transaction mode): asyncpg prepares and executes in two steps, so autocommit
    statements would lose their prepared statement between them."""
    bind = session.bind
    return isinstance(bind, AsyncEngine) and bool(bind.get_execution_options().get(_TRANSACTION_POOLER))


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


# How long a unit of work waits for its process's writer connection, and then for SQLite's write
# lock (another process's writer): the same bound as the busy timeout.
WRITE_WAIT_SECONDS = 30


@contextlib.asynccontextmanager
async def open_write_sessions(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The sessions units of work write through, beside the read `sessions`.

    SQLite has one writer at a time: writers that collide inside it get SQLITE_BUSY mid-transaction
    and sleep in its busy handler (the write tail). So on SQLite each process writes through one
    connection of its own (its pool is the queue: a unit of work takes it at its first statement
    and gives it back when it ends) and every write transaction starts with BEGIN IMMEDIATE, so
    the wait for another process's writer happens before any work, in the busy timeout. Reads stay
    concurrent on the read pool (WAL). PostgreSQL: the read sessions themselves.
    """
    engine = sessions.kw.get("bind")
    if not isinstance(engine, AsyncEngine) or engine.dialect.name != "sqlite" or _in_memory(engine):
        yield sessions
        return
    writer = create_async_engine(
        engine.url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=WRITE_WAIT_SECONDS,
        # A unit of work always ends its transaction (commit, or the session's rollback): no second
        # ROLLBACK when the connection goes back, one thread round trip less while the writer is held.
        pool_reset_on_return=None,
        connect_args={"timeout": WRITE_WAIT_SECONDS},
    )
    _tune_sqlite(writer)
    lock = _one_writer_across_processes(writer, f"{engine.url.database}-writer.lock")
    _begin_immediate(writer)
    try:
        yield create_session_factory(writer)
    finally:
        await writer.dispose()
        if lock is not None:
            lock.close()


def _in_memory(engine: AsyncEngine) -> bool:
    # A second engine on an in-memory URL would be a second, empty database.
    return _memory_url(engine.url)


def _memory_url(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url)


def _one_writer_across_processes(engine: AsyncEngine, path: str) -> BinaryIO | None:
    """Between processes, SQLite's busy handler polls with sleeps growing to 100 ms: a process
    waiting for another's write lock wakes late, and a busy process that re-takes the lock at once
    starves it (the tail across web processes and actors). A lock file turns that wait into a
    queue the kernel wakes at once: a write transaction takes it before BEGIN IMMEDIATE (registered
    first), in a thread, and gives it back when its connection returns to the pool."""
    try:
        lock = open(path, "ab")  # closed with the writer
    except OSError as exc:
        # The database's directory is missing or read-only: no write can succeed there anyway,
        # and /ready reports the database down; starting must not fail on the lock.
        log.warning("no cross-process SQLite writer lock (%s): writers rely on the busy timeout", exc)
        return None

    @event.listens_for(engine.sync_engine, "begin")
    def _take(_connection: Connection) -> None:
        await_only(_lock_file(lock.fileno()))

    @event.listens_for(engine.sync_engine, "checkin")
    def _give(_dbapi_connection: DBAPIConnection | None, _record: ConnectionPoolEntry) -> None:
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    return lock


async def _lock_file(fd: int) -> None:
    try:  # free (the usual case): taken here, without a thread
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another process's writer holds it: wait in a thread
        await _wait_for_lock_file(fd)


async def _wait_for_lock_file(fd: int) -> None:
    taking = asyncio.ensure_future(asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX))
    try:
        await asyncio.shield(taking)
    except asyncio.CancelledError:  # the thread still gets the lock: give it back then
        taking.add_done_callback(lambda _: fcntl.flock(fd, fcntl.LOCK_UN))
        raise


def _begin_immediate(engine: AsyncEngine) -> None:
    # The driver's own transaction handling would BEGIN (deferred) only before the first write:
    # turned off, and every transaction begins IMMEDIATE (takes the write lock, or waits for it).
    @event.listens_for(engine.sync_engine, "connect")
    def _autocommit_driver(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _tune_sqlite(engine: AsyncEngine) -> None:
    # WAL lets readers run beside the single writer; the busy timeout makes writers queue
    # instead of failing with "database is locked".
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(
        dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry
    ) -> None:  # pragma: no cover - trivial
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={WRITE_WAIT_SECONDS * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
