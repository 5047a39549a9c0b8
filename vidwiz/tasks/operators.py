"""The task queue as operators see it (the queue dashboard): counts, stale and failed tasks, and
the two hand actions: retry a failed task, cancel a pending one. Nothing here commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from vidwiz.db import fits_int4, format_datetime, utcnow
from vidwiz.errors import Conflict, NotFound
from vidwiz.tasks.models import Task, TaskStatus
from vidwiz.tasks.service import STALE_AFTER, stale
from vidwiz.unit_of_work import Effects

ACTIVE = (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)


def render_task(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "task_type": task.task_type,
        "status": task.status.value,
        "video_id": (task.task_details or {}).get("video_id"),
        "retry_count": task.retry_count,
        "error_message": (task.worker_details or {}).get("error_message"),
        "created_at": format_datetime(task.created_at),
        "started_at": format_datetime(task.started_at),
        "completed_at": format_datetime(task.completed_at),
    }


async def task_queue(session: AsyncSession, *, limit: int, offset: int) -> dict[str, Any]:
    """Counts per type and status, stale in-progress tasks, failed ones (newest first, a page),
    pending ones (oldest first, the first `limit`)."""
    counts = (
        await session.execute(select(Task.task_type, Task.status, func.count()).group_by(Task.task_type, Task.status))
    ).all()
    stale_tasks = await session.scalars(select(Task).where(stale(utcnow())).order_by(Task.started_at).limit(limit))
    failed = select(Task).where(Task.status == TaskStatus.FAILED)
    failed_total = await session.scalar(select(func.count()).select_from(failed.subquery()))
    failed_page = await session.scalars(
        failed.order_by(Task.updated_at.desc(), Task.id.desc()).offset(offset).limit(limit)
    )
    pending = await session.scalars(
        select(Task).where(Task.status == TaskStatus.PENDING).order_by(Task.id).limit(limit)
    )
    return {
        "counts": [
            {"task_type": task_type, "status": status.value, "count": count}
            for task_type, status, count in sorted(counts, key=lambda row: (row[0], row[1].value))
        ],
        "reclaim_after_seconds": int(STALE_AFTER.total_seconds()),
        "stale": [render_task(task) for task in stale_tasks],
        "failed": [render_task(task) for task in failed_page],
        "failed_total": failed_total or 0,
        "pending": [render_task(task) for task in pending],
    }


async def _locked(session: AsyncSession, task_id: int) -> Task:
    task = await session.get(Task, task_id, with_for_update=True) if fits_int4(task_id) else None
    if task is None:
        raise NotFound("Task not found")
    return task


async def retry_task(session: AsyncSession, effects: Effects, task_id: int) -> Task:
    """A failed task back to pending with its counters reset; waiting pollers are woken."""
    task = await _locked(session, task_id)
    if task.status != TaskStatus.FAILED:
        raise Conflict(f"Only a failed task can be retried (this one is {task.status.value})")
    video_id = (task.task_details or {}).get("video_id")
    twin = await session.scalar(
        select(Task.id).where(
            Task.task_type == task.task_type,
            Task.status.in_(ACTIVE),
            Task.task_details["video_id"].as_string() == video_id,
        )
    )
    if twin is not None:
        raise Conflict(f"Task {twin} already fetches this for the video")
    now = utcnow()
    task.status, task.retry_count = TaskStatus.PENDING, 0
    task.started_at = task.completed_at = None
    task.worker_details = None
    task.updated_at = now
    effects.tasks_claimable([task.task_type])
    return task


async def cancel_task(session: AsyncSession, task_id: int) -> Task:
    """A pending task becomes cancelled: no worker claims it (docs/api.md §6: `cancelled`)."""
    task = await _locked(session, task_id)
    if task.status != TaskStatus.PENDING:
        raise Conflict(f"Only a pending task can be cancelled (this one is {task.status.value})")
    now = utcnow()
    task.status, task.completed_at, task.updated_at = TaskStatus.CANCELLED, now, now
    return task
