"""Task scheduling: ensure at most one pending/in-progress task per (video, type) (API.md §3.3 step 2, D7)."""
from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from vidwiz.db import utcnow
from vidwiz.events import RedisKeys, publish
from vidwiz.internal.models import Task, TaskStatus
from vidwiz.videos.models import Video

FETCH_TRANSCRIPT = "fetch_transcript"
FETCH_METADATA = "fetch_metadata"
TASK_TYPES = {"transcript": FETCH_TRANSCRIPT, "metadata": FETCH_METADATA}


async def ensure_task(session: AsyncSession, task_type: str, video_id: str) -> bool:
    """Insert a PENDING task unless an active one exists. The partial unique index
    `uq_tasks_active_video` makes this race-free: a concurrent twin is skipped, not duplicated."""
    insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    result = await session.execute(
        insert(Task)
        .values(
            task_type=task_type,
            status=TaskStatus.PENDING,
            task_details={"video_id": video_id},
            retry_count=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
    )
    return result.rowcount == 1


async def schedule_video_tasks(session: AsyncSession, video: Video) -> list[str]:
    """Ensure the fetch tasks a video still needs. Does not commit; returns the task types
    created, for `notify_tasks_created` after the caller's commit."""
    created = []
    if not video.video_metadata:
        if await ensure_task(session, FETCH_METADATA, video.video_id):
            created.append(FETCH_METADATA)
    if not video.transcript_available:
        if await ensure_task(session, FETCH_TRANSCRIPT, video.video_id):
            created.append(FETCH_TRANSCRIPT)
    return created


async def notify_tasks_created(redis, keys: RedisKeys, task_types: list[str]) -> None:
    """Wake long-polling workers waiting for these task types (call after commit)."""
    for task_type in task_types:
        await publish(redis, keys.task_wakeup(task_type), "1")
