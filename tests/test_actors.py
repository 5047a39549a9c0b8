"""The arq worker: its settings, the sweeper, the queue view, and the worker as a real process
that is SIGKILLed in the middle of an SQS delivery and restarted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aioboto3
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession, web
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from sqlalchemy import select

from actors.sweeper import sweep
from actors.worker import build_worker_settings, cron_jobs
from config import load_settings
from tests.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    REDIS_URL,
    SECRET_KEY,
    assert_error,
    eventually,
    queued_jobs,
    with_resources,
)
from tests.moto import AWS_ENV
from tests.supervised_tree import append_to
from vidwiz.context import KEYS, REDIS
from vidwiz.db import create_engine, utcnow
from vidwiz.events import RedisKeys
from vidwiz.job_index import JobIndex
from vidwiz.models import Base, OutboxMessage, Task, TaskStatus, Video
from vidwiz.system.actor_queue import ActorQueue

A = "aaaaaaaaaaa"
REPO = Path(__file__).resolve().parents[1]


# -- settings ------------------------------------------------------------------------------------


def test_worker_settings_follow_the_settings(settings):
    worker = build_worker_settings(settings)
    assert worker.queue_name == f"{settings.redis_key_prefix}arq:queue"
    assert {f.name for f in worker.functions} == {"video_changed", "relay_outbox", "summarize_video"}
    prefix = settings.redis_key_prefix
    assert [c.name for c in worker.cron_jobs] == [f"cron:{prefix}sweep", f"cron:{prefix}reconcile_quotas"]
    assert worker.health_check_interval <= 5 and worker.job_timeout == 30 and worker.max_tries >= 3
    assert worker.ctx == {"settings": settings}  # the resources are built at start-up (actors/resources.py)
    assert build_worker_settings(replace(settings, actor_job_timeout=4.5)).job_timeout == 4.5


def test_redis_url_forms_reach_arq_decoded_and_the_password_is_never_shown(settings):
    url = "rediss://vidwiz:p%40ss%2Fword@redis.example:6380/2"
    redis_settings = build_worker_settings(replace(settings, redis_url=url)).redis_settings
    assert (redis_settings.host, redis_settings.port, redis_settings.database, redis_settings.ssl) == (
        "redis.example",
        6380,
        2,
        True,
    )
    assert (redis_settings.username, redis_settings.password) == ("vidwiz", "p@ss/word")
    assert "p@ss" not in repr(redis_settings) and "p%40ss" not in repr(redis_settings)


def test_with_sentinels_arq_asks_them_for_the_primary_and_redis_url_gives_only_the_credentials(settings):
    sentinels = (("s1", 26379), ("s2", 26379))
    changed = replace(settings, redis_sentinels=sentinels, redis_sentinel_master="vidwiz", redis_url="redis://:pw@x/3")
    redis_settings = build_worker_settings(changed).redis_settings
    assert (redis_settings.sentinel, redis_settings.host, redis_settings.sentinel_master) == (
        True,
        [("s1", 26379), ("s2", 26379)],
        "vidwiz",
    )
    assert (redis_settings.password, redis_settings.database) == ("pw", 3)


# -- sweeper -------------------------------------------------------------------------------------


class AcceptingDelivery:
    """A delivery strategy that accepts everything (the sweeper only checks one is configured)."""

    name = "accept"

    async def deliver(self, messages):
        return {m.id: None for m in messages}


async def test_sweeper_fails_stuck_tasks_redrives_due_rows_and_prunes_old_ones(client, sessions, actor_ctx):
    now = utcnow()
    async with sessions() as session:
        session.add_all(
            [
                Task(
                    task_type="fetch_transcript",
                    status=TaskStatus.IN_PROGRESS,
                    task_details={"video_id": A},
                    retry_count=3,
                    started_at=now - timedelta(hours=1),
                ),
                OutboxMessage(note_id=1, body={"id": 1}, next_attempt_at=now - timedelta(seconds=5)),
                OutboxMessage(note_id=2, body={"id": 2}, status="sent", sent_at=now - timedelta(days=8)),
                OutboxMessage(note_id=3, body={"id": 3}, status="sent", sent_at=now - timedelta(days=1)),
            ]
        )
        await session.commit()

    result = await sweep(actor_ctx)  # no delivery configured: nothing to re-drive with
    assert result["tasks"]["failed"] == 1 and result["outbox_due"] == 1 and result["outbox_pruned"] == 1
    assert await queued_jobs(client.app) == []

    result = await sweep(with_resources(actor_ctx, delivery=AcceptingDelivery()))
    assert result["outbox_pruned"] == 0
    assert [job.function for job in await queued_jobs(client.app)] == ["relay_outbox"]
    async with sessions() as session:
        assert (await session.scalar(select(Task.status))) is TaskStatus.FAILED
        assert sorted(await session.scalars(select(OutboxMessage.note_id))) == [1, 3]


# -- queue view ----------------------------------------------------------------------------------


async def test_queue_view_lists_queued_jobs_and_results(client, test_id):
    redis, queue = client.app[REDIS], client.app[KEYS].arq_queue
    # arq's job and result keys are global to the Redis: ids unique to this test.
    queued_id, later_id, ok_id, failed_id, other_id = (
        f"{test_id}-{name}" for name in ("q", "later", "ok", "failed", "other")
    )
    await redis.enqueue_job("video_changed", A, _queue_name=queue, _job_id=queued_id)
    await redis.enqueue_job(
        "relay_outbox",
        _queue_name=queue,
        _job_id=later_id,
        _defer_until=datetime.now(UTC) + timedelta(hours=1),
    )
    # Results as the actors record them when a job ends (vidwiz/job_index.py).
    index = JobIndex(redis, client.app[KEYS])
    enqueued = int(datetime.now(UTC).timestamp() * 1000) - 3000
    await index.finished(
        ok_id,
        "relay_outbox",
        [],
        job_try=1,
        enqueued_ms=enqueued,
        started_ms=enqueued,
        outcome="success",
        result={"sent": 2},
    )
    await index.finished(
        failed_id,
        "relay_outbox",
        [],
        job_try=2,
        enqueued_ms=enqueued,
        started_ms=enqueued,
        outcome="failure",
        error="RuntimeError: SQS exploded",
    )
    await JobIndex(redis, RedisKeys(client.app[KEYS].prefix + "other:")).finished(
        other_id, "relay_outbox", [], job_try=1, enqueued_ms=enqueued, started_ms=enqueued, outcome="success"
    )

    resp = await client.get("/v2/internal/queue", headers=ADMIN)
    await redis.delete(job_key_prefix + queued_id, job_key_prefix + later_id)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["queue"] == queue and body["queued_total"] == 2 and body["in_progress"] == []
    queued = {job["job_id"]: job for job in body["queued"]}
    assert queued[queued_id]["function"] == "video_changed" and queued[queued_id]["args"] == [A]
    assert queued[queued_id]["status"] == "queued" and queued[later_id]["status"] == "deferred"
    assert queued[queued_id]["enqueue_time"].endswith("+0000")
    results = {job["job_id"]: job for job in body["results"]}
    assert set(results) == {ok_id, failed_id}  # only this deployment's queue
    assert results[ok_id]["status"] == "complete" and results[ok_id]["result"] == {"sent": 2}
    assert results[failed_id]["status"] == "failed" and results[failed_id]["tries"] == 2
    assert results[failed_id]["error"] == "RuntimeError: SQS exploded"

    resp = await client.get("/v2/internal/queue", params={"limit": "0"}, headers=ADMIN)
    assert resp.status == 422
    resp = await client.get("/v2/internal/queue")
    assert resp.status == 401
    resp = await client.get("/v2/internal/queue", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 403
    assert_error(await resp.json(), "FORBIDDEN", "Invalid admin token")


async def test_queue_page_only_where_docs_are_served(client, make_client):
    resp = await client.get("/v2/internal/queue/ui")  # ENVIRONMENT=test: no docs
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND")
    staging = await make_client(environment="staging")
    resp = await staging.get("/v2/internal/queue/ui")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "/v2/internal/queue" in await resp.text()


# -- the worker as a real process ------------------------------------------------------------------


class HoldingSqsProxy:
    """An HTTP proxy in front of moto that holds requests (a hung SQS) until `pass_through`.

    On `release` a held request is dropped, or with `deliver_held` handed to SQS after all
    (SQS accepts a message whose sender is gone: the narrow duplicate window).
    """

    def __init__(self, upstream: str, *, deliver_held: bool):
        self.upstream = upstream
        self.deliver_held = deliver_held
        self.pass_through = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.forwarded = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.pass_through:
            self.held.set()
            await self.release.wait()
            if not self.deliver_held:
                return web.Response(status=502, text="dropped")  # never reached SQS
        try:
            return await self.forward(request, body)
        finally:
            self.forwarded.set()

    async def forward(self, request: web.Request, body: bytes) -> web.Response:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length", "transfer-encoding")
        }
        async with self.session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as resp:
            return web.Response(
                status=resp.status,
                body=await resp.read(),
                headers={"Content-Type": resp.headers.get("Content-Type", "application/octet-stream")},
            )

    async def __aenter__(self):
        self.session = ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info):
        self.release.set()
        await self.runner.cleanup()
        await self.session.close()


async def start_worker(env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    with append_to(log_path) as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "actors", env=env, cwd=log_path.parent, stdout=log, stderr=log
        )


async def run_check(env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "actors",
        "--check",
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 30)


@pytest.mark.parametrize("sqs_got_the_lost_send", [False, True], ids=["send-lost", "send-accepted"])
async def test_killed_worker_loses_nothing(tmp_path, test_id, moto_endpoint, sqs_got_the_lost_send):
    """SIGKILL mid-SendMessageBatch, restart: the row is sent; a duplicate appears only when
    SQS had accepted the killed worker's request (the window D6 allows)."""
    async with (
        aioboto3.Session().client(
            "sqs",
            endpoint_url=moto_endpoint,
            region_name=AWS_ENV["AWS_REGION"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ) as sqs,
        HoldingSqsProxy(moto_endpoint, deliver_held=sqs_got_the_lost_send) as proxy,
    ):
        queue_url = (await sqs.create_queue(QueueName=f"ai-notes-{test_id}"))["QueueUrl"]
        prefix = f"test:{test_id}:"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO),
            "ENVIRONMENT": "test",
            "SECRET_KEY": SECRET_KEY,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "DATA_DIR": str(tmp_path / "data"),
            "DB_URL": f"sqlite:///{tmp_path}/vidwiz.db",
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": prefix,
            **AWS_ENV,
            "AWS_ENDPOINT_URL": proxy.url,
            "SQS_AI_NOTE_QUEUE_URL": queue_url,
            "ACTOR_JOB_TIMEOUT": "3",  # lease 8 s; a killed job's key expires after 13 s
        }
        engine = create_engine(load_settings(env, env_file=None))
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        body = {"id": 41, "video_id": A, "timestamp": "0:42", "user_id": 7}
        async with engine.begin() as conn:
            await conn.execute(
                Video.__table__.insert().values(
                    video_id=A, transcript_available=True, created_at=utcnow(), updated_at=utcnow()
                )
            )
            await conn.execute(
                OutboxMessage.__table__.insert().values(
                    kind="ai_note",
                    note_id=41,
                    body=body,
                    status="pending",
                    attempts=0,
                    next_attempt_at=utcnow(),
                    created_at=utcnow(),
                )
            )

        async def outbox_row():
            async with engine.connect() as conn:
                return (await conn.execute(select(OutboxMessage.status, OutboxMessage.attempts))).one()

        redis = aioredis.from_url(REDIS_URL)
        arq_redis = ArqRedis(connection_pool=redis.connection_pool)
        log_path = tmp_path / "worker.log"
        assert await run_check(env) != 0  # no worker yet
        worker = await start_worker(env, log_path)
        try:
            await asyncio.wait_for(proxy.held.wait(), 30)  # the relay is inside SendMessageBatch
            worker.send_signal(signal.SIGKILL)
            assert await worker.wait() == -signal.SIGKILL
            assert tuple(await outbox_row()) == ("pending", 0)
            # The killed job still counts as in progress until its key expires.
            running = await ActorQueue(arq_redis, RedisKeys(prefix)).running()
            assert "relay_outbox" in [job["function"] for job in running]

            proxy.release.set()
            if sqs_got_the_lost_send:
                await asyncio.wait_for(proxy.forwarded.wait(), 30)
            proxy.pass_through = True  # SQS answers again
            worker = await start_worker(env, log_path)

            async def delivered():
                return (await outbox_row()).status == "sent"

            await eventually(
                delivered,
                "the outbox row to be sent",
                timeout=60,
                interval=0.1,
                explain=lambda: f"worker log:\n{log_path.read_text()[-4000:]}",
            )
            assert await run_check(env) == 0  # liveness probe
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(worker.wait(), 30) == 0
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
            keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()
            await engine.dispose()

        response = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        copies = 2 if sqs_got_the_lost_send else 1
        assert [m["Body"] for m in response.get("Messages", [])] == [json.dumps(body)] * copies


async def test_worker_refuses_bad_configuration(tmp_path):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "ENVIRONMENT": "test",
        "SECRET_KEY": SECRET_KEY,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "ACTOR_JOB_TIMEOUT": "-1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actors", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2 and b"ACTOR_JOB_TIMEOUT" in stderr


async def test_a_cron_tick_cannot_be_enqueued_again_once_it_has_run(client, actor_worker):
    """Every host enqueues each tick under the same id; one whose poll comes after the tick's run
    has finished must not start it again (arq refuses an id only while its job or result exists)."""
    keys = client.app[KEYS]
    redis = client.app[REDIS]
    sweep_cron = cron_jobs(keys)[0]
    tick = f"{sweep_cron.name}:1700000000123"
    async with actor_worker([], cron_jobs=[sweep_cron]):
        assert await redis.enqueue_job(sweep_cron.name, _job_id=tick, _queue_name=keys.arq_queue) is not None

        async def finished() -> bool:
            return not await redis.exists(job_key_prefix + tick)

        await eventually(finished, "the tick's sweep finished")
        late = await redis.enqueue_job(sweep_cron.name, _job_id=tick, _queue_name=keys.arq_queue)
    assert late is None
    assert await redis.exists(result_key_prefix + tick)  # kept, so that is what refused it


async def test_a_video_summary_job_id_is_free_again_once_the_job_finished(client, actor_worker, settings):
    """One summary job per video at a time (its id), but a later change must be able to ask again."""
    keys = client.app[KEYS]
    redis = client.app[REDIS]
    functions = build_worker_settings(settings).functions
    job_id = f"{keys.prefix}summarize_video:nosuchvideo"
    async with actor_worker(functions):
        assert await redis.enqueue_job("summarize_video", "nosuchvideo", _job_id=job_id, _queue_name=keys.arq_queue)

        async def finished() -> bool:
            return not await redis.exists(job_key_prefix + job_id, in_progress_key_prefix + job_id)

        await eventually(finished, "the summary job finished")
        again = await redis.enqueue_job("summarize_video", "nosuchvideo", _job_id=job_id, _queue_name=keys.arq_queue)
    assert again is not None
