"""The queue dashboard's API: the actor queue (overview, lists, detail, abort, re-enqueue) as an
in-process arq worker runs real jobs through count_outcomes, and the task queue (counts, stale and
failed tasks, pollers, retry, cancel). Every endpoint's auth and error statuses."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from arq import func

from actors.outcomes import count_outcomes
from actors.worker import build_worker_settings, cron_schedule
from tests.conftest import ADMIN, ADMIN_TOKEN, assert_error, claim_task, eventually, poll_task
from vidwiz.context import KEYS, REDIS
from vidwiz.job_index import RESULTS_KEPT, JobIndex
from vidwiz.tasks.models import TaskStatus
from vidwiz.tasks.service import FETCH_METADATA, FETCH_TRANSCRIPT

A, B = "aaaaaaaaaaa", "bbbbbbbbbbb"


async def video_changed(ctx, video_id):
    return {"video_id": video_id, "published": True}


async def relay_outbox(ctx):
    raise RuntimeError("SQS exploded")


async def summarize_video(ctx, video_id):
    await asyncio.Event().wait()  # runs until aborted


def running_worker(actor_worker):
    functions = [func(count_outcomes(f), name=f.__name__) for f in (video_changed, relay_outbox, summarize_video)]
    return actor_worker(functions, max_tries=1)


async def enqueue(client, function, *args, **options):
    return await client.app[REDIS].enqueue_job(function, *args, _queue_name=client.app[KEYS].arq_queue, **options)


async def get_json(client, path, expect=200, **params):
    resp = await client.get(path, params=params, headers=ADMIN)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def post_json(client, path, expect=200):
    resp = await client.post(path, headers=ADMIN)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def jobs(client, state, **filters):
    return (await get_json(client, "/v2/internal/queue/jobs", state=state, **filters))["jobs"]


# -- the actor queue ---------------------------------------------------------------------------------


async def test_finished_jobs_are_indexed_with_stats_detail_and_reenqueue(client, actor_worker):
    async with running_worker(actor_worker):
        done = await enqueue(client, "video_changed", A)
        failed = await enqueue(client, "relay_outbox")
        await enqueue(client, "video_changed", B)

        async def three_finished():
            return len(await jobs(client, "finished")) == 3

        await eventually(three_finished, "three finished jobs in the index")

    finished = await jobs(client, "finished")
    assert {job["status"] for job in finished} == {"complete", "failed"}
    [failure] = await jobs(client, "finished", status="failed")
    assert failure["job_id"] == failed.job_id and failure["error"] == "RuntimeError: SQS exploded"
    [by_video] = await jobs(client, "finished", q=A)
    assert by_video["job_id"] == done.job_id and by_video["result"] == {"video_id": A, "published": True}
    assert by_video["run_seconds"] >= 0 and by_video["start_time"].endswith("+0000")
    assert len(await jobs(client, "finished", function="video_changed")) == 2
    page = await get_json(client, "/v2/internal/queue/jobs", state="finished", limit="1", offset="1")
    assert (page["total"], len(page["jobs"])) == (3, 1)

    overview = await get_json(client, "/v2/internal/queue/overview")
    stats = {row["function"]: row for row in overview["functions"]}
    assert (stats["video_changed"]["success"], stats["relay_outbox"]["failure"]) == (2, 1)
    assert stats["video_changed"]["p50_ms"] is not None and stats["video_changed"]["p95_ms"] is not None
    assert len(overview["minutes"]) == 60 and sum(m["success"] for m in overview["minutes"]) == 2
    assert overview["depth"] == {"queued": 0, "deferred": 0, "in_progress": 0}

    detail = await get_json(client, f"/v2/internal/queue/jobs/{failed.job_id}")
    assert detail["status"] == "failed" and detail["tries"] == 1 and len(detail["runs"]) == 1

    again = await post_json(client, f"/v2/internal/queue/jobs/{failed.job_id}/reenqueue")
    assert again["function"] == "relay_outbox" and again["job_id"] != failed.job_id
    assert [job["job_id"] for job in await jobs(client, "queued")] == [again["job_id"]]
    body = await post_json(client, f"/v2/internal/queue/jobs/{done.job_id}/reenqueue", 409)
    assert_error(body, "CONFLICT")
    assert_error(await post_json(client, "/v2/internal/queue/jobs/nope/reenqueue", 404), "NOT_FOUND")
    assert_error(await get_json(client, "/v2/internal/queue/jobs/nope", 404), "NOT_FOUND")


async def test_waiting_jobs_are_listed_filtered_and_aborted(client):
    queued = await enqueue(client, "video_changed", A)
    later = await enqueue(client, "summarize_video", B, _defer_until=datetime.now(UTC) + timedelta(hours=1))
    assert [job["job_id"] for job in await jobs(client, "queued")] == [queued.job_id]
    [deferred] = await jobs(client, "deferred")
    assert deferred["job_id"] == later.job_id and deferred["args"] == [B] and deferred["scheduled_time"]
    assert await jobs(client, "queued", function="summarize_video") == []
    assert await jobs(client, "deferred", q=A) == []
    overview = await get_json(client, "/v2/internal/queue/overview")
    assert overview["depth"] == {"queued": 1, "deferred": 1, "in_progress": 0}
    assert (await get_json(client, f"/v2/internal/queue/jobs/{later.job_id}"))["status"] == "deferred"

    aborted = await post_json(client, f"/v2/internal/queue/jobs/{later.job_id}/abort")
    assert aborted == {"job_id": later.job_id, "status": "aborted"}
    assert await jobs(client, "deferred") == []
    [entry] = await jobs(client, "finished", status="aborted")
    assert entry["job_id"] == later.job_id and entry["function"] == "summarize_video"
    assert_error(await post_json(client, f"/v2/internal/queue/jobs/{later.job_id}/abort", 409), "CONFLICT")
    assert_error(await post_json(client, "/v2/internal/queue/jobs/unknown-job/abort", 404), "NOT_FOUND")
    again = await post_json(client, f"/v2/internal/queue/jobs/{later.job_id}/reenqueue")
    assert again["args"] == [B]

    legacy = await get_json(client, "/v2/internal/queue")
    assert legacy["queued_total"] == 2 and {job["job_id"] for job in legacy["queued"]} == {
        queued.job_id,
        again["job_id"],
    }
    assert [job["status"] for job in legacy["results"]] == ["aborted"]


async def test_a_running_job_shows_its_running_time_and_is_aborted(client, actor_worker):
    async with running_worker(actor_worker):
        job = await enqueue(client, "summarize_video", A)

        async def running():
            return await jobs(client, "in_progress")

        [row] = await eventually(running, "the job to run")
        assert row["job_id"] == job.job_id and row["run_seconds"] >= 0 and row["start_time"]
        assert (await get_json(client, "/v2/internal/queue/overview"))["depth"]["in_progress"] == 1
        body = await post_json(client, f"/v2/internal/queue/jobs/{job.job_id}/abort")
        assert body["status"] in ("aborted", "aborting")

        async def cancelled():
            return await jobs(client, "finished", status="cancelled")

        [entry] = await eventually(cancelled, "the aborted job among the finished ones")
        assert entry["job_id"] == job.job_id
        assert await jobs(client, "in_progress") == []


async def test_the_index_keeps_a_bounded_number_of_results(client):
    index = JobIndex(client.app[REDIS], client.app[KEYS])
    for n in range(RESULTS_KEPT + 5):
        await index.finished(f"j{n}", "video_changed", [A], job_try=1, enqueued_ms=0, started_ms=0, outcome="success")
    page = await get_json(client, "/v2/internal/queue/jobs", state="finished", limit="1")
    assert page["total"] == RESULTS_KEPT and page["jobs"][0]["job_id"] == f"j{RESULTS_KEPT + 4}"


async def test_the_overview_shows_the_cron_schedule_the_workers_record(client, settings):
    keys = client.app[KEYS]
    index = JobIndex(client.app[REDIS], keys)
    await index.record_cron(cron_schedule(keys))  # what a worker's start-up writes
    assert build_worker_settings(settings).allow_abort_jobs is True
    await index.finished("cron-run", "sweep", [], job_try=1, enqueued_ms=0, started_ms=0, outcome="success")
    cron = {row["function"]: row for row in (await get_json(client, "/v2/internal/queue/overview"))["cron"]}
    assert set(cron) == {"sweep", "reconcile_quotas"}
    assert cron["sweep"]["schedule"] == "every minute, second 0,15,30,45" and cron["sweep"]["last_status"] == "complete"
    assert cron["sweep"]["last_run"] and cron["reconcile_quotas"]["last_run"] is None
    assert (
        int(cron["reconcile_quotas"]["next_run"][14:16]) % 10 == 0
        and cron["reconcile_quotas"]["next_run"][17:19] == "00"
    )


# -- the task queue ----------------------------------------------------------------------------------


async def test_task_queue_view_retry_and_cancel(client, factory):
    failed_id = await factory.task(
        A, status=TaskStatus.FAILED, retry_count=3, worker_details={"error_message": "no captions"}
    )
    stale_id = await factory.task(B, status=TaskStatus.IN_PROGRESS, started_at=datetime(2020, 1, 1), retry_count=3)
    pending_id = await factory.task(B, FETCH_METADATA)

    view = await get_json(client, "/v2/internal/queue/tasks")
    counts = {(row["task_type"], row["status"]): row["count"] for row in view["counts"]}
    assert counts == {
        (FETCH_TRANSCRIPT, "failed"): 1,
        (FETCH_TRANSCRIPT, "in_progress"): 1,
        (FETCH_METADATA, "pending"): 1,
    }
    assert [row["task_id"] for row in view["stale"]] == [stale_id]
    [failed] = view["failed"]
    assert (failed["task_id"], failed["error_message"], failed["retry_count"]) == (failed_id, "no captions", 3)
    assert view["failed_total"] == 1 and [row["task_id"] for row in view["pending"]] == [pending_id]
    assert view["pollers"] == {FETCH_TRANSCRIPT: 0, FETCH_METADATA: 0} and view["reclaim_after_seconds"] > 0

    # A waiting worker is listed, and woken by the retry.
    poll = asyncio.create_task(poll_task(client, "transcript", timeout=20))

    async def listed():
        return (await get_json(client, "/v2/internal/queue/tasks"))["pollers"][FETCH_TRANSCRIPT] == 1

    await eventually(listed, "the waiting poller to be listed")
    retried = await post_json(client, f"/v2/internal/queue/tasks/{failed_id}/retry")
    assert (retried["status"], retried["retry_count"], retried["error_message"]) == ("pending", 0, None)
    resp = await asyncio.wait_for(poll, 15)
    assert resp.status == 200 and (await resp.json())["task_id"] == failed_id

    assert_error(await post_json(client, f"/v2/internal/queue/tasks/{failed_id}/retry", 409), "CONFLICT")
    cancelled = await post_json(client, f"/v2/internal/queue/tasks/{pending_id}/cancel")
    assert cancelled["status"] == "cancelled"
    assert_error(await post_json(client, f"/v2/internal/queue/tasks/{pending_id}/cancel", 409), "CONFLICT")
    assert (await factory.get_task(pending_id)).status == TaskStatus.CANCELLED
    assert_error(await post_json(client, "/v2/internal/queue/tasks/999999/cancel", 404), "NOT_FOUND")
    assert_error(await post_json(client, "/v2/internal/queue/tasks/999999/retry", 404), "NOT_FOUND")
    resp = await client.post("/v2/internal/queue/tasks/abc/retry", headers=ADMIN)
    assert resp.status == 422


async def test_a_retry_is_refused_while_another_task_fetches_the_same(client, factory):
    failed_id = await factory.task(A, status=TaskStatus.FAILED, retry_count=3)
    await factory.task(A)  # scheduled again since
    assert_error(await post_json(client, f"/v2/internal/queue/tasks/{failed_id}/retry", 409), "CONFLICT")
    claimed = await claim_task(client)
    assert claimed["task_id"] != failed_id


# -- the page ---------------------------------------------------------------------------------------


async def test_the_page_and_its_files_carry_a_content_security_policy_and_no_token(make_client):
    staging = await make_client(environment="staging")
    for path, content_type in (
        ("/v2/internal/queue/ui", "text/html"),
        ("/v2/internal/queue/ui/app.js", "application/javascript"),
        ("/v2/internal/queue/ui/style.css", "text/css"),
    ):
        resp = await staging.get(path)
        assert resp.status == 200 and resp.content_type == content_type
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert ADMIN_TOKEN not in await resp.text()
    resp = await staging.get("/v2/internal/queue/ui/secrets.txt")
    assert resp.status == 404


async def test_the_page_is_served_in_production_only_when_enabled(make_client):
    production = await make_client(environment="production")
    assert (await production.get("/v2/internal/queue/ui")).status == 404
    assert (await production.get("/v2/internal/queue/ui/app.js")).status == 404
    enabled = await make_client(environment="production", queue_dashboard=True)
    assert (await enabled.get("/v2/internal/queue/ui")).status == 200


# -- auth and input ----------------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/v2/internal/queue/overview"),
    ("GET", "/v2/internal/queue/jobs?state=queued"),
    ("GET", "/v2/internal/queue/jobs/some-job"),
    ("POST", "/v2/internal/queue/jobs/some-job/abort"),
    ("POST", "/v2/internal/queue/jobs/some-job/reenqueue"),
    ("GET", "/v2/internal/queue/tasks"),
    ("POST", "/v2/internal/queue/tasks/1/retry"),
    ("POST", "/v2/internal/queue/tasks/1/cancel"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_wants_the_admin_token(client, method, path):
    resp = await client.request(method, path)
    assert resp.status == 401
    assert_error(await resp.json(), "UNAUTHORIZED")
    resp = await client.request(method, path, headers={"Authorization": "Bearer wrong"})
    assert resp.status == 403
    assert_error(await resp.json(), "FORBIDDEN", "Invalid admin token")


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"state": "lost"},
        {"state": "queued", "limit": "0"},
        {"state": "queued", "status": "x"},
        {"state": "queued", "q": ""},
    ],
)
async def test_job_lists_validate_their_query(client, query):
    resp = await client.get("/v2/internal/queue/jobs", params=query, headers=ADMIN)
    assert resp.status == 422
    assert_error(await resp.json(), "VALIDATION_ERROR")
