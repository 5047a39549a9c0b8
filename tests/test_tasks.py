"""The task queue of /v2/internal (docs/api.md §5.1, §5.2, D7): claim, long-poll, results, retries, reclaim."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.conftest import (
    ADMIN,
    BACKENDS,
    WAIT,
    assert_error,
    claim_task,
    eventually,
    poll_task,
    queued_jobs,
    submit_result,
)
from vidwiz.context import TASK_WAKEUPS, UNITS
from vidwiz.db import utcnow
from vidwiz.events import RedisKeys
from vidwiz.internal.schemas import TaskPollQuerySchema
from vidwiz.tasks.models import Task, TaskStatus
from vidwiz.tasks.service import FETCH_METADATA, FETCH_TRANSCRIPT, ensure_task, sweep_stale_tasks
from vidwiz.tasks.wakeups import TaskWakeups
from vidwiz.unit_of_work import Dispatcher
from vidwiz.videos.models import Video

# -- polling ------------------------------------------------------------------------------------


async def test_poll_returns_oldest_task_of_the_type(client, sessions, factory):
    first = await factory.task("aaaaaaaaaaa")
    await factory.task("bbbbbbbbbbb")
    await factory.task("aaaaaaaaaaa", FETCH_METADATA)
    body = await claim_task(client)
    assert body == {
        "task_id": first,
        "task_type": "fetch_transcript",
        "task_details": {"video_id": "aaaaaaaaaaa"},
        "retry_count": 1,
        "message": "Task retrieved successfully",
    }
    task = await factory.get_task(first)
    assert task.status == TaskStatus.IN_PROGRESS
    assert task.started_at is not None and task.retry_count == 1
    assert task.worker_details == {"worker_user_id": None}
    meta = await claim_task(client, "metadata")
    assert (meta["task_type"], meta["task_details"]) == ("fetch_metadata", {"video_id": "aaaaaaaaaaa"})


async def test_poll_nothing_within_timeout_is_204_empty(client, sessions, factory):
    await factory.task("aaaaaaaaaaa", FETCH_METADATA)  # another type is not a match
    resp = await poll_task(client, "transcript", timeout=1)
    assert resp.status == 204
    assert await resp.read() == b""


@pytest.mark.parametrize(
    "params, status, field, kind",
    [
        ({}, 422, "query.type", "missing"),
        ({"type": "transcript", "timeout": "0"}, 422, "query.timeout", "greater_than_equal"),
        ({"type": "transcript", "timeout": "abc"}, 422, "query.timeout", "int_parsing"),
        ({"type": "transcript", "timeout": "1.5"}, 422, "query.timeout", "int_parsing"),
        ({"type": "summary"}, 400, None, None),
    ],
)
async def test_poll_rejects_bad_queries(client, params, status, field, kind):
    resp = await client.get("/v2/internal/tasks", params=params, headers=ADMIN)
    assert resp.status == status
    body = await resp.json()
    if status == 400:
        assert_error(body, "BAD_REQUEST", "Invalid task type")
    else:
        assert_error(body, "VALIDATION_ERROR", "Request validation failed")
        assert [(d["field"], d["type"]) for d in body["error"]["details"]] == [(field, kind)]


def test_poll_timeout_defaults_and_clamps():
    schema = TaskPollQuerySchema()
    assert schema.load({"type": "transcript"})["timeout"] == 30
    assert schema.load({"type": "transcript", "timeout": "999"})["timeout"] == 60
    assert schema.load({"type": "transcript", "timeout": "7"})["timeout"] == 7


@pytest.mark.parametrize(
    "headers, status, message",
    [
        ({}, 401, "Missing or invalid Authorization header"),
        ({"Authorization": "Basic abc"}, 401, "Missing or invalid Authorization header"),
        ({"Authorization": "Bearer wrong"}, 403, "Invalid admin token"),
    ],
)
async def test_task_endpoints_require_the_admin_token(client, sessions, headers, status, message, factory):
    task_id = await factory.task("aaaaaaaaaaa")
    resp = await client.get("/v2/internal/tasks", params={"type": "bogus"}, headers=headers)
    assert resp.status == status
    assert_error(await resp.json(), "UNAUTHORIZED" if status == 401 else "FORBIDDEN", message)
    resp = await client.post(f"/v2/internal/tasks/{task_id}/result", json={}, headers=headers)
    assert resp.status == status
    assert (await factory.get_task(task_id)).status == TaskStatus.PENDING


# -- results ------------------------------------------------------------------------------------


async def test_transcript_result_stores_and_marks_available(client, sessions, settings, factory):
    await factory.video("aaaaaaaaaaa")
    task_id = await factory.task("aaaaaaaaaaa")
    await claim_task(client)
    transcript = [{"text": "hi", "offset": 0.0, "duration": 1.2}, {"text": "ünï", "offset": 1.2, "duration": 2}]
    resp = await submit_result(client, task_id, {"video_id": "aaaaaaaaaaa", "success": True, "transcript": transcript})
    assert resp.status == 200
    assert await resp.json() == {
        "message": "Task result submitted successfully",
        "task_id": task_id,
        "status": "completed",
    }
    task = await factory.get_task(task_id)
    assert task.status == TaskStatus.COMPLETED and task.completed_at is not None
    async with sessions() as session:
        video = await session.scalar(select(Video).where(Video.video_id == "aaaaaaaaaaa"))
    assert video.transcript_available is True
    stored = settings.transcript_dir / "transcripts" / "aaaaaaaaaaa.json"
    assert stored.read_text(encoding="utf-8") == json.dumps(transcript)
    assert ("video_changed", ("aaaaaaaaaaa",)) in [(job.function, job.args) for job in await queued_jobs(client.app)]


async def test_empty_transcript_result_does_not_mark_available(client, sessions, settings, factory):
    await factory.video("aaaaaaaaaaa")
    task_id = await factory.task("aaaaaaaaaaa")
    await claim_task(client)
    resp = await submit_result(client, task_id, {"video_id": "aaaaaaaaaaa", "success": True, "transcript": []})
    assert (await resp.json())["status"] == "completed"
    async with sessions() as session:
        video = await session.scalar(select(Video).where(Video.video_id == "aaaaaaaaaaa"))
    assert video.transcript_available is False  # D8
    assert not (settings.transcript_dir / "transcripts" / "aaaaaaaaaaa.json").exists()


@pytest.mark.parametrize("title, expected", [(None, "From metadata"), ("User title", "From metadata")])
async def test_metadata_result_replaces_metadata_and_its_title_wins(client, sessions, title, expected, factory):
    await factory.video("aaaaaaaaaaa", title=title, video_metadata={"old": True})
    task_id = await factory.task("aaaaaaaaaaa", FETCH_METADATA)
    await claim_task(client, "metadata")
    metadata = {"id": "aaaaaaaaaaa", "title": "From metadata", "duration": 61}
    resp = await submit_result(client, task_id, {"video_id": "aaaaaaaaaaa", "success": True, "metadata": metadata})
    assert (await resp.json())["status"] == "completed"
    async with sessions() as session:
        video = await session.scalar(select(Video).where(Video.video_id == "aaaaaaaaaaa"))
    assert video.video_metadata == metadata
    assert video.title == expected  # D9


async def test_result_for_missing_video_row_still_completes(client, sessions, factory):
    task_id = await factory.task("aaaaaaaaaaa", FETCH_METADATA)
    await claim_task(client, "metadata")
    resp = await submit_result(
        client, task_id, {"video_id": "aaaaaaaaaaa", "success": True, "metadata": {"title": "x"}}
    )
    assert (await resp.json())["status"] == "completed"


async def test_result_errors(client, sessions, factory):
    transcript_task = await factory.task("aaaaaaaaaaa")
    metadata_task = await factory.task("aaaaaaaaaaa", FETCH_METADATA)
    body = {"video_id": "aaaaaaaaaaa", "success": True}

    resp = await submit_result(client, transcript_task, body)  # still pending
    assert resp.status == 400
    assert_error(await resp.json(), "BAD_REQUEST", "Task is not in progress")
    for missing in (999999, -1, 2**40):
        resp = await submit_result(client, missing, body)
        assert resp.status == 404
        assert_error(await resp.json(), "NOT_FOUND", "Task not found")

    await claim_task(client)
    await claim_task(client, "metadata")
    cases = [
        (transcript_task, {**body, "video_id": "bbbbbbbbbbb"}, "Task video_id mismatch"),
        (transcript_task, {**body, "metadata": {"title": "x"}}, "Metadata payload is not valid for transcript tasks"),
        (metadata_task, {**body, "transcript": [{"text": "x"}]}, "Transcript payload is not valid for metadata tasks"),
    ]
    for task_id, payload, message in cases:
        resp = await submit_result(client, task_id, payload)
        assert resp.status == 400
        assert_error(await resp.json(), "BAD_REQUEST", message)
    # Falsy payloads of the other kind are tolerated, as in the reference.
    resp = await submit_result(client, transcript_task, {**body, "metadata": {}, "transcript": [{"text": "t"}]})
    assert (await resp.json())["status"] == "completed"
    resp = await submit_result(client, transcript_task, body)
    assert_error(await resp.json(), "BAD_REQUEST", "Task is not in progress")


@pytest.mark.parametrize(
    "payload, field, message, kind",
    [
        (
            {"video_id": "aaaaaaaaaaa", "success": True, "transcript": ["x"]},
            "body.transcript",
            "Value error, transcript items must be dictionaries",
            "value_error",
        ),
        (
            {"video_id": "aaaaaaaaaaa", "success": True, "transcript": [{"offset": 1}]},
            "body.transcript",
            "Value error, transcript items must contain 'text' field",
            "value_error",
        ),
        (
            {"video_id": "aaaaaaaaaaa", "success": True, "transcript": {"text": "x"}},
            "body.transcript",
            "Input should be a valid list",
            "list_type",
        ),
        (
            {"video_id": "aaaaaaaaaaa", "success": True, "metadata": ["x"]},
            "body.metadata",
            "Input should be a valid dictionary",
            "dict_type",
        ),
        (
            {"video_id": "aaaaaaaaaaa", "success": "yes"},
            "body.success",
            "Input should be a valid boolean",
            "bool_parsing",
        ),
        ({"video_id": "aaaaaaaaaaa"}, "body.success", "Field required", "missing"),
        ({"success": True}, "body.video_id", "Field required", "missing"),
    ],
)
async def test_malformed_result_is_rejected_and_task_stays_claimed(
    client, sessions, payload, field, message, kind, factory
):
    task_id = await factory.task("aaaaaaaaaaa")
    await claim_task(client)
    resp = await submit_result(client, task_id, payload)
    assert resp.status == 422
    body = await resp.json()
    assert_error(body, "VALIDATION_ERROR", "Request validation failed")
    assert {"field": field, "message": message, "type": kind} in body["error"]["details"]
    task = await factory.get_task(task_id)
    assert (task.status, task.retry_count) == (TaskStatus.IN_PROGRESS, 1)
    resp = await submit_result(
        client, task_id, {"video_id": "aaaaaaaaaaa", "success": True, "transcript": [{"text": "ok"}]}
    )
    assert (await resp.json())["status"] == "completed"


async def test_result_path_must_be_an_integer(client):
    resp = await client.post("/v2/internal/tasks/abc/result", json={"video_id": "x", "success": True}, headers=ADMIN)
    assert resp.status == 422
    assert (await resp.json())["error"]["details"][0]["field"] == "path.task_id"


async def test_failure_results_release_then_fail_after_max_retries(client, sessions, factory):
    task_id = await factory.task("aaaaaaaaaaa")
    for attempt in (1, 2):
        body = await claim_task(client)
        assert (body["task_id"], body["retry_count"]) == (task_id, attempt)
        resp = await submit_result(
            client, task_id, {"video_id": "aaaaaaaaaaa", "success": False, "error_message": f"boom {attempt}"}
        )
        assert (await resp.json())["status"] == "pending"
        task = await factory.get_task(task_id)
        assert task.started_at is None and task.completed_at is not None
        assert task.worker_details == {
            "worker_user_id": None,
            "error_message": f"boom {attempt}",
            "retry_attempt": attempt,
        }
    assert (await claim_task(client))["retry_count"] == 3
    resp = await submit_result(client, task_id, {"video_id": "aaaaaaaaaaa", "success": False})
    assert (await resp.json())["status"] == "failed"
    task = await factory.get_task(task_id)
    assert task.worker_details["error_message"] == "Unknown error occurred"
    assert task.worker_details["retry_attempt"] == 3
    assert (await poll_task(client)).status == 204  # FAILED is terminal
    # A failed task no longer blocks a fresh one for the same video (D7 applies to active tasks).
    assert await factory.task("aaaaaaaaaaa") != task_id


async def test_failure_result_wakes_a_waiting_poller(client, sessions, factory):
    task_id = await factory.task("aaaaaaaaaaa")
    await claim_task(client)
    waiting = asyncio.create_task(poll_task(client, timeout=10))
    hub = client.app[TASK_WAKEUPS]
    await eventually(lambda: hub.waiting(FETCH_TRANSCRIPT) == 1, "poller waiting")
    await submit_result(client, task_id, {"video_id": "aaaaaaaaaaa", "success": False})
    resp = await waiting
    assert resp.status == 200
    assert ((await resp.json())["task_id"], (await resp.json())["retry_count"]) == (task_id, 2)


# -- stale reclaim (D7) -------------------------------------------------------------------------


async def age_task(sessions, task_id: int, seconds: int, **values) -> None:
    async with sessions() as session:
        await session.execute(
            update(Task).where(Task.id == task_id).values(started_at=utcnow() - timedelta(seconds=seconds), **values)
        )
        await session.commit()


async def test_stuck_task_is_reclaimed_after_the_window(client, sessions, factory):
    task_id = await factory.task("aaaaaaaaaaa")
    await claim_task(client)
    await age_task(sessions, task_id, 60)
    assert (await poll_task(client)).status == 204  # inside the window: still the first worker's
    await age_task(sessions, task_id, 121)
    body = await claim_task(client)
    assert (body["task_id"], body["retry_count"]) == (task_id, 2)  # a reclaim counts as an attempt


async def test_stuck_task_at_max_retries_becomes_failed(client, sessions, app, factory):
    exhausted = await factory.task("aaaaaaaaaaa")
    reclaimable = await factory.task("bbbbbbbbbbb", FETCH_METADATA)
    await claim_task(client)
    await claim_task(client, "metadata")
    await age_task(sessions, exhausted, 121, retry_count=3)
    await age_task(sessions, reclaimable, 121)
    assert (await poll_task(client)).status == 204  # never reclaimed past the limit
    async with client.app[UNITS]() as work:
        counts = await sweep_stale_tasks(work.session, work.effects)
    assert counts == {"failed": 1, "reclaimable": {FETCH_METADATA: 1}}
    task = await factory.get_task(exhausted)
    assert task.status == TaskStatus.FAILED and task.completed_at is not None
    assert (await claim_task(client, "metadata"))["task_id"] == reclaimable


# -- long-poll ----------------------------------------------------------------------------------


async def test_waiting_poller_gets_a_task_created_later(client, sessions):
    hub = client.app[TASK_WAKEUPS]
    waiting = asyncio.create_task(poll_task(client, timeout=5))
    await eventually(lambda: hub.waiting(FETCH_TRANSCRIPT) == 1, "poller waiting")
    async with sessions() as session:
        await ensure_task(session, FETCH_TRANSCRIPT, "ccccccccccc")
        await session.commit()
    await client.app[UNITS].dispatcher.wake_pollers(FETCH_TRANSCRIPT)
    resp = await waiting
    assert resp.status == 200
    assert (await resp.json())["task_details"] == {"video_id": "ccccccccccc"}
    assert hub.waiting(FETCH_TRANSCRIPT) == 0


async def test_a_wakeup_goes_to_one_waiter(client):
    hub = client.app[TASK_WAKEUPS]
    async with hub.waiter(FETCH_TRANSCRIPT) as first, hub.waiter(FETCH_TRANSCRIPT) as second:
        await client.app[UNITS].dispatcher.wake_pollers(FETCH_TRANSCRIPT)
        async with asyncio.timeout(WAIT):
            await first.woken.wait()
        assert not second.woken.is_set()  # one task, one claimer: no herd
    assert hub.waiting(FETCH_TRANSCRIPT) == 0


async def test_unused_wakeup_is_passed_on(client):
    hub = client.app[TASK_WAKEUPS]
    async with hub.waiter(FETCH_TRANSCRIPT) as staying:
        async with hub.waiter(FETCH_TRANSCRIPT) as leaving:
            leaving.woken.set()  # woken, but its client left before claiming
        assert staying.woken.is_set()


# fakeredis cannot drop a live pub/sub connection: this one runs on the real-Redis path only.
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "postgres"], indirect=True)
async def test_hub_resubscribes_after_losing_its_redis_connection(backend, redis, settings):
    keys = RedisKeys(settings.redis_key_prefix)
    hub = TaskWakeups(redis, keys, recheck_seconds=settings.task_recheck_seconds)
    try:
        async with hub.waiter(FETCH_TRANSCRIPT) as waiter:
            assert hub.subscribed
            await hub._pubsub.connection.disconnect()  # the connection dies under the reader
            async with asyncio.timeout(WAIT):
                await waiter.woken.wait()  # pollers are told to re-check the database
            waiter.woken.clear()
            await eventually(lambda: hub.subscribed, "resubscribed")
            await Dispatcher(redis, keys).wake_pollers(FETCH_TRANSCRIPT)
            async with asyncio.timeout(WAIT):
                await waiter.woken.wait()
    finally:
        await hub.close()


async def test_disconnected_poller_stops_waiting_and_claims_nothing(client, sessions, factory):
    hub = client.app[TASK_WAKEUPS]
    hub.recheck_seconds = 0.05
    waiting = asyncio.create_task(poll_task(client, timeout=30))
    await eventually(lambda: hub.waiting(FETCH_TRANSCRIPT) == 1, "poller waiting")
    waiting.cancel()  # the worker goes away: its connection closes
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await eventually(lambda: hub.waiting(FETCH_TRANSCRIPT) == 0, "poller gone")
    task_id = await factory.task("ccccccccccc")
    await client.app[UNITS].dispatcher.wake_pollers(FETCH_TRANSCRIPT)
    assert (await factory.get_task(task_id)).status == TaskStatus.PENDING


async def test_concurrent_pollers_claim_every_task_exactly_once(client, sessions):
    async with sessions() as session:
        for n in range(100):
            await ensure_task(session, FETCH_TRANSCRIPT, f"video{n:06d}")
        await session.commit()

    async def worker() -> list[int]:
        claimed = []
        while True:
            resp = await poll_task(client, timeout=1)
            if resp.status == 204:
                return claimed
            assert resp.status == 200, await resp.text()
            claimed.append((await resp.json())["task_id"])

    results = await asyncio.gather(*(worker() for _ in range(20)))
    claimed = [task_id for ids in results for task_id in ids]
    async with sessions() as session:
        all_ids = list(await session.scalars(select(Task.id)))
        statuses = set(await session.scalars(select(Task.status)))
    assert sorted(claimed) == sorted(all_ids) and len(claimed) == 100
    assert statuses == {TaskStatus.IN_PROGRESS}


async def test_shutdown_answers_waiting_pollers_at_once(client):
    hub = client.app[TASK_WAKEUPS]
    waiting = asyncio.create_task(poll_task(client, timeout=60))
    await eventually(lambda: hub.waiting(FETCH_TRANSCRIPT) == 1, "poller waiting")
    await client.app.shutdown()  # on_shutdown, as a rolling restart runs it
    resp = await waiting
    assert resp.status == 204
