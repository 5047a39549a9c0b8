"""The task rules as a service (vidwiz/tasks/service.py), without HTTP: which task a claim takes,
when an in-progress task may be taken again (D7), when it fails for good, and what a result
records for after the commit. The /v2/internal endpoints around them are in test_tasks.py."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from vidwiz.db import utcnow
from vidwiz.models import Task, TaskStatus
from vidwiz.storage import LocalTranscriptStore
from vidwiz.tasks.service import (
    FETCH_METADATA,
    FETCH_TRANSCRIPT,
    MAX_RETRIES,
    STALE_AFTER,
    claim_task,
    ensure_task,
    submit_task_result,
    sweep_stale_tasks,
)
from vidwiz.unit_of_work import Effects

A, B, C = "aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc"


async def claim(units, task_type: str = FETCH_TRANSCRIPT):
    async with units() as work:
        return await claim_task(work.session, task_type)


async def task_row(db_sessions, task_id: int) -> Task:
    async with db_sessions() as session:
        return await session.get(Task, task_id)


def in_progress_since(seconds: float, **values) -> dict:
    return {"status": TaskStatus.IN_PROGRESS, "started_at": utcnow() - timedelta(seconds=seconds), **values}


# -- claiming ---------------------------------------------------------------------------------------


async def test_a_claim_takes_the_oldest_pending_task_of_its_type(units, db_sessions, db_factory):
    first = await db_factory.task(A)
    await db_factory.task(A, FETCH_METADATA)
    second = await db_factory.task(B)
    claimed = await claim(units)
    assert (claimed.id, claimed.task_type, claimed.task_details, claimed.retry_count) == (
        first,
        FETCH_TRANSCRIPT,
        {"video_id": A},
        1,
    )
    row = await task_row(db_sessions, first)
    assert row.status == TaskStatus.IN_PROGRESS and row.started_at is not None
    assert row.worker_details == {"worker_user_id": None}
    assert (await claim(units)).id == second
    assert await claim(units) is None  # none left of this type
    assert (await claim(units, FETCH_METADATA)).task_details == {"video_id": A}


async def test_an_in_progress_task_is_taken_again_only_once_stale(units, db_sessions, db_factory):
    task_id = await db_factory.task(
        A, **in_progress_since(STALE_AFTER.total_seconds() - 30, retry_count=1, worker_details={"k": 1})
    )
    assert await claim(units) is None  # its worker may still be on it
    async with units() as work:
        await work.session.execute(
            update(Task).where(Task.id == task_id).values(started_at=utcnow() - STALE_AFTER - timedelta(seconds=1))
        )
    reclaimed = await claim(units)
    assert (reclaimed.id, reclaimed.retry_count) == (task_id, 2)  # a reclaim counts as an attempt
    # The claim clears the worker and keeps what earlier attempts recorded.
    assert (await task_row(db_sessions, task_id)).worker_details == {"k": 1, "worker_user_id": None}


async def test_an_in_progress_task_without_a_start_counts_as_stale(units, db_factory):
    task_id = await db_factory.task(A, status=TaskStatus.IN_PROGRESS, started_at=None, retry_count=1)
    assert (await claim(units)).id == task_id


async def test_tasks_out_of_attempts_and_finished_tasks_are_never_claimed(units, db_factory):
    await db_factory.task(A, **in_progress_since(3600, retry_count=MAX_RETRIES))
    await db_factory.task(B, status=TaskStatus.FAILED, retry_count=MAX_RETRIES)
    await db_factory.task(C, status=TaskStatus.COMPLETED, retry_count=1)
    assert await claim(units) is None
    pending = await db_factory.task("ddddddddddd")
    assert (await claim(units)).id == pending


async def test_a_video_has_one_active_task_per_type(units, db_factory):
    await db_factory.task(A)
    async with units() as work:
        assert await ensure_task(work.session, FETCH_TRANSCRIPT, A) is False  # pending: no twin
        assert await ensure_task(work.session, FETCH_METADATA, A) is True
    await claim(units)
    async with units() as work:
        assert await ensure_task(work.session, FETCH_TRANSCRIPT, A) is False  # in progress: no twin either


async def test_concurrent_claims_each_take_a_different_task(units, db_factory):
    ids = {await db_factory.task(f"video{n:06d}") for n in range(12)}
    claimed = await asyncio.gather(*(claim(units) for _ in range(16)))
    taken = [task.id for task in claimed if task is not None]
    assert sorted(taken) == sorted(ids)


# -- the sweep --------------------------------------------------------------------------------------


async def test_the_sweep_fails_exhausted_tasks_and_announces_reclaimable_ones(units, db_sessions, db_factory):
    exhausted = await db_factory.task(A, **in_progress_since(3600, retry_count=MAX_RETRIES))
    await db_factory.task(B, **in_progress_since(3600, retry_count=1))
    await db_factory.task(C, FETCH_METADATA, **in_progress_since(3600, retry_count=2))
    await db_factory.task("ddddddddddd", **in_progress_since(5, retry_count=1))  # not stale
    async with units() as work:
        counts = await sweep_stale_tasks(work.session, work.effects)
        effects = work.effects
    assert counts == {"failed": 1, "reclaimable": {FETCH_TRANSCRIPT: 1, FETCH_METADATA: 1}}
    assert dict(effects.claimable) == {FETCH_TRANSCRIPT: 1, FETCH_METADATA: 1}  # pollers to wake
    row = await task_row(db_sessions, exhausted)
    assert row.status == TaskStatus.FAILED and row.completed_at is not None


# -- results ----------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> LocalTranscriptStore:
    return LocalTranscriptStore(tmp_path / "store")


async def submit(units, store, task_id: int, video_id: str = A, **result) -> tuple:
    values = {"success": True, "transcript": None, "metadata": None, "error_message": None, **result}
    async with units() as work:
        status = await submit_task_result(work.session, work.effects, store, task_id, video_id=video_id, **values)
        effects = work.effects
    return status, effects


async def test_a_failure_releases_the_task_until_its_last_attempt(units, db_sessions, store, db_factory):
    task_id = await db_factory.task(A)
    for attempt in range(1, MAX_RETRIES):
        assert (await claim(units)).retry_count == attempt
        status, effects = await submit(units, store, task_id, success=False, error_message=f"boom {attempt}")
        assert status == TaskStatus.PENDING
        assert dict(effects.claimable) == {FETCH_TRANSCRIPT: 1} and effects.videos == {}  # nothing changed
        row = await task_row(db_sessions, task_id)
        assert row.started_at is None and row.worker_details["error_message"] == f"boom {attempt}"
    assert (await claim(units)).retry_count == MAX_RETRIES
    status, effects = await submit(units, store, task_id, success=False)
    assert status == TaskStatus.FAILED
    assert effects == Effects()  # terminal: no poller to wake, no video changed
    assert (await task_row(db_sessions, task_id)).worker_details["error_message"] == "Unknown error occurred"


async def test_a_success_records_the_changed_video(units, store, db_factory):
    await db_factory.video(A)
    task_id = await db_factory.task(A, FETCH_METADATA)
    await claim(units, FETCH_METADATA)
    status, effects = await submit(units, store, task_id, metadata={"title": "T"})
    assert status == TaskStatus.COMPLETED
    assert list(effects.videos) == [A] and effects.videos[A].title == "T"
    assert not effects.claimable


async def test_a_success_for_a_missing_video_changes_no_video(units, store, db_factory):
    task_id = await db_factory.task(A)
    await claim(units)
    status, effects = await submit(units, store, task_id, transcript=[{"text": "hi"}])
    assert status == TaskStatus.COMPLETED and effects == Effects()
