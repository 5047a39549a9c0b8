"""Internal API rules (API.md §5): task results, direct video writers, AI-note listing.

Plain async functions over a session. The writers (`store_transcript`, `store_metadata`,
`store_summary`) do not commit, so the built-in actors can reuse them in their own
transactions; the task-result and note functions commit. Every writer locks the video row
it changes, so the Video it returns is, once committed, exactly the committed row: what
the caller publishes to the readiness streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from vidwiz.auth.models import User
from vidwiz.db import utcnow
from vidwiz.errors import BadRequest, Forbidden, NotFound, ServiceUnavailable
from vidwiz.internal.models import Task, TaskStatus
from vidwiz.internal.tasks import FETCH_METADATA, FETCH_TRANSCRIPT, MAX_RETRIES
from vidwiz.notes import service as notes_service
from vidwiz.notes.models import Note
from vidwiz.storage import TranscriptStore, TranscriptStoreError
from vidwiz.videos.models import Video
from vidwiz.videos.service import get_video, upsert_video

UNKNOWN_ERROR = "Unknown error occurred"


def fits_int4(value: int) -> bool:
    """Ids are INTEGER columns: a larger path id cannot exist (and must not reach the driver)."""
    return -(2**31) <= value < 2**31


# -- direct writers (no commit) ----------------------------------------------------------------


async def save_transcript(store: TranscriptStore, video_id: str, transcript: list[dict[str, Any]]) -> None:
    """Write to the store; an unavailable store is a 503 and the caller commits nothing."""
    try:
        await store.save(video_id, transcript)
    except TranscriptStoreError:
        raise ServiceUnavailable("Transcript storage is unavailable, try again later") from None


async def store_transcript(
    session: AsyncSession, store: TranscriptStore, video_id: str, transcript: list[dict[str, Any]]
) -> Video:
    """Upsert the video; mark the transcript available only when a non-empty one was stored (D8).

    The store is written before any row is touched, so no database lock is held during the
    upload (SQLite has a single writer)."""
    if transcript:
        await save_transcript(store, video_id, transcript)
    video = await upsert_video(session, video_id, for_update=True)
    if transcript:
        video.transcript_available = True
    return video


def apply_metadata(video: Video, metadata: dict[str, Any]) -> None:
    """Replace the metadata; its `title`, when there is one, becomes the video's title,
    replacing a user-supplied one: stored metadata is authoritative (D9)."""
    video.video_metadata = metadata
    title = metadata.get("title")
    if isinstance(title, str) and title.strip():
        video.title = title


async def store_metadata(session: AsyncSession, video_id: str, metadata: dict[str, Any]) -> Video:
    video = await upsert_video(session, video_id, for_update=True)
    apply_metadata(video, metadata)
    return video


async def store_summary(session: AsyncSession, video_id: str, summary: str | None) -> Video:
    """`None` leaves the summary as is; "" is stored (and counts as present)."""
    video = await upsert_video(session, video_id, for_update=True)
    if summary is not None:
        video.summary = summary
    return video


async def get_video_or_404(session: AsyncSession, video_id: str) -> Video:
    video = await get_video(session, video_id)
    if video is None:
        raise NotFound("Video not found")
    return video


# -- task results (API.md §5.1, §5.2) ------------------------------------------------------------


@dataclass(frozen=True)
class TaskResult:
    task_id: int
    task_type: str
    status: TaskStatus
    video_id: str
    video: Video | None  # the row the result changed, as committed; None when nothing changed


async def submit_task_result(
    session: AsyncSession,
    store: TranscriptStore,
    task_id: int,
    *,
    video_id: str,
    success: bool,
    transcript: list[dict[str, Any]] | None,
    metadata: dict[str, Any] | None,
    error_message: str | None,
) -> TaskResult:
    """Complete, release or fail an in-progress task and apply its payload; commits.

    A transcript that cannot be stored raises 503 before anything is committed, so the
    task stays in progress and is reclaimed after the stale window.
    """
    task = await session.get(Task, task_id, with_for_update=True) if fits_int4(task_id) else None
    if task is None:
        raise NotFound("Task not found")
    if task.task_details and task.task_details.get("video_id") != video_id:
        raise BadRequest("Task video_id mismatch")
    if task.status != TaskStatus.IN_PROGRESS:
        raise BadRequest("Task is not in progress")
    if (task.worker_details or {}).get("worker_user_id") is not None:
        # Workers are anonymous (the admin token), so a claimed task never names one.
        raise Forbidden("Task belongs to a different worker")
    if task.task_type == FETCH_TRANSCRIPT and metadata:
        raise BadRequest("Metadata payload is not valid for transcript tasks")
    if task.task_type == FETCH_METADATA and transcript:
        raise BadRequest("Transcript payload is not valid for metadata tasks")
    if task.task_type not in (FETCH_TRANSCRIPT, FETCH_METADATA):
        raise BadRequest("Unsupported task type")

    now = utcnow()
    task.completed_at = now
    video = None
    if success:
        video = await _apply_payload(session, store, task.task_type, video_id, transcript, metadata)
        task.status = TaskStatus.COMPLETED
    else:
        task.status = TaskStatus.FAILED if task.retry_count >= MAX_RETRIES else TaskStatus.PENDING
        if task.status == TaskStatus.PENDING:
            task.started_at = None
        task.worker_details = {
            **(task.worker_details or {}),
            "error_message": error_message or UNKNOWN_ERROR,
            "retry_attempt": task.retry_count,
        }
    result = TaskResult(task.id, task.task_type, task.status, video_id, video)
    await session.commit()
    return result


async def _apply_payload(
    session: AsyncSession,
    store: TranscriptStore,
    task_type: str,
    video_id: str,
    transcript: list[dict[str, Any]] | None,
    metadata: dict[str, Any] | None,
) -> Video | None:
    """A successful result updates the video if it exists (a missing row is ignored);
    returns the (locked) video it changed."""
    if task_type == FETCH_TRANSCRIPT:
        if not transcript:
            return None
        await save_transcript(store, video_id, transcript)
        video = await get_video(session, video_id, for_update=True)
        if video is not None:
            video.transcript_available = True
        return video
    if not metadata:
        return None
    video = await get_video(session, video_id, for_update=True)
    if video is not None:
        apply_metadata(video, metadata)
    return video


# -- notes ------------------------------------------------------------------------------------


async def list_ai_note_candidates(session: AsyncSession, video_id: str) -> list[Note]:
    """Notes without text whose author has AI notes enabled, oldest first (API.md §5.2).

    The JSON flag is checked in Python: portable across dialects and exact about truthiness.
    """
    await get_video_or_404(session, video_id)
    rows = await session.execute(
        select(Note, User.profile_data)
        .join(User, Note.user_id == User.id)
        .where(Note.video_id == video_id, or_(Note.text.is_(None), Note.text == ""))
        .order_by(Note.created_at, Note.id)
    )
    notes = [note for note, profile in rows if isinstance(profile, dict) and profile.get("ai_notes_enabled")]
    if not notes:
        raise NotFound("No notes found for users with AI notes enabled")
    return notes


async def update_note(session: AsyncSession, note_id: int, *, text: str | None, generated_by_ai: bool | None) -> Note:
    """Set the given fields; null/absent fields are left as is, so `{}` is a no-op."""
    note = await session.get(Note, note_id) if fits_int4(note_id) else None
    if note is None:
        raise NotFound("Note not found")
    if text is None and generated_by_ai is None:
        return note  # unlike the public PATCH, `{}` is accepted here
    return await notes_service.update_note(session, note, text=text, generated_by_ai=generated_by_ai)
