"""The write path (vidwiz/db.py `open_write_sessions`): on SQLite, units of work in a process write
one at a time through their own connection, each transaction begun IMMEDIATE, while reads go on
beside them; PostgreSQL's units of work use the read sessions unchanged."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, select, update

from tests.conftest import BACKENDS
from vidwiz.db import open_write_sessions
from vidwiz.models import Video
from vidwiz.unit_of_work import UnitsOfWork

A = "aaaaaaaaaaa"


# The write path these tests are about is SQLite's; PostgreSQL's is its read sessions (the first test).
sqlite_only = pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "sqlite"], indirect=True)
postgres_only = pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "postgres"], indirect=True)


@pytest.fixture
async def write_units(backend, db_sessions, units):
    async with open_write_sessions(db_sessions) as writes:
        yield UnitsOfWork(db_sessions, units.dispatcher, writes)


@postgres_only
async def test_postgresql_units_of_work_write_through_the_read_sessions(backend, db_sessions):
    async with open_write_sessions(db_sessions) as writes:
        assert writes is db_sessions


@sqlite_only
async def test_concurrent_read_modify_write_units_neither_collide_nor_lose_updates(write_units, db_factory):
    # Deferred transactions that read, then write, fail with "database is locked" when they
    # meet (SQLite cannot upgrade two readers): serialised and IMMEDIATE, every one lands.
    await db_factory.video(A, title="0")

    async def increment() -> None:
        async with write_units() as work:
            title = await work.session.scalar(select(Video.title).where(Video.video_id == A))
            await asyncio.sleep(0)  # let the others start theirs
            await work.session.execute(update(Video).where(Video.video_id == A).values(title=str(int(title) + 1)))

    await asyncio.gather(*(increment() for _ in range(20)))
    async with write_units.sessions() as session:
        assert await session.scalar(select(Video.title).where(Video.video_id == A)) == "20"


@sqlite_only
async def test_a_write_transaction_begins_immediate(write_units, db_factory):
    await db_factory.video(A, title="before")
    statements: list[str] = []
    engine = write_units.writes.kw["bind"].sync_engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731  (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        async with write_units() as work:
            await work.session.scalar(select(Video.title).where(Video.video_id == A))
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert statements[0] == "BEGIN IMMEDIATE"


@sqlite_only
async def test_reads_go_on_while_a_unit_of_work_writes(write_units, db_factory):
    await db_factory.video(A, title="committed")
    async with write_units() as work:
        await work.session.execute(update(Video).where(Video.video_id == A).values(title="pending"))
        # The writer holds SQLite's write lock: a read session still answers, with the committed row.
        async with asyncio.timeout(5):
            async with write_units.sessions() as session:
                assert await session.scalar(select(Video.title).where(Video.video_id == A)) == "committed"
    async with write_units.sessions() as session:
        assert await session.scalar(select(Video.title).where(Video.video_id == A)) == "pending"


@sqlite_only
async def test_writers_of_two_processes_take_turns(write_units, db_sessions, db_factory):
    # A second write path on the same file stands for another process (its own connection, its
    # own descriptor of the lock file): their units of work queue on the lock file, none fails.
    await db_factory.video(A, title="0")
    async with open_write_sessions(db_sessions) as other_writes:
        other = UnitsOfWork(db_sessions, write_units.dispatcher, other_writes)

        async def increment(units: UnitsOfWork) -> None:
            async with units() as work:
                title = await work.session.scalar(select(Video.title).where(Video.video_id == A))
                await asyncio.sleep(0.001)  # the other process's writer tries meanwhile
                await work.session.execute(update(Video).where(Video.video_id == A).values(title=str(int(title) + 1)))

        await asyncio.gather(*(increment(write_units if n % 2 else other) for n in range(20)))
    async with db_sessions() as session:
        assert await session.scalar(select(Video.title).where(Video.video_id == A)) == "20"


@sqlite_only
async def test_a_unit_of_work_cancelled_while_waiting_gives_the_turn_back(write_units, db_sessions, db_factory):
    await db_factory.video(A, title="0")
    async with open_write_sessions(db_sessions) as other_writes:
        other = UnitsOfWork(db_sessions, write_units.dispatcher, other_writes)
        async with write_units() as work:
            await work.session.execute(update(Video).where(Video.video_id == A).values(title="1"))
            waiting = asyncio.create_task(_write(other, "lost"))
            await asyncio.sleep(0.05)  # it waits for the lock file
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        async with asyncio.timeout(5):  # the cancelled waiter's late lock was given back
            await _write(other, "2")
    async with db_sessions() as session:
        assert await session.scalar(select(Video.title).where(Video.video_id == A)) == "2"


async def _write(units: UnitsOfWork, title: str) -> None:
    async with units() as work:
        await work.session.execute(update(Video).where(Video.video_id == A).values(title=title))
