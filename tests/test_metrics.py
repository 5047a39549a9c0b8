"""Prometheus `/metrics` (vidwiz/metrics.py, vidwiz/system/metrics.py): the series appear after the work they count, the
endpoint wants the admin token, and under the supervisor the samples of every process add up.

Metrics are process-wide and tests share the process, so in-process tests compare a scrape
before and after; the database gauges are per test (each test has its own database).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import aiohttp
import psutil
import pytest
from arq.worker import Retry
from prometheus_client.parser import text_string_to_metric_families

from actors.outcomes import count_outcomes
from actors.resources import resources
from actors.worker import build_worker_settings
from tests.conftest import ADMIN, assert_error, auth, eventually, with_resources
from tests.supervised_tree import Tree, drop_keys, real_redis_env
from vidwiz.context import HUB
from vidwiz.models import OutboxMessage, Task, TaskStatus, Video

A = "aaaaaaaaaaa"

Samples = dict[tuple[str, frozenset], float]


@pytest.fixture
def env(env):
    return {**env, "WIZ_GUEST_DAILY_QUOTA": "0"}  # guests are refused at once (quota refusals)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client) -> Samples:
    resp = await client.get("/metrics", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    return parse(await resp.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def until(client, condition, what: str) -> Samples:
    """Scrape until `condition(samples)` holds (the work it waits for runs concurrently)."""

    async def satisfied() -> Samples | None:
        samples = await scrape(client)
        return samples if condition(samples) else None

    return await eventually(satisfied, what, interval=0.05)


# -- the endpoint --------------------------------------------------------------------------------


async def test_metrics_needs_the_admin_token(client):
    resp = await client.get("/metrics")
    assert resp.status == 401
    assert_error(await resp.json(), "UNAUTHORIZED", "Missing or invalid Authorization header")
    resp = await client.get("/metrics", headers=auth("not-the-admin-token"))
    assert resp.status == 403
    assert_error(await resp.json(), "FORBIDDEN", "Invalid admin token")


# -- at rest -------------------------------------------------------------------------------------

SSE_ROUTES = ("/v2/videos/{video_id}/stream", "/v2/conversations/{conversation_id}/messages")
JOBS = ("video_changed", "relay_outbox", "summarize_video", "sweep", "reconcile_quotas")
OUTCOMES = ("success", "failure", "retry", "cancelled")
# Every labelled series whose label values are known, as a web process creates it at start-up.
WEB_SERIES = (
    [("vidwiz_sse_streams_open", {"route": route}) for route in SSE_ROUTES]
    + [("vidwiz_task_pollers_waiting", {"task_type": t}) for t in ("fetch_transcript", "fetch_metadata")]
    + [("vidwiz_wiz_quota_refusals_total", {"viewer": viewer}) for viewer in ("user", "guest")]
    + [("vidwiz_auth_throttle_refusals_total", {"scope": scope}) for scope in ("login", "register", "google")]
)
ACTOR_SERIES = [("vidwiz_actor_jobs_total", {"function": f, "outcome": o}) for f in JOBS for o in OUTCOMES]
SUPERVISOR_SERIES = [("vidwiz_supervisor_restarts_total", {"child": child}) for child in ("web", "actors")]


def missing(samples: Samples, series) -> list:
    return [(name, labels) for name, labels in series if (name, frozenset(labels.items())) not in samples]


async def test_a_fresh_app_lists_its_labelled_series(client):
    """In this process the registry is shared with earlier tests: the tree test below sees zeros."""
    assert missing(await scrape(client), WEB_SERIES) == []


# -- HTTP ----------------------------------------------------------------------------------------


async def test_requests_are_counted_by_canonical_route_and_status(client):
    route = "/v2/videos/{video_id}"
    before = await scrape(client)
    for _ in range(2):
        assert (await client.get(f"/v2/videos/{A}")).status == 401
    assert (await client.get("/no/such/path")).status == 404
    after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    labels = {"method": "GET", "route": route, "status": "401"}
    assert grew("vidwiz_http_requests_total", **labels) == 2
    count = "vidwiz_http_request_duration_seconds_count"
    assert grew(count, **labels) == 2
    inf = value(after, "vidwiz_http_request_duration_seconds_bucket", le="+Inf", **labels)
    assert inf == value(after, count, **labels)
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert grew("vidwiz_http_requests_total", **unmatched) == 1
    # Raw paths never become labels.
    assert not any(A in v or "/no/such" in v for _, labels in after for _, v in labels)


async def test_open_sse_streams_gauge(client, sessions):
    route = {"route": "/v2/videos/{video_id}/stream"}
    async with sessions() as session:
        session.add(Video(video_id=A, title="Not ready yet"))
        await session.commit()
    client.app[HUB].keepalive_interval = 0.2  # the server notices the client leaving quickly
    before = value(await scrape(client), "vidwiz_sse_streams_open", **route)

    resp = await client.get(f"/v2/videos/{A}/stream", headers={"X-Guest-Session-ID": "g-1"})
    assert resp.status == 200
    assert (await resp.content.readline()).startswith(b"event: snapshot")
    samples = await scrape(client)
    assert value(samples, "vidwiz_sse_streams_open", **route) == before + 1
    resp.close()
    await until(client, lambda s: value(s, "vidwiz_sse_streams_open", **route) == before, "the stream closed")


async def test_waiting_pollers_gauge(client):
    labels = {"task_type": "fetch_transcript"}
    before = value(await scrape(client), "vidwiz_task_pollers_waiting", **labels)
    poll = asyncio.ensure_future(client.get("/v2/internal/tasks?type=transcript&timeout=2", headers=ADMIN))
    await until(client, lambda s: value(s, "vidwiz_task_pollers_waiting", **labels) == before + 1, "a waiting poller")
    assert (await poll).status == 204  # nothing to claim: the poll times out
    assert value(await scrape(client), "vidwiz_task_pollers_waiting", **labels) == before


# -- database gauges -----------------------------------------------------------------------------


async def test_tasks_and_outbox_gauges_count_the_database(client, sessions):
    async with sessions() as session:
        session.add_all(
            [
                Task(task_type="fetch_transcript", status=TaskStatus.PENDING, task_details={"video_id": "v1"}),
                Task(task_type="fetch_transcript", status=TaskStatus.PENDING, task_details={"video_id": "v2"}),
                Task(task_type="fetch_transcript", status=TaskStatus.FAILED, task_details={"video_id": "v1"}),
                Task(task_type="fetch_metadata", status=TaskStatus.COMPLETED, task_details={"video_id": "v1"}),
                OutboxMessage(body={"n": 1}),
                OutboxMessage(body={"n": 2}, status="sent"),
                OutboxMessage(body={"n": 3}, status="failed"),
                OutboxMessage(body={"n": 4}, status="failed"),
            ]
        )
        await session.commit()
    samples = await scrape(client)
    assert value(samples, "vidwiz_tasks", task_type="fetch_transcript", status="pending") == 2
    assert value(samples, "vidwiz_tasks", task_type="fetch_transcript", status="failed") == 1
    assert value(samples, "vidwiz_tasks", task_type="fetch_metadata", status="completed") == 1
    # Every (type, status) pair is present, zeros included.
    assert ("vidwiz_tasks", frozenset({"task_type": "fetch_metadata", "status": "in_progress"}.items())) in samples
    outbox = {s: value(samples, "vidwiz_outbox_messages", status=s) for s in ("pending", "sent", "failed")}
    assert outbox == {"pending": 1, "sent": 1, "failed": 2}


# -- quota and actors ----------------------------------------------------------------------------


async def test_quota_refusals_are_counted(client):
    guest = {"X-Guest-Session-ID": "quota-guest"}
    before = value(await scrape(client), "vidwiz_wiz_quota_refusals_total", viewer="guest")
    resp = await client.post("/v2/conversations", json={"video_id": A}, headers=guest)
    assert resp.status == 201, await resp.text()
    conversation_id = (await resp.json())["id"]
    resp = await client.post(f"/v2/conversations/{conversation_id}/messages", json={"message": "hi"}, headers=guest)
    assert resp.status == 429
    after = value(await scrape(client), "vidwiz_wiz_quota_refusals_total", viewer="guest")
    assert after == before + 1


async def test_actor_job_outcomes_are_counted(client, actor_ctx):
    functions = {f.name: f for f in build_worker_settings(resources(actor_ctx).settings).functions}
    video_changed = functions["video_changed"].coroutine
    name = "vidwiz_actor_jobs_total"
    before = await scrape(client)
    await video_changed(actor_ctx, A)  # an unknown video: nothing to publish, a success
    with pytest.raises(TypeError):
        await video_changed(with_resources(actor_ctx, sessions=None), A)  # a crashing job

    @count_outcomes
    async def flaky(ctx):
        raise Retry(defer=1)

    with pytest.raises(Retry):
        await flaky({})
    after = await scrape(client)
    for function, outcome in (("video_changed", "success"), ("video_changed", "failure"), ("flaky", "retry")):
        labels = {"function": function, "outcome": outcome}
        assert value(after, name, **labels) - value(before, name, **labels) == 1, labels


# -- multiprocess: the supervised tree -----------------------------------------------------------


def serves(pid: int, client_address: tuple) -> bool:
    """Does process `pid` hold the server end of the connection from `client_address`?"""
    return any(
        tuple(c.raddr) == tuple(client_address[:2]) for c in psutil.Process(pid).net_connections("tcp") if c.raddr
    )


async def test_the_tree_sums_every_process(tmp_path):
    """Two web processes and an actor process; the supervisor's own counter; a killed child's
    live gauges dropped; stale files of an earlier run wiped at start."""
    env = real_redis_env(tmp_path, WEB_PROCESSES="2", ACTOR_PROCESSES="1")
    prefix = env["REDIS_KEY_PREFIX"]
    metrics_dir = Path(env["DATA_DIR"]) / "metrics"
    metrics_dir.mkdir(parents=True)
    (metrics_dir / "counter_1.db").write_bytes(b"stale")
    admin = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
    tree = await Tree.start(env, cwd=tmp_path)
    try:
        await tree.up()
        assert not (metrics_dir / "counter_1.db").exists()
        async with aiohttp.ClientSession(tree.base_url, connector=aiohttp.TCPConnector(force_close=True)) as http:

            async def tree_scrape() -> Samples:
                async with http.get("/metrics", headers=admin) as resp:
                    assert resp.status == 200, await resp.text()
                    return parse(await resp.text())

            async def tree_until(condition, what: str) -> Samples:
                async def satisfied() -> Samples | None:
                    samples = await tree_scrape()
                    return samples if condition(samples) else None

                return await eventually(satisfied, what, interval=0.1)

            # At rest: every series with known labels is there, at zero, from each kind of process.
            samples = await tree_until(lambda s: not missing(s, ACTOR_SERIES), "the actor's series")
            assert missing(samples, WEB_SERIES + SUPERVISOR_SERIES) == []
            assert {value(samples, name, **labels) for name, labels in WEB_SERIES + SUPERVISOR_SERIES} == {0}
            # (its start-up sweep and outbox relay may have run already)
            assert {
                value(samples, name, **labels) for name, labels in ACTOR_SERIES if labels["outcome"] != "success"
            } == {0}

            for _ in range(6):
                async with http.get(f"/v2/videos/{A}") as resp:
                    assert resp.status == 401
            # The actor process's startup sweep, counted in its own files, read by a web process.
            await tree_until(
                lambda s: value(s, "vidwiz_actor_jobs_total", function="sweep", outcome="success") >= 1,
                "the actor's sweep",
            )

            # A long poll waits in one web child; kill exactly that child. (A raw connection:
            # aiohttp's client would retry the GET on the other child.)
            waiting = {"task_type": "fetch_transcript"}
            reader, writer = await asyncio.open_connection("127.0.0.1", int(env["PORT"]))
            writer.write(
                (
                    "GET /v2/internal/tasks?type=transcript&timeout=30 HTTP/1.1\r\nHost: tree\r\n"
                    f"Authorization: {admin['Authorization']}\r\nConnection: close\r\n\r\n"
                ).encode()
            )
            await tree_until(lambda s: value(s, "vidwiz_task_pollers_waiting", **waiting) == 1, "the waiting poller")
            [pid] = [pid for pid in tree.ready_pids("web") if serves(pid, writer.get_extra_info("sockname"))]
            assert (metrics_dir / f"gauge_livesum_{pid}.db").exists()
            mark = len(tree.lines)
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ConnectionResetError):  # an EOF or a reset: no answer either way
                assert await reader.read() == b""
            writer.close()
            await tree.wait_for(r"web\[\d+\] ready", start=mark)

            samples = await tree_scrape()
            assert value(samples, "vidwiz_supervisor_restarts_total", child="web") == 1
            assert value(samples, "vidwiz_task_pollers_waiting", **waiting) == 0
            assert not (metrics_dir / f"gauge_livesum_{pid}.db").exists()
            # Requests served by the killed child still count.
            requests = {"method": "GET", "route": "/v2/videos/{video_id}", "status": "401"}
            assert value(samples, "vidwiz_http_requests_total", **requests) == 6
        assert await tree.signal_and_wait(signal.SIGTERM) == 0
    finally:
        await tree.close()
        await drop_keys(prefix)
