"""examples/transcript_worker.py (the README's external-worker guide) against the real app."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import ADMIN_TOKEN
from vidwiz.context import TRANSCRIPTS
from vidwiz.tasks.models import Task, TaskStatus
from vidwiz.videos.models import Video

VID = "dQw4w9WgXcQ"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "transcript_worker.py"
HANG_GUARD = 60  # seconds; only stops a broken test from hanging


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("transcript_worker_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def create_note(factory) -> None:
    token, _ = await factory.user()
    await factory.note(token, VID, timestamp="01:02")


async def transcript_task(sessions) -> Task:
    async with sessions() as session:
        return await session.scalar(select(Task).where(Task.task_type == "fetch_transcript"))


async def test_the_example_completes_a_transcript_task(client, factory, sessions, example, capsys):
    await create_note(factory)
    segments = [{"text": "hello", "offset": 0.0, "duration": 1.5}]

    async def fetch(video_id):
        assert video_id == VID
        return segments

    await asyncio.wait_for(
        example.work(str(client.make_url("")), ADMIN_TOKEN, fetch, timeout=5, max_tasks=1), HANG_GUARD
    )

    assert (await transcript_task(sessions)).status == TaskStatus.COMPLETED
    async with sessions() as session:
        assert (await session.scalar(select(Video).where(Video.video_id == VID))).transcript_available is True
    assert await client.app[TRANSCRIPTS].load(VID) == segments
    assert "ok -> completed" in capsys.readouterr().out


async def test_the_example_reports_a_failed_fetch_so_the_task_is_retried(client, factory, sessions, example):
    await create_note(factory)

    async def fetch(video_id):
        raise LookupError("no captions in en or hi")

    await asyncio.wait_for(
        example.work(str(client.make_url("")), ADMIN_TOKEN, fetch, timeout=5, max_tasks=1), HANG_GUARD
    )

    task = await transcript_task(sessions)
    assert task.status == TaskStatus.PENDING
    assert task.worker_details["error_message"] == "LookupError: no captions in en or hi"


async def test_the_example_script_runs_one_task_end_to_end(client, factory, sessions):
    """As shipped (default YouTube fetch, which cannot succeed offline here): the script still
    claims the task and hands it back with an error message."""
    await create_note(factory)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--api-url", str(client.make_url("")), "--timeout", "5", "--max-tasks", "1",
        env={**os.environ, "ADMIN_TOKEN": ADMIN_TOKEN}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), HANG_GUARD)

    assert proc.returncode == 0
    task = await transcript_task(sessions)
    assert task.status == TaskStatus.PENDING
    assert task.worker_details["error_message"]
    assert f"task {task.id} {VID}: failed -> pending" in out.decode()


async def test_the_example_retries_network_errors_then_gives_up(example, unused_tcp_port):
    async with example.aiohttp.ClientSession() as http:
        with pytest.raises(RuntimeError, match="giving up after 2 attempts"):
            await example.call(http, "GET", f"http://127.0.0.1:{unused_tcp_port}/v2/internal/tasks", attempts=2)
