"""Nothing lost across a Redis restart (issue 5): AI-note requests made while Redis is down
reach SQS once it is back, and creating the notes never depends on Redis.

Real processes: a private `redis-server` (SIGKILLed, then restarted empty on the same port),
a moto SQS server, the app in this process, and `python -m actors`. The actor process rides
out the outage (issue 11: it never exits, so the supervisor never counts a restart): its
worker starts again once Redis answers, and that start-up (or, failing that, the sweeper)
re-drives the outbox rows that the notes wrote in their own transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select

from config import load_settings
from tests.conftest import ADMIN, ADMIN_TOKEN, SECRET_KEY, auth, eventually
from tests.moto import AWS_ENV
from tests.supervised_tree import Tree, append_to, base_env
from vidwiz.app import create_app
from vidwiz.db import create_engine
from vidwiz.embedded_redis import find_redis_server, free_local_port
from vidwiz.models import Base, OutboxMessage

REPO = Path(__file__).resolve().parent.parent
VIDEO = "aaaaaaaaaaa"
NOTES_WHILE_DOWN = 5
DEADLINE = 60.0  # generous bound for "comes back"; only reached when something is broken


class RedisServer:
    """A private redis-server on a fixed port that can be killed and started again.
    No persistence: the restarted server is empty, as after losing its data."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.data_dir = data_dir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            find_redis_server(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = aioredis.from_url(self.url)

        async def answers() -> bool:
            with contextlib.suppress(RedisConnectionError, OSError):
                if await client.ping():
                    return True
            assert self.process.returncode is None, "redis-server exited at start"
            return False

        try:
            await eventually(answers, "redis-server answering", timeout=DEADLINE, interval=0.05)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


class ActorProcess:
    """`python -m actors`, which must keep running whatever Redis does."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with append_to(self.log_path) as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "actors", env=self.env, cwd=self.log_path.parent, stdout=log, stderr=log
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self) -> int | None:
        if not self.running:
            return self.process.returncode if self.process else None
        self.process.terminate()
        try:
            return await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


@pytest.fixture
async def redis_server(tmp_path):
    server = RedisServer(free_local_port(), tmp_path / "redis")
    await server.start()
    yield server
    await server.kill()


@pytest.fixture
def tree_env(tmp_path, test_id, redis_server, moto_endpoint, sqs_queue_url):
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "ENVIRONMENT": "test",
        "SECRET_KEY": SECRET_KEY,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DATA_DIR": str(tmp_path / "data"),
        "TRANSCRIPT_DIR": str(tmp_path / "transcripts"),
        "DB_URL": f"sqlite:///{tmp_path}/vidwiz.db",
        "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": f"test:{test_id}:",
        **AWS_ENV,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "SQS_AI_NOTE_QUEUE_URL": sqs_queue_url,
    }


@pytest.fixture
async def shared_db(tree_env):
    """The database the app and the actor process share, with every table."""
    eng = create_engine(load_settings(tree_env, env_file=None))
    async with eng.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield eng
    await eng.dispose()


@pytest.fixture
async def actors(tree_env, shared_db, tmp_path):
    process = ActorProcess(tree_env, tmp_path / "actors.log")
    await process.start()
    yield process
    await process.stop()


@pytest.fixture
async def app_client(aiohttp_client, tree_env, shared_db):
    """The app in this process, on the private Redis (its own client, as in production)."""
    return await aiohttp_client(create_app(load_settings(tree_env, env_file=None)))


async def add_ai_note_request(client, token: str, index: int) -> int:
    resp = await client.post(f"/v2/videos/{VIDEO}/notes", json={"timestamp": f"0:{index:02d}"}, headers=auth(token))
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def received_note_ids(sqs, queue_url: str, wanted: set[int], actors: ActorProcess) -> list[int]:
    """Receive (and delete) messages until every wanted note id was seen; all ids seen."""
    seen: list[int] = []

    async def all_received() -> bool:
        response = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            seen.append(json.loads(message["Body"])["id"])
            await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return wanted <= set(seen)

    await eventually(
        all_received,
        "the AI-note requests reaching SQS",
        timeout=DEADLINE,
        interval=0,  # each receive long-polls for a second
        explain=lambda: f"missing: {sorted(wanted - set(seen))}\nactors log:\n{actors.log()}",
    )
    return seen


async def test_ai_note_requests_made_while_redis_is_down_reach_sqs_after_it_restarts(
    app_client, actors, redis_server, sqs, sqs_queue_url, shared_db
):
    client = app_client
    creds = {"email": "r@example.com", "password": "password123"}
    resp = await client.post("/v2/auth/register", json={**creds, "name": "Redis Restart"})
    assert resp.status == 201, await resp.text()
    resp = await client.post("/v2/auth/login", json=creds)
    token = (await resp.json())["token"]
    resp = await client.patch("/v2/users/me", json={"ai_notes_enabled": True}, headers=auth(token))
    assert resp.status == 200, await resp.text()
    resp = await client.post(
        f"/v2/internal/videos/{VIDEO}/transcript", json={"transcript": [{"text": "hi"}]}, headers=ADMIN
    )
    assert resp.status == 200, await resp.text()

    # The pipeline works before the outage (and the worker is up).
    before = await add_ai_note_request(client, token, 0)
    await received_note_ids(sqs, sqs_queue_url, {before}, actors)

    await redis_server.kill()
    during = {await add_ai_note_request(client, token, index) for index in range(1, NOTES_WHILE_DOWN + 1)}
    assert len(during) == NOTES_WHILE_DOWN
    await redis_server.start()

    seen = await received_note_ids(sqs, sqs_queue_url, during, actors)
    assert set(seen) <= during | {before}  # duplicates are allowed (at-least-once), strays are not
    await every_row_sent(shared_db, during | {before})
    assert actors.running, f"the actor process exited:\n{actors.log()}"
    assert await actors.stop() == 0, actors.log()


async def every_row_sent(engine, note_ids: set[int]) -> None:
    """SQS accepted them; the relay marks the rows sent right after (bounded wait)."""
    wanted = {note_id: "sent" for note_id in note_ids}
    statuses: dict[int, str] = {}

    async def all_sent() -> bool:
        async with engine.connect() as conn:
            statuses.update((await conn.execute(select(OutboxMessage.note_id, OutboxMessage.status))).all())
        return statuses == wanted

    await eventually(
        all_sent, "every outbox row marked sent", timeout=DEADLINE, interval=0.1, explain=lambda: f"rows: {statuses}"
    )


# -- the supervised tree: a flapping embedded Redis -----------------------------------------------

KILLS = 3


async def actor_jobs_done(http, base_url: str, admin: dict[str, str]) -> float:
    """video_changed jobs the actors finished, from the tree's /metrics."""
    async with http.get(f"{base_url}/metrics", headers=admin) as resp:
        assert resp.status == 200, await resp.text()
        text = await resp.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "vidwiz_actor_jobs"
        for sample in family.samples
        if sample.name == "vidwiz_actor_jobs_total"
        and sample.labels == {"function": "video_changed", "outcome": "success"}
    )


async def test_a_flapping_embedded_redis_never_stops_web_or_actors(tmp_path):
    """Redis SIGKILLed three times in a row: only Redis restarts (3 restarts, within the
    default intensity of 5 in 30 s: before, each kill also restarted the actors, and the
    tree gave up). The web and actor processes keep their pids and the actors go on
    processing jobs after every restart."""
    env = base_env(tmp_path)  # no REDIS_URL: the embedded Redis under the supervisor
    admin = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
    tree = await Tree.start(env, cwd=tmp_path)
    try:
        await tree.up()
        web, actors = tree.ready_pids("web"), tree.ready_pids("actors")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:

            async def ready() -> bool:
                async with http.get(f"{tree.base_url}/ready") as resp:
                    return resp.status == 200

            for kill in range(1, KILLS + 1):
                [redis_pid] = tree.ready_pids("redis")
                mark = len(tree.lines)
                os.kill(redis_pid, signal.SIGKILL)
                await tree.wait_for(rf"redis\[{redis_pid}\] was killed by SIGKILL; restarting", start=mark)
                await tree.wait_for(r"redis\[\d+\] ready", start=mark)
                await eventually(
                    ready, "the web tier reaching Redis again", timeout=DEADLINE, interval=0.1, explain=tree.output
                )

                # The actors still take jobs: a transcript arrives, video_changed runs.
                done = await actor_jobs_done(http, tree.base_url, admin)
                video_id = f"flapping{kill:03d}"
                async with http.post(
                    f"{tree.base_url}/v2/internal/videos/{video_id}/transcript",
                    json={"transcript": [{"text": "hi"}]},
                    headers=admin,
                ) as resp:
                    assert resp.status == 200, await resp.text()

                async def processed(done: float = done) -> bool:
                    return await actor_jobs_done(http, tree.base_url, admin) > done

                await eventually(
                    processed,
                    f"the actors processing a job after Redis restart {kill}",
                    timeout=DEADLINE,
                    interval=0.1,
                    explain=tree.output,
                )

        assert tree.proc.returncode is None and "giving up" not in tree.output()
        assert (tree.ready_pids("web"), tree.ready_pids("actors")) == (web, actors)
        restarts = [line for line in tree.lines if "; restarting in" in line]
        assert len(restarts) == KILLS and all("redis[" in line for line in restarts), restarts
        password = json.loads((Path(env["DATA_DIR"]) / "secrets.json").read_text())["REDIS_PASSWORD"]
        assert await tree.signal_and_wait(signal.SIGTERM) == 0, tree.output()
        assert password not in tree.output()
    finally:
        await tree.close()
