"""Video rows: upsert, lookup, rendering (API.md §3.2)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from vidwiz.db import format_datetime
from vidwiz.videos.models import Video


def render_video(video: Video) -> dict[str, Any]:
    """The `VideoRead` object."""
    return {
        "id": video.id,
        "video_id": video.video_id,
        "title": video.title,
        "metadata": video.video_metadata,
        "transcript_available": video.transcript_available,
        "summary": video.summary,
        "created_at": format_datetime(video.created_at),
        "updated_at": format_datetime(video.updated_at),
    }


def readiness_state(video: Video) -> tuple[bool, bool, bool]:
    """(metadata present, transcript available, summary present) — API.md §4.1."""
    return (video.video_metadata is not None, bool(video.transcript_available), video.summary is not None)


def is_ready(video: Video) -> bool:
    return all(readiness_state(video))


async def get_video(session: AsyncSession, video_id: str, *, for_update: bool = False) -> Video | None:
    stmt = select(Video).where(Video.video_id == video_id)
    if for_update:
        stmt = stmt.with_for_update()
    return await session.scalar(stmt)


async def upsert_video(session: AsyncSession, video_id: str, title: str | None = None) -> Video:
    """Insert the video if absent (race-safe: ON CONFLICT DO NOTHING); fill an empty title.

    Does not commit: the caller owns the transaction.
    """
    dialect = session.bind.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    from vidwiz.db import utcnow

    now = utcnow()
    await session.execute(
        insert(Video)
        .values(video_id=video_id, title=title or None, transcript_available=False, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["video_id"])
    )
    video = await get_video(session, video_id)
    if title and not video.title:
        video.title = title
    return video
