"""Redis Sentinel (issue 13): a tree configured with REDIS_SENTINELS rides out the loss of its
Redis primary. Real processes: a primary, a replica and three sentinels (tests/fleet_support.py)
and `python supervisor.py` with one web and one actor process. The primary is SIGKILLed (or
demoted by SENTINEL FAILOVER); once the sentinels promoted the replica, an open readiness
stream still gets its update (the hub resubscribed), a waiting long-poller is still handed its
task, the actors still run jobs, every accepted write is there, and nothing was restarted."""

from __future__ import annotations

import asyncio
import os
import uuid

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config import load_settings
from tests.conftest import ADMIN_TOKEN, SECRET_KEY, WAIT, auth, eventually
from tests.supervised_tree import Tree, base_env, next_frame
from vidwiz.redis_connection import close_redis, open_redis

VIDEO = "sentinel001"


async def test_open_redis_reaches_the_primary_the_sentinels_name(tmp_path, sentinel_redis):
    env = {"ENVIRONMENT": "test", "SECRET_KEY": SECRET_KEY, "ADMIN_TOKEN": ADMIN_TOKEN, "DATA_DIR": str(tmp_path)}
    settings = load_settings({**env, "REDIS_SENTINELS": sentinel_redis.sentinels}, env_file=None)
    client = open_redis(settings)
    try:
        assert await client.set("sentinel-test", "written")
        assert (await client.info("server"))["tcp_port"] == sentinel_redis.primary_port
    finally:
        await close_redis(client)


async def ok_json(resp: aiohttp.ClientResponse, status: int = 200) -> dict:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def next_video(stream: aiohttp.ClientResponse) -> dict:
    """The video of the next snapshot/update/done frame of a readiness stream."""
    return (await next_frame(stream, ("snapshot", "update", "done")))["video"]


async def video_changed_runs(http: aiohttp.ClientSession, base_url: str, admin: dict) -> float:
    """How many `video_changed` jobs the actors finished (vidwiz_actor_jobs_total)."""
    async with http.get(f"{base_url}/metrics", headers=admin) as resp:
        text = await resp.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "vidwiz_actor_jobs_total"
        and sample.labels == {"function": "video_changed", "outcome": "success"}
    )


@pytest.mark.parametrize("how", ["kill", "command"])
async def test_a_tree_on_sentinels_rides_out_a_primary_failover(tmp_path, sentinel_redis, how):
    env = base_env(
        tmp_path,
        REDIS_SENTINELS=sentinel_redis.sentinels,
        REDIS_SENTINEL_MASTER="mymaster",
        REDIS_KEY_PREFIX=f"test:{os.urandom(6).hex()}:",
    )
    admin = auth(env["ADMIN_TOKEN"])
    tree = await Tree.start(env, cwd=tmp_path)
    try:
        await tree.up()
        assert "redis[" not in tree.output(), "no embedded Redis when sentinels are set"
        base = tree.base_url
        async with aiohttp.ClientSession() as http:
            email = f"{uuid.uuid4().hex[:10]}@example.com"
            credentials = {"email": email, "password": "password123"}
            await ok_json(await http.post(f"{base}/v2/auth/register", json={**credentials, "name": "Sentinel"}), 201)
            user = auth((await ok_json(await http.post(f"{base}/v2/auth/login", json=credentials)))["token"])
            notes = f"{base}/v2/videos/{VIDEO}/notes"
            await ok_json(await http.post(notes, json={"text": "before", "timestamp": "0:01"}, headers=user), 201)

            # A worker holds both of the video's tasks; another waits for a transcript task.
            tasks = f"{base}/v2/internal/tasks"
            metadata_task = await ok_json(await http.get(tasks, params={"type": "metadata"}, headers=admin))
            transcript_task = await ok_json(await http.get(tasks, params={"type": "transcript"}, headers=admin))
            poller = asyncio.ensure_future(
                http.get(tasks, params={"type": "transcript", "timeout": "60"}, headers=admin)
            )
            stream = await http.get(f"{base}/v2/videos/{VIDEO}/stream", headers=user)
            assert (await next_video(stream))["metadata"] is None
            runs = await video_changed_runs(http, base, admin)
            mark = len(tree.lines)

            assert await sentinel_redis.fail_over(how) == sentinel_redis.replica_port

            async def ready() -> bool:
                async with http.get(f"{base}/ready") as resp:
                    return resp.status == 200

            await eventually(ready, "/ready on the new primary", explain=tree.output)

            # Writes after the failover: a metadata result reaches the open stream ...
            result = {"video_id": VIDEO, "success": True, "metadata": {"id": VIDEO, "title": "After failover"}}
            url = f"{tasks}/{metadata_task['task_id']}/result"
            assert (await ok_json(await http.post(url, json=result, headers=admin)))["status"] == "completed"
            video = await next_video(stream)
            while video["metadata"] is None:  # a resync's snapshot may come first
                video = await next_video(stream)
            assert video["metadata"]["title"] == "After failover"
            stream.close()

            # ... a released transcript task wakes the waiting poller ...
            url = f"{tasks}/{transcript_task['task_id']}/result"
            released = await ok_json(await http.post(url, json={"video_id": VIDEO, "success": False}, headers=admin))
            assert released["status"] == "pending"
            woken = await ok_json(await asyncio.wait_for(poller, WAIT))
            assert woken["task_id"] == transcript_task["task_id"]

            # ... the actors run the jobs those writes enqueued, and nothing accepted is lost.
            await eventually(
                lambda: video_changed_runs_after(http, base, admin, runs), "a video_changed job after the failover"
            )
            await ok_json(await http.post(notes, json={"text": "after", "timestamp": "0:02"}, headers=user), 201)
            listed = await ok_json(await http.get(notes, headers=user))
            assert [note["text"] for note in listed] == ["before", "after"]

        assert tree.proc.returncode is None
        assert not [line for line in tree.lines[mark:] if "restarting" in line or "giving up" in line], tree.output()
    finally:
        await tree.close()


async def video_changed_runs_after(http: aiohttp.ClientSession, base_url: str, admin: dict, before: float) -> bool:
    return await video_changed_runs(http, base_url, admin) > before
