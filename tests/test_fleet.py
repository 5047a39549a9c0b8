"""Correct across hosts: three supervisors as separate hosts (tests/fleet.py: network
namespaces) sharing one PostgreSQL database (through PgBouncer), one Redis and one key
prefix. Each test drives the fleet through its hosts' addresses and checks what a single
box could not show: streams, long polls, quotas, throttles, cron, the outbox relay and
accepted writes stay right when the work is spread over hosts, and when a host dies.

One fleet for the module (starting three trees is the expensive part); the tests run in
file order, and the ones that stop or kill a host start it again before they end."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web
from arq.constants import in_progress_key_prefix
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from actors.worker import SWEEP_SECONDS, build_worker_settings
from config import load_settings
from config.settings import to_async_db_url
from tests.conftest import ADMIN, WAIT, auth, eventually
from tests.fleet import Host, metric_total, running
from tests.moto import AWS_ENV, receive_all, run_moto_server
from tests.standins import LLMStandin, Reply, parse_sse
from tests.supervised_tree import sse_events
from vidwiz.events import RedisKeys
from vidwiz.models import Note, OutboxMessage
from vidwiz.unit_of_work import Job

MODULE = pytest.mark.asyncio(loop_scope="module")
pytestmark = [MODULE, pytest.mark.timeout(300)]

GUEST_LIMIT = 3
ACCOUNT_LIMIT = 3
JOB_TIMEOUT = 5  # the outbox lease is this + 5 s: a dead host's claims come back soon
TRANSCRIPT = [{"text": "fold the dough twice", "offset": 1.0, "duration": 2.0}]
PASSWORD = "password123"
CLIENTS = 6  # concurrent writers where a test writes many notes


class SqsGate:
    """A proxy on the hub in front of moto, which the hosts use as their AWS endpoint. Calls
    pass through; once `armed`, the first host to send a batch becomes the `victim`: its
    calls are held (its relay is then mid-delivery) until `release()`, and answered 503."""

    def __init__(self, upstream: str, host: str) -> None:
        self.upstream = upstream
        self.host = host
        self.armed = False
        self.victim: str | None = None
        self.caught = asyncio.Event()
        self._released = asyncio.Event()
        self.url = ""

    async def __aenter__(self) -> SqsGate:
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.url = f"http://{self.host}:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._released.set()
        await self._runner.cleanup()
        await self._http.close()

    def release(self) -> None:
        self._released.set()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        batch = b"SendMessageBatch" in body or request.headers.get("X-Amz-Target", "").endswith("SendMessageBatch")
        if self.armed and batch and self.victim in (None, request.remote):
            self.victim = request.remote
            self.caught.set()
            await self._released.wait()
            return web.Response(status=503)
        skip = {"host", "content-length", "transfer-encoding"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        async with self._http.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as resp:
            payload = await resp.read()
            kept = {k: v for k, v in resp.headers.items() if k.lower() not in (*skip, "content-encoding", "connection")}
            return web.Response(status=resp.status, body=payload, headers=kept)


class Fleet:
    def __init__(self, hosts: list[Host], network, gate: SqsGate, sqs, queue_url: str, http) -> None:
        self.hosts = hosts
        self.network = network
        self.gate = gate
        self.sqs = sqs
        self.queue_url = queue_url
        self.http = http
        self.engine = create_async_engine(to_async_db_url(network.direct_db_url), pool_size=1)

    def url(self, host: int, path: str) -> str:
        return self.hosts[host].base_url + path

    async def user(self, host: int = 0, ai_notes: bool = False) -> dict[str, str]:
        """Register and log in through a host; the bearer headers."""
        email = f"{uuid.uuid4().hex[:10]}@example.com"
        body = {"email": email, "password": PASSWORD, "name": "Fleet User"}
        async with self.http.post(self.url(host, "/v2/auth/register"), json=body) as resp:
            assert resp.status == 201, await resp.text()
        async with self.http.post(
            self.url(host, "/v2/auth/login"), json={"email": email, "password": PASSWORD}
        ) as resp:
            assert resp.status == 200, await resp.text()
            headers = auth((await resp.json())["token"])
        if ai_notes:
            async with self.http.patch(
                self.url(host, "/v2/users/me"), json={"ai_notes_enabled": True}, headers=headers
            ) as resp:
                assert resp.status == 200, await resp.text()
        return headers

    async def note(self, host: int, headers, video_id: str, **body: Any) -> dict:
        async with self.http.post(
            self.url(host, f"/v2/videos/{video_id}/notes"), json={"timestamp": "0:01", **body}, headers=headers
        ) as resp:
            assert resp.status == 201, await resp.text()
            return await resp.json()

    async def write(self, host: int, video_id: str, kind: str, body: dict) -> dict:
        """An internal video writer (metadata, transcript, summary) through a host."""
        async with self.http.post(
            self.url(host, f"/v2/internal/videos/{video_id}/{kind}"), json=body, headers=ADMIN
        ) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def scalar(self, query):
        async with self.engine.connect() as conn:
            return await conn.scalar(query)

    async def metric(self, name: str, **labels: str) -> float:
        return await metric_total(self.http, self.hosts, name, ADMIN, **labels)


def video(tag: str) -> str:
    return (tag + uuid.uuid4().hex)[:11]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(fleet_network) -> AsyncIterator[Fleet]:
    hub = fleet_network.hub
    with run_moto_server(hub) as moto:
        async with (
            LLMStandin(host=hub) as standin,
            SqsGate(moto, hub) as gate,
            aioboto3.Session().client(
                "sqs", endpoint_url=moto, region_name=AWS_ENV["AWS_REGION"], **_credentials()
            ) as sqs,
        ):
            standin.default = Reply(chunks=["An answer."])
            queue_url = (await sqs.create_queue(QueueName=f"fleet-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
            env = fleet_network.env(
                **standin.env("gemini"),
                **AWS_ENV,
                AWS_ENDPOINT_URL=gate.url,
                SQS_AI_NOTE_QUEUE_URL=queue_url,
                ACTOR_JOB_TIMEOUT=str(JOB_TIMEOUT),
                WIZ_GUEST_DAILY_QUOTA=str(GUEST_LIMIT),
                # Every client comes from the hub's one address: only the per-account limit binds.
                LOGIN_ACCOUNT_LIMIT=str(ACCOUNT_LIMIT),
                LOGIN_ADDRESS_LIMIT="100000",
                LOGIN_MAX_DELAY_SECONDS="0.01",
                SIGNUP_ADDRESS_LIMIT="100000",
            )
            async with (
                running(fleet_network.hosts(env)) as hosts,
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
            ):
                fleet = Fleet(hosts, fleet_network, gate, sqs, queue_url, http)
                yield fleet
                await fleet.engine.dispose()


def _credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    }


# -- streams and long polls -------------------------------------------------------------------------


async def test_a_readiness_change_through_one_host_reaches_streams_on_the_others(fleet):
    video_id = video("r")
    await fleet.note(0, await fleet.user(0), video_id, text="creates the video")

    async def watch(host: int, opened: asyncio.Event) -> list[tuple[str, dict]]:
        headers = {"X-Guest-Session-ID": f"fleet-guest-{host}"}
        async with fleet.http.get(fleet.url(host, f"/v2/videos/{video_id}/stream"), headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            events = sse_events(resp)
            seen = [await anext(events)]
            opened.set()
            return seen + [frame async for frame in events]  # ends after `done`

    opened = [asyncio.Event(), asyncio.Event()]
    watchers = [asyncio.create_task(watch(host, event)) for host, event in zip((1, 2), opened, strict=True)]
    for event in opened:
        await asyncio.wait_for(event.wait(), WAIT)
    await fleet.write(0, video_id, "metadata", {"metadata": {"title": "Across hosts", "duration": 60}})
    await fleet.write(0, video_id, "summary", {"summary": "A summary."})
    await fleet.write(0, video_id, "transcript", {"transcript": TRANSCRIPT})

    for seen in await asyncio.wait_for(asyncio.gather(*watchers), WAIT):
        names = [name for name, _ in seen]
        assert names[0] == "snapshot" and names[-1] == "done" and "update" in names, names
        final = seen[-1][1]["video"]
        assert final["title"] == "Across hosts" and final["transcript_available"] is True
        assert final["summary"] is not None


async def poll(fleet: Fleet, host: int, timeout: int) -> tuple[int, dict | None]:
    async with fleet.http.get(
        fleet.url(host, "/v2/internal/tasks"), params={"type": "transcript", "timeout": str(timeout)}, headers=ADMIN
    ) as resp:
        assert resp.status in (200, 204), await resp.text()
        return resp.status, (await resp.json() if resp.status == 200 else None)


async def test_a_task_created_through_one_host_wakes_a_poller_waiting_on_another(fleet):
    headers = await fleet.user(0)
    while (await poll(fleet, 1, 1))[0] == 200:  # earlier tests' tasks out of the way
        pass
    for _ in range(3):
        video_id = video("w")
        waiting = asyncio.create_task(poll(fleet, 1, 30))

        async def one_waiting() -> bool:
            return await metric_total(fleet.http, fleet.hosts[1:2], "vidwiz_task_pollers_waiting", ADMIN) == 1

        await eventually(one_waiting, "the poller on host 1 waiting")
        await fleet.note(0, headers, video_id, text="schedules a transcript task")
        status, task = await asyncio.wait_for(waiting, WAIT)
        # The hosts' periodic re-check is off (TASK_RECHECK_SECONDS): only the wake-up that
        # crossed hosts can have handed host 1 the task within its poll.
        assert status == 200 and task["task_details"]["video_id"] == video_id


async def test_concurrent_pollers_on_every_host_never_get_one_task_twice(fleet):
    headers = await fleet.user(0)
    videos = [video("c") for _ in range(24)]
    claims: list[tuple[int, int, str]] = []
    finished = asyncio.Event()

    async def poller(host: int) -> None:
        while not finished.is_set():
            status, task = await poll(fleet, host, 2)
            if task is not None:
                claims.append((task["task_id"], host, task["task_details"]["video_id"]))

    pollers = [asyncio.create_task(poller(host)) for host in range(3) for _ in range(3)]
    try:
        await asyncio.gather(*(fleet.note(i % 3, headers, v, text="x") for i, v in enumerate(videos)))
        await eventually(lambda: set(videos) <= {v for _, _, v in claims}, "every video's transcript task claimed")
    finally:
        finished.set()
        await asyncio.gather(*pollers)
    counts = Counter(task_id for task_id, _, _ in claims)
    assert [task_id for task_id, n in counts.items() if n > 1] == []
    assert len({host for _, host, _ in claims}) > 1  # the claims really were spread


# -- limits shared by the fleet -----------------------------------------------------------------------


async def test_the_guest_quota_is_exact_across_hosts(fleet):
    guest = {"X-Guest-Session-ID": f"fleet-quota-{uuid.uuid4().hex[:8]}"}
    video_id = video("q")
    async with fleet.http.post(fleet.url(0, "/v2/conversations"), json={"video_id": video_id}, headers=guest) as resp:
        assert resp.status == 201, await resp.text()
        conversation = (await resp.json())["id"]
    await fleet.write(0, video_id, "transcript", {"transcript": TRANSCRIPT})

    async def send(host: int) -> int:
        async with fleet.http.post(
            fleet.url(host, f"/v2/conversations/{conversation}/messages"), json={"message": "hi"}, headers=guest
        ) as resp:
            body = await resp.text()
            if resp.status == 200:
                assert parse_sse(body)[-1] == "[DONE]", body
            return resp.status

    statuses = await asyncio.gather(*(send(i % 3) for i in range(4 * GUEST_LIMIT)))
    assert Counter(statuses) == {200: GUEST_LIMIT, 429: 3 * GUEST_LIMIT}, statuses


async def test_the_login_throttle_is_exact_across_hosts(fleet):
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": PASSWORD, "name": "Throttled"}
    async with fleet.http.post(fleet.url(0, "/v2/auth/register"), json=body) as resp:
        assert resp.status == 201, await resp.text()

    async def login(host: int, password: str) -> int:
        async with fleet.http.post(
            fleet.url(host, "/v2/auth/login"), json={"email": email, "password": password}
        ) as resp:
            return resp.status

    statuses = await asyncio.gather(*(login(i % 3, "wrong-password") for i in range(4 * ACCOUNT_LIMIT)))
    assert Counter(statuses) == {401: ACCOUNT_LIMIT, 429: 3 * ACCOUNT_LIMIT}, statuses
    assert {await login(host, PASSWORD) for host in range(3)} == {429}  # locked on every host


# -- cron ---------------------------------------------------------------------------------------------


async def test_cron_work_runs_once_per_tick_fleet_wide(fleet):
    """Every host's actor process schedules the sweep for each tick under the tick's job id,
    and one of them runs it. Besides, each worker start runs one of its own (arq's
    run_at_startup, a job id of its own), whenever it comes. So: the runs the hosts count
    across a tick equal the job ids that started meanwhile (arq keeps a cron job's
    in-progress key a minute after it ran), and the tick's is one of them. (Quota
    reconciliation is the same kind of cron job, every ten minutes: too rare to wait for.)"""
    period = 60 / len(SWEEP_SECONDS)
    tick = (time.time() + 2) // period * period + period  # the next tick at least 2 s away
    sweeps = SweepJobs(fleet)
    runs_before, ids_before = await eventually(sweeps.quiet, "no sweep queued or running")
    # Waiting for the clock: by then every host's actors (polling every 50 ms) have passed the
    # tick, and whatever they ran for it has finished (a sweep takes milliseconds).
    await asyncio.sleep(tick + 3 - time.time())
    runs_after, ids_after = await eventually(sweeps.quiet, "no sweep queued or running")
    started = ids_after - ids_before
    assert [job for job in started if sweeps.second(job) == tick] != []  # the tick ran
    assert runs_after - runs_before == len(started), sorted(started)


class SweepJobs:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.keys = RedisKeys(fleet.network.prefix)
        self.prefix = f"cron:{fleet.network.prefix}{Job.SWEEP}:"

    @staticmethod
    def second(job_id: str) -> int:
        """The second a cron job id names (arq's ids: the run's time in ms, cron runs at .123 s)."""
        return int(job_id.rsplit(":", 1)[1]) // 1000

    async def quiet(self) -> tuple[float, set[str]] | None:
        """(sweep runs counted by the hosts, sweep job ids run within the minute), when no
        sweep is queued or running before and after reading them; else None."""
        redis = aioredis.from_url(self.fleet.network.redis_url)
        try:
            first = await self._snapshot(redis)
            runs = await self.fleet.metric("vidwiz_actor_jobs_total", function="sweep")
            second = await self._snapshot(redis)
        finally:
            await redis.aclose()
        return (runs, first[1]) if first == second and not first[0] else None

    async def _snapshot(self, redis: aioredis.Redis) -> tuple[bool, set[str]]:
        queued = await redis.zrange(self.keys.arq_queue, 0, -1)
        ran = {
            key.decode().removeprefix(in_progress_key_prefix)
            async for key in redis.scan_iter(match=f"{in_progress_key_prefix}{self.prefix}*")
        }
        return any(job.decode().startswith(self.prefix) for job in queued), ran


async def test_every_cron_job_has_one_job_id_per_tick(fleet_network):
    """What makes the test above hold for every cron job, the quota reconciliation too: no
    fixed job id, so arq names each run after its tick, the same on every host."""
    settings = load_settings(fleet_network.env(), env_file=None)
    cron_jobs = build_worker_settings(settings).cron_jobs or []
    assert {job.name.rsplit(":", 1)[-1] for job in cron_jobs} == {"sweep", "reconcile_quotas"}
    assert all(job.unique and job.job_id is None for job in cron_jobs)


# -- the outbox relay ---------------------------------------------------------------------------------


async def ai_note_requests(fleet: Fleet, hosts: list[int], count: int) -> list[int]:
    """`count` blank notes of AI-note users on a video with a transcript, through the hosts
    in turn; their ids."""
    video_id = video("o")
    users = [await fleet.user(host, ai_notes=True) for host in hosts]
    await fleet.note(hosts[0], users[0], video_id, text="creates the video")
    await fleet.write(hosts[0], video_id, "transcript", {"transcript": TRANSCRIPT})
    ids: list[int] = []

    async def client(k: int) -> None:  # a few clients, each writing its share in turn
        for i in range(k, count, CLIENTS):
            note = await fleet.note(hosts[i % len(hosts)], users[i % len(hosts)], video_id, timestamp=f"0:{i:02d}")
            ids.append(note["id"])

    await asyncio.gather(*(client(k) for k in range(CLIENTS)))
    return ids


async def delivered(fleet: Fleet, into: Counter) -> Counter:
    into.update(json.loads(body)["id"] for body in await receive_all(fleet.sqs, fleet.queue_url))
    return into


async def test_the_outbox_relay_never_sends_a_row_from_two_hosts(fleet):
    ids = await ai_note_requests(fleet, [0, 1, 2], 60)
    sent: Counter = Counter()

    async def all_sent() -> bool:
        await delivered(fleet, sent)
        pending = await fleet.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
        )
        return set(ids) <= set(sent) and pending == 0

    await eventually(all_sent, "every AI-note request delivered")
    assert {note_id: n for note_id, n in sent.items() if n > 1} == {}


async def test_a_host_killed_mid_relay_loses_nothing(fleet):
    if not fleet.network.network.isolated:
        pytest.skip("loopback hosts all reach the hub from 127.0.0.1: the gate cannot tell who is relaying")
    fleet.gate.armed = True
    try:
        ids = await ai_note_requests(fleet, [0, 1, 2], 30)
        await asyncio.wait_for(fleet.gate.caught.wait(), WAIT)  # a host is mid-delivery
        [victim] = [host for host in fleet.hosts if host.address == fleet.gate.victim]
        await victim.kill()
    finally:
        fleet.gate.armed = False
        fleet.gate.release()
    sent: Counter = Counter()

    async def all_sent() -> bool:
        await delivered(fleet, sent)
        return set(ids) <= set(sent)

    # The victim's claimed rows come back when their lease runs out; another host sends them.
    await eventually(all_sent, "every AI-note request delivered", timeout=JOB_TIMEOUT + 5 + 2 * WAIT)
    await victim.start()
    await victim.up()


# -- hosts going away under load ------------------------------------------------------------------------


async def test_a_host_stopped_killed_and_restarted_under_load_loses_no_accepted_write(fleet):
    headers = await fleet.user(0)
    video_id = video("l")
    accepted: list[int] = []
    written: dict[int, int] = dict.fromkeys(range(3), 0)
    down: set[int] = set()  # hosts being stopped, killed or started: their clients may fail
    unexpected: list[tuple[int, str]] = []  # failures seen by clients of a host that was up
    finished = asyncio.Event()

    def failed(host: int, what: str) -> None:
        if host not in down:
            unexpected.append((host, what))

    async def writer(host: int, n: int) -> None:
        i = 0
        while not finished.is_set():
            i += 1
            try:
                async with fleet.http.post(
                    fleet.url(host, f"/v2/videos/{video_id}/notes"),
                    json={"timestamp": "0:01", "text": f"client {host}.{n} note {i}"},
                    headers=headers,
                ) as resp:
                    if resp.status == 201:
                        accepted.append((await resp.json())["id"])
                        written[host] += 1
                    else:
                        failed(host, f"{resp.status} {await resp.text()}")
            except aiohttp.ClientError as exc:
                failed(host, repr(exc))
                await asyncio.sleep(0.05)  # the host is down: do not spin

    async def writes_on(host: int, more: int) -> None:
        target = written[host] + more
        await eventually(lambda: written[host] >= target, f"{more} more writes through host {host}")

    await fleet.note(0, headers, video_id, text="creates the video")
    writers = [asyncio.create_task(writer(host, n)) for host in range(3) for n in range(3)]
    try:
        await writes_on(0, 20)
        down.add(1)
        assert await fleet.hosts[1].stop() == 0  # a deploy's graceful stop
        await writes_on(0, 20)
        await fleet.hosts[1].start()
        await fleet.hosts[1].up()
        down.discard(1)
        await writes_on(1, 10)
        down.add(2)
        await fleet.hosts[2].kill()  # a host dies
        await writes_on(0, 20)
        await fleet.hosts[2].start()
        await fleet.hosts[2].up()
        down.discard(2)
        await writes_on(2, 10)
    finally:
        finished.set()
        await asyncio.gather(*writers)

    assert unexpected == []  # the clients of the hosts that stayed up saw no error
    stored = await fleet.scalar(select(func.count()).select_from(Note).where(Note.id.in_(accepted)))
    assert stored == len(accepted) == len(set(accepted))
