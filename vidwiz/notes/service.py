"""Note rules (docs/api.md §3.3): ownership, creation in one transaction with its fetch tasks and
AI-note request (D5), and which notes want an AI note. Services never commit: the caller's
unit of work does (vidwiz/unit_of_work.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, Select, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from vidwiz.auth.models import User
from vidwiz.db import fits_int4, rowcount
from vidwiz.errors import BadRequest, NotFound
from vidwiz.notes.models import AI_NOTE, Note, OutboxMessage
from vidwiz.tasks.service import schedule_video_tasks
from vidwiz.unit_of_work import Effects
from vidwiz.videos.service import get_video_or_404, upsert_video


def ai_note_body(note: Note) -> dict[str, Any]:
    """The SQS body of docs/api.md §3.3 step 4 (key order matters: the relay json.dumps it)."""
    return {"id": note.id, "video_id": note.video_id, "timestamp": note.timestamp, "user_id": note.user_id}


def eligible_for_ai_note(video_id: str) -> Select[Note]:
    """The one rule (docs/api.md §5.2): the video's notes with empty text whose author has AI notes on."""
    return (
        select(Note)
        .join(User, Note.user_id == User.id)
        .where(Note.video_id == video_id, or_(Note.text.is_(None), Note.text == ""), User.ai_notes_enabled)
    )


async def create_note(
    session: AsyncSession,
    effects: Effects,
    *,
    user_id: int,
    video_id: str,
    timestamp: str,
    text: str | None,
    video_title: str | None,
) -> Note:
    """Upsert the video, ensure its fetch tasks, insert the note and, when it is eligible for an
    AI note and the transcript is there, its outbox row."""
    video = await upsert_video(session, video_id, video_title)
    effects.tasks_claimable(await schedule_video_tasks(session, video))
    note = Note(video_id=video.video_id, timestamp=timestamp, text=text, generated_by_ai=False, user_id=user_id)
    session.add(note)
    await session.flush()
    if video.transcript_available and await session.scalar(eligible_for_ai_note(video_id).where(Note.id == note.id)):
        session.add(OutboxMessage(kind=AI_NOTE, note_id=note.id, body=ai_note_body(note)))
        effects.wake_relay()
    return note


# The columns of a rendered note: a read-only list selects these rather than loading Note entities
# (no identity map or instance state per row, a hot read path).
NOTE_COLUMNS = (
    Note.id,
    Note.video_id,
    Note.timestamp,
    Note.text,
    Note.generated_by_ai,
    Note.created_at,
    Note.updated_at,
    Note.user_id,
)


async def list_notes(session: AsyncSession, user_id: int, video_id: str) -> Sequence[Row[*tuple[Any, ...]]]:
    """The user's notes on a video (rows with Note's rendered attributes), oldest first; [] for an
    unknown video."""
    result = await session.execute(
        select(*NOTE_COLUMNS)
        .where(Note.user_id == user_id, Note.video_id == video_id)
        .order_by(Note.created_at, Note.id)
    )
    return result.all()


async def get_note_for_user(session: AsyncSession, user_id: int, note_id: int) -> Note:
    """The note if it is the user's; another user's note is indistinguishable from a missing one."""
    note = await session.scalar(select(Note).where(Note.id == note_id, Note.user_id == user_id))
    if note is None:
        raise NotFound("Note not found")
    return note


async def update_note(session: AsyncSession, note: Note, *, text: str | None, generated_by_ai: bool | None) -> Note:
    """Set the given fields; null means "leave as is", so text cannot be cleared to null.

    One conditional UPDATE on the note's id and owner: a note deleted since it was read is a
    404 (never a stale write), and the returned row is what is committed."""
    if text is None and generated_by_ai is None:
        raise BadRequest("No fields provided for update")
    values: dict[str, Any] = {}
    if text is not None:
        values["text"] = text
    if generated_by_ai is not None:
        values["generated_by_ai"] = generated_by_ai
    # Annotated: under mypy, SQLAlchemy 2.1's AsyncSession.scalar() overloads answer Any for every statement.
    updated: Note | None = await session.scalar(
        update(Note).where(Note.id == note.id, Note.user_id == note.user_id).values(**values).returning(Note),
        execution_options={"populate_existing": True},
    )
    if updated is None:
        raise NotFound("Note not found")
    return updated


async def update_any_note(
    session: AsyncSession, note_id: int, *, text: str | None, generated_by_ai: bool | None
) -> Note:
    """The internal PATCH (an AI-note Lambda): any note; `{}` is a no-op there."""
    note = await session.get(Note, note_id) if fits_int4(note_id) else None
    if note is None:
        raise NotFound("Note not found")
    if text is None and generated_by_ai is None:
        return note
    return await update_note(session, note, text=text, generated_by_ai=generated_by_ai)


async def delete_note(session: AsyncSession, user_id: int, note_id: int) -> None:
    """Deletes the user's note only (the video stays). One conditional DELETE whose row count
    decides, so of concurrent deletes of one note exactly one succeeds and the others are 404."""
    result = await session.execute(
        delete(Note).where(Note.id == note_id, Note.user_id == user_id).execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        raise NotFound("Note not found")


async def list_ai_note_candidates(session: AsyncSession, video_id: str) -> list[Note]:
    """`GET /v2/internal/videos/{id}/ai-notes`: the eligible notes, oldest first (docs/api.md §5.2)."""
    await get_video_or_404(session, video_id)
    notes = list(await session.scalars(eligible_for_ai_note(video_id).order_by(Note.created_at, Note.id)))
    if not notes:
        raise NotFound("No notes found for users with AI notes enabled")
    return notes
