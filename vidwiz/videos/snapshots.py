"""The snapshot reads of readiness streams, batched: a burst of streams opening costs a few
queries, not one each.

Every read asked for while a query is in flight waits for the next one, which reads all of
them at once (one `IN (…)` query for guests, one per user for signed-in viewers); reads of the
same video by the same viewer share one result (single flight). A read never joins a query that
began before it was asked for: a stream subscribes, then reads, so the row it gets is at least
as new as anything it might have missed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from vidwiz.videos import service
from vidwiz.videos.models import Video

# (the viewer's user id, None for a guest; the video id)
Key = tuple[int | None, str]
BATCH = 500  # ids per query, well inside SQLite's bound-parameter limit


class SnapshotReader:
    """`await reader.read(user_id, video_id)`: the video as a stream's snapshot, or None when
    absent (or, for a user, not theirs: docs/api.md D3)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._waiting: dict[Key, asyncio.Future[Video | None]] = {}
        self._reading: asyncio.Task[None] | None = None
        self.queries = 0  # for the bench and the tests

    async def read(self, user_id: int | None, video_id: str) -> Video | None:
        key = (user_id, video_id)
        future = self._waiting.get(key)
        if future is None:
            future = self._waiting[key] = asyncio.get_running_loop().create_future()
            if self._reading is None:
                self._reading = asyncio.create_task(self._read_all(), name="readiness-snapshots")
        # Shielded: a stream that leaves must not cancel the read the others wait on.
        return await asyncio.shield(future)

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)

    async def _read_all(self) -> None:
        batch: dict[Key, asyncio.Future[Video | None]] = {}
        try:
            while self._waiting:
                batch = dict(itertools.islice(self._waiting.items(), BATCH))
                for key in batch:
                    del self._waiting[key]
                try:
                    found = await self._query(list(batch))
                except Exception as exc:
                    for future in batch.values():
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for key, future in batch.items():
                    if not future.done():
                        future.set_result(found.get(key))
        finally:
            self._reading = None
            for future in itertools.chain(batch.values(), self._waiting.values()):
                future.cancel()  # a no-op once answered; else the reader is cancelled with us
            self._waiting.clear()

    async def _query(self, keys: list[Key]) -> dict[Key, Video]:
        by_viewer: defaultdict[int | None, list[str]] = defaultdict(list)
        for user_id, video_id in keys:
            by_viewer[user_id].append(video_id)
        found: dict[Key, Video] = {}
        async with self._sessions() as session:
            for user_id, video_ids in by_viewer.items():
                self.queries += 1
                videos = await service.get_videos(session, video_ids, visible_to=user_id)
                found.update(((user_id, video.video_id), video) for video in videos)
        return found
