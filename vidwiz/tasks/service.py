"""Tasks for the external workers (docs/api.md §5): scheduling (at most one pending/in-progress task
per (video, type), §3.3 step 2, D7), the atomic claim, results, and the stale-task sweep.
Nothing here commits: the caller's unit of work does, then wakes the pollers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, and_, func, literal_column, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from vidwiz.db import behind_transaction_pooler, dialect_name, fits_int4, rowcount, utcnow
from vidwiz.errors import BadRequest, Forbidden, NotFound
from vidwiz.storage import TranscriptStore
from vidwiz.tasks.models import Task, TaskStatus
from vidwiz.unit_of_work import Effects
from vidwiz.videos.models import Video
from vidwiz.videos.service import apply_metadata, get_video, save_transcript

FETCH_TRANSCRIPT = "fetch_transcript"
FETCH_METADATA = "fetch_metadata"
TASK_TYPES = {"transcript": FETCH_TRANSCRIPT, "metadata": FETCH_METADATA}


async def ensure_task(session: AsyncSession, task_type: str, video_id: str) -> bool:
    """Insert a PENDING task unless an active one exists. The partial unique index
    `uq_tasks_active_video` makes this race-free: a concurrent twin is skipped, not duplicated."""
    insert = postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert
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
    return rowcount(result) == 1


async def schedule_video_tasks(session: AsyncSession, video: Video) -> list[str]:
    """Ensure the fetch tasks a video still needs; returns the task types created (claimable
    once committed)."""
    created = []
    if not video.video_metadata:
        if await ensure_task(session, FETCH_METADATA, video.video_id):
            created.append(FETCH_METADATA)
    if not video.transcript_available:
        if await ensure_task(session, FETCH_TRANSCRIPT, video.video_id):
            created.append(FETCH_TRANSCRIPT)
    return created


# -- claiming (docs/api.md §5.1 with D7) ------------------------------------------------------------

MAX_RETRIES = 3
STALE_AFTER = timedelta(seconds=120)

# The claim clears worker_details.worker_user_id and keeps the other keys (error_message,
# retry_attempt). Written per dialect because JSON merging differs.
_RESET_WORKER = {
    "postgresql": (
        "CASE WHEN json_typeof(worker_details) = 'object' "
        "THEN (worker_details::jsonb || '{\"worker_user_id\": null}'::jsonb)::json "
        "ELSE '{\"worker_user_id\": null}'::json END"
    ),
    "sqlite": (
        "CASE WHEN json_type(worker_details) = 'object' "
        "THEN json_set(worker_details, '$.worker_user_id', json('null')) "
        "ELSE json('{\"worker_user_id\": null}') END"
    ),
}


@dataclass(frozen=True)
class ClaimedTask:
    id: int
    task_type: str
    task_details: dict[str, Any] | None
    retry_count: int


def stale(now: datetime) -> ColumnElement[bool]:
    return and_(
        Task.status == TaskStatus.IN_PROGRESS,
        or_(Task.started_at.is_(None), Task.started_at < now - STALE_AFTER),
    )


async def claim_task(session: AsyncSession, task_type: str) -> ClaimedTask | None:
    """Claim the oldest eligible task of this type in ONE statement.

    Eligible: PENDING, or IN_PROGRESS but stale with attempts left (a reclaim counts as an
    attempt, D7). PostgreSQL locks the chosen row with SKIP LOCKED so concurrent pollers
    each get a different task; SQLite serialises writers, so the same UPDATE suffices.
    FAILED tasks are never claimed: they are terminal (retry_count >= MAX_RETRIES).
    Takes a fresh session: under PostgreSQL its connection is set to autocommit, unless a
    transaction pooler sits in between (there the statement needs its transaction).
    """
    dialect = dialect_name(session)
    now = utcnow()
    eligible = (
        select(Task.id)
        .where(
            Task.task_type == task_type,
            or_(Task.status == TaskStatus.PENDING, and_(stale(now), Task.retry_count < MAX_RETRIES)),
        )
        .order_by(Task.id)
        .limit(1)
    )
    if dialect == "postgresql":
        if not behind_transaction_pooler(session):
            # The UPDATE is atomic on its own: autocommit saves the BEGIN and COMMIT round trips.
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        eligible = eligible.with_for_update(skip_locked=True)
    row = (
        await session.execute(
            update(Task)
            .where(Task.id == eligible.scalar_subquery())
            .values(
                status=TaskStatus.IN_PROGRESS,
                started_at=now,
                retry_count=Task.retry_count + 1,
                worker_details=literal_column(_RESET_WORKER[dialect], type_=JSON),
                updated_at=now,
            )
            .returning(Task.id, Task.task_type, Task.task_details, Task.retry_count)
            .execution_options(synchronize_session=False)
        )
    ).first()
    return ClaimedTask(*row) if row is not None else None


async def sweep_stale_tasks(session: AsyncSession, effects: Effects) -> dict[str, Any]:
    """For the sweeper: stale in-progress tasks without attempts left become FAILED; the
    ones that can be reclaimed are announced so waiting pollers take them at once.

    Returns {"failed": n, "reclaimable": {task_type: n}}.
    """
    now = utcnow()
    failed = await session.execute(
        update(Task)
        .where(stale(now), Task.retry_count >= MAX_RETRIES)
        .values(status=TaskStatus.FAILED, completed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    reclaimable = dict(
        (
            await session.execute(
                select(Task.task_type, func.count())
                .where(stale(now), Task.retry_count < MAX_RETRIES)
                .group_by(Task.task_type)
            )
        ).all()
    )
    for task_type, count in reclaimable.items():
        effects.tasks_claimable([task_type], count)
    return {"failed": rowcount(failed), "reclaimable": reclaimable}


# -- results (docs/api.md §5.1, §5.2) ---------------------------------------------------------------

UNKNOWN_ERROR = "Unknown error occurred"


async def submit_task_result(
    session: AsyncSession,
    effects: Effects,
    store: TranscriptStore,
    task_id: int,
    *,
    video_id: str,
    success: bool,
    transcript: list[dict[str, Any]] | None,
    metadata: dict[str, Any] | None,
    error_message: str | None,
) -> TaskStatus:
    """Complete, release or fail an in-progress task and apply its payload; its new status.

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
    if success:
        video = await _apply_payload(session, store, task.task_type, video_id, transcript, metadata)
        if video is not None:
            effects.video_changed(video)
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
    if task.status == TaskStatus.PENDING:
        effects.tasks_claimable([task.task_type])
    return task.status


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
