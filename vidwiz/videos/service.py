"""Video rows: upsert, scoped lookup and listing (docs/api.md §3.2), and the direct writers of the
internal API and task results (docs/api.md §5.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Exists, Row, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from vidwiz.conversations.models import Conversation
from vidwiz.db import dialect_name, fits_int4, utcnow
from vidwiz.errors import BadRequest, NotFound, ServiceUnavailable
from vidwiz.notes.models import Note
from vidwiz.storage import TranscriptStore, TranscriptStoreError
from vidwiz.unit_of_work import Effects
from vidwiz.videos.models import Video


async def get_video(session: AsyncSession, video_id: str, *, for_update: bool = False) -> Video | None:
    """`for_update` locks the row until commit (FOR NO KEY UPDATE: note inserts referencing
    it are not blocked), so the object's state at commit is exactly the committed row."""
    stmt = select(Video).where(Video.video_id == video_id)
    if for_update:
        stmt = stmt.with_for_update(key_share=True)
    return await session.scalar(stmt)


async def upsert_video(
    session: AsyncSession, video_id: str, title: str | None = None, *, for_update: bool = False
) -> Video:
    """Insert the video if absent (race-safe: ON CONFLICT DO NOTHING); fill an empty title.

    The title is filled by a conditional UPDATE, so a metadata title committed meanwhile
    (authoritative, D9) is never overwritten. Does not commit: the caller owns the
    transaction. `for_update` as in `get_video`.
    """
    dialect = dialect_name(session)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    await session.execute(
        insert(Video)
        .values(video_id=video_id, title=title or None, transcript_available=False, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["video_id"])
    )
    if title:
        await session.execute(
            update(Video)
            .where(Video.video_id == video_id, or_(Video.title.is_(None), Video.title == ""))
            .values(title=title)
        )
    video = await get_video(session, video_id, for_update=for_update)
    assert video is not None, "inserted or already there, and videos are never deleted"
    return video


# Each sort ends on the primary key so pages never shuffle rows with equal keys.
SORTS: dict[str, tuple[ColumnElement[Any], ColumnElement[Any]]] = {
    "created_at_desc": (Video.created_at.desc(), Video.id.desc()),
    "created_at_asc": (Video.created_at.asc(), Video.id.asc()),
    "title_asc": (Video.title.asc(), Video.id.asc()),
    "title_desc": (Video.title.desc(), Video.id.desc()),
}
MIN_QUERY_LENGTH = 2


@dataclass(frozen=True)
class VideoPage:
    videos: list[Row[str, str | None, dict[str, Any] | None]]  # video_id, title, video_metadata
    total: int
    page: int
    per_page: int

    @property
    def total_pages(self) -> int:
        return math.ceil(self.total / self.per_page)


def _has_note_by(user_id: int) -> Exists:
    return exists().where(Note.video_id == Video.video_id, Note.user_id == user_id)


def _has_conversation_by(user_id: int) -> Exists:
    return exists().where(Conversation.video_id == Video.video_id, Conversation.user_id == user_id)


async def list_videos_for_user(
    session: AsyncSession, user_id: int, *, q: str, page: int, per_page: int, sort: str
) -> VideoPage:
    """The videos the user has at least one note on, searched, sorted and paginated (docs/api.md §3.2)."""
    order = SORTS.get(sort)
    if order is None:
        raise BadRequest("Invalid sort parameter")
    conditions: list[ColumnElement[bool]] = [_has_note_by(user_id)]
    q = q.strip()
    if len(q) >= MIN_QUERY_LENGTH:
        # autoescape: a literal % or _ in the query matches itself, not "anything".
        conditions.append(
            or_(
                Video.title.icontains(q, autoescape=True),
                Video.video_metadata["title"].as_string().icontains(q, autoescape=True),
            )
        )
    offset = (page - 1) * per_page
    if fits_int4(offset):  # ids are INTEGER: a larger offset is past the end (and must not reach the driver)
        # One query: the page, each row carrying the total (a window count over the whole match).
        rows = (
            await session.execute(
                select(Video.video_id, Video.title, Video.video_metadata, func.count().over().label("total"))
                .where(*conditions)
                .order_by(*order)
                .offset(offset)
                .limit(per_page)
            )
        ).all()
        if rows:
            return VideoPage(videos=list(rows), total=rows[0].total, page=page, per_page=per_page)
    # Past the end (or nothing matches): the count alone.
    total = await session.scalar(select(func.count()).select_from(Video).where(*conditions)) or 0
    return VideoPage(videos=[], total=total, page=page, per_page=per_page)


def render_video_page(page: VideoPage) -> dict[str, Any]:
    return {
        "videos": [
            {"video_id": row.video_id, "title": row.title, "metadata": row.video_metadata} for row in page.videos
        ],
        "total": page.total,
        "page": page.page,
        "per_page": page.per_page,
        "total_pages": page.total_pages,
    }


async def get_video_for_user(session: AsyncSession, user_id: int, video_id: str) -> Video:
    """A video the user has a note or a conversation on; anything else is 404 (docs/api.md D3).

    The conversation counts because the web client's Wiz page creates one for a new video
    and then polls this video until its transcript is available."""
    video = await session.scalar(
        select(Video).where(Video.video_id == video_id, or_(_has_note_by(user_id), _has_conversation_by(user_id)))
    )
    if video is None:
        raise NotFound("Video not found")
    return video


async def get_videos(session: AsyncSession, video_ids: list[str], *, visible_to: int | None = None) -> list[Video]:
    """The videos among `video_ids` that exist; with `visible_to`, only those that user has a note
    or a conversation on (as `get_video_for_user`)."""
    stmt = select(Video).where(Video.video_id.in_(video_ids))
    if visible_to is not None:
        stmt = stmt.where(or_(_has_note_by(visible_to), _has_conversation_by(visible_to)))
    return list(await session.scalars(stmt))


# -- direct writers (the internal API, task results, the summary actor) --------------------------
# Each locks the row it changes, so the Video it records as changed is, once committed, exactly
# the committed row: what the dispatcher publishes to the readiness streams.


async def save_transcript(store: TranscriptStore, video_id: str, transcript: list[dict[str, Any]]) -> None:
    """Write to the store; an unavailable store is a 503 and the caller commits nothing."""
    try:
        await store.save(video_id, transcript)
    except TranscriptStoreError:
        raise ServiceUnavailable("Transcript storage is unavailable, try again later") from None


async def store_transcript(
    session: AsyncSession, effects: Effects, store: TranscriptStore, video_id: str, transcript: list[dict[str, Any]]
) -> Video:
    """Upsert the video; mark the transcript available only when a non-empty one was stored (D8).

    The store is written before any row is touched, so no database lock is held during the
    upload (SQLite has a single writer)."""
    if transcript:
        await save_transcript(store, video_id, transcript)
    video = await upsert_video(session, video_id, for_update=True)
    if transcript:
        video.transcript_available = True
    effects.video_changed(video)
    return video


def apply_metadata(video: Video, metadata: dict[str, Any]) -> None:
    """Replace the metadata; its `title`, when there is one, becomes the video's title,
    replacing a user-supplied one: stored metadata is authoritative (D9)."""
    video.video_metadata = metadata
    title = metadata.get("title")
    if isinstance(title, str) and title.strip():
        video.title = title


async def store_metadata(session: AsyncSession, effects: Effects, video_id: str, metadata: dict[str, Any]) -> Video:
    video = await upsert_video(session, video_id, for_update=True)
    apply_metadata(video, metadata)
    effects.video_changed(video)
    return video


async def store_summary(session: AsyncSession, effects: Effects, video_id: str, summary: str | None) -> Video:
    """`None` leaves the summary as is; "" is stored (and counts as present)."""
    video = await upsert_video(session, video_id, for_update=True)
    if summary is not None:
        video.summary = summary
    effects.video_changed(video)
    return video


async def get_video_or_404(session: AsyncSession, video_id: str) -> Video:
    video = await get_video(session, video_id)
    if video is None:
        raise NotFound("Video not found")
    return video
