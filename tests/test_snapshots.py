"""The readiness streams' snapshot reads (vidwiz/videos/snapshots.py): a burst of concurrent reads
is one query per kind of viewer, reads of one video share a result, a read asked for later is a
fresh one, and a reader that leaves does not take the others' read with it."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event

from vidwiz.videos.snapshots import SnapshotReader

VIDEOS = [f"v{n:010d}" for n in range(20)]


@pytest.fixture
def reader(db_sessions):
    return SnapshotReader(db_sessions)


@pytest.fixture
def selects(engine):
    """The SELECT statements run on this test's database from now on."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_concurrent_reads_are_one_query_per_viewer(reader, db_factory, selects):
    for video_id in VIDEOS:
        await db_factory.video(video_id, title=video_id)
    user_id = await db_factory.user_row()
    await db_factory.note_row(user_id, VIDEOS[0])
    selects.clear()

    guests = [reader.read(None, video_id) for video_id in VIDEOS]
    same_video = [reader.read(None, VIDEOS[3]) for _ in range(5)]
    absent = reader.read(None, "absent00000")
    users = [reader.read(user_id, VIDEOS[0]), reader.read(user_id, VIDEOS[1])]
    results = await asyncio.gather(*guests, *same_video, absent, *users)

    assert [video.video_id for video in results[:20]] == VIDEOS
    assert all(video is results[3] for video in results[20:25])  # one result, shared
    assert results[25] is None
    assert results[26].video_id == VIDEOS[0] and results[27] is None  # D3: only the user's videos
    assert len(selects) == 2 and reader.queries == 2  # the guests' and the user's


async def test_a_later_read_is_a_fresh_one(reader, db_factory):
    await db_factory.video(VIDEOS[0], title="before")
    assert (await reader.read(None, VIDEOS[0])).title == "before"
    await db_factory.set_video(VIDEOS[0], title="after")
    assert (await reader.read(None, VIDEOS[0])).title == "after"
    assert reader.queries == 2


async def test_a_reader_that_leaves_does_not_cancel_the_others(reader, db_factory):
    await db_factory.video(VIDEOS[0], title="t")
    leaving = asyncio.create_task(reader.read(None, VIDEOS[0]))
    staying = asyncio.create_task(reader.read(None, VIDEOS[0]))
    await asyncio.sleep(0)
    leaving.cancel()
    assert (await staying).title == "t"
    await reader.close()
