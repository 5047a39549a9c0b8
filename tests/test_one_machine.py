"""The whole product on one machine, as real processes: `python supervisor.py` with built-in
workers reading canned files, an LLM stand-in as the only outside service, and nothing
else running. A blank note becomes an AI note, the video gets its transcript, metadata and
summary, and a readiness stream opened at the start sees `update`s and `done`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import REDIS_URL, eventually
from tests.standins import LLMStandin, Reply
from tests.supervised_tree import Tree, base_env, drop_keys, register_login_me, sse_events

VIDEO = "dQw4w9WgXcQ"
REPLY = "The baker feeds the starter with equal parts flour and water."
DEADLINE = 90.0  # generous: only reached when something is broken
TRANSCRIPT = [
    {"text": "welcome back to the kitchen", "offset": 0.0, "duration": 4.0},
    {"text": "first we feed the starter", "offset": 50.0, "duration": 5.0},
    {"text": "with equal parts flour and water", "offset": 62.5, "duration": 5.0},
    {"text": "then we wait twelve hours", "offset": 75.0, "duration": 4.0},
]
METADATA = {"id": VIDEO, "title": "Sourdough at home", "uploader": "Baker", "duration": 120}


class GatedStandin(LLMStandin):
    """The LLM stand-in, answering only once `gate` is set: nothing the model writes can be
    done before the test has its stream open."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def _openai(self, request):
        await self.gate.wait()
        return await super()._openai(request)


@pytest.fixture
async def standin():
    async with GatedStandin() as running:
        running.default = Reply(chunks=[REPLY])
        yield running
        running.gate.set()


@pytest.fixture
def canned(tmp_path) -> Path:
    directory = tmp_path / "canned"
    directory.mkdir()
    (directory / f"{VIDEO}.transcript.json").write_text(json.dumps(TRANSCRIPT))
    (directory / f"{VIDEO}.metadata.json").write_text(json.dumps(METADATA))
    return directory


@pytest.fixture(params=["embedded-redis", "real-redis"])
async def tree(request, tmp_path, canned, standin):
    env = base_env(
        tmp_path,
        BUILTIN_WORKERS="2",
        WORKER_FETCHER="dir",
        WORKER_DIR=str(canned),
        OPENAI_API_KEY="standin-key",
        OPENAI_BASE_URL=standin.openai_base_url,
    )
    if request.param == "real-redis":
        env.update(REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=f"test:{os.urandom(6).hex()}:")
    running = await Tree.start(env, cwd=tmp_path)
    try:
        await running.up()
        yield running
    finally:
        await running.close()
        if "REDIS_KEY_PREFIX" in env:
            await drop_keys(env["REDIS_KEY_PREFIX"])


async def test_a_blank_note_becomes_an_ai_note_and_the_video_gets_ready(tree, standin):
    async with asyncio.timeout(DEADLINE), aiohttp.ClientSession(tree.base_url) as http:
        # The supervisor runs two built-in workers against its own URL with its admin token.
        workers = tree.ready_pids("worker")
        assert len(workers) == 2
        for pid in workers:
            await tree.wait_for(rf"worker\[{pid}\] .*polling {tree.base_url} for transcript/metadata tasks")

        user = await register_login_me(http, tree.base_url)
        async with http.post("/v2/auth/login", json={"email": user["email"], "password": "password123"}) as resp:
            headers = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        async with http.patch("/v2/users/me", json={"ai_notes_enabled": True}, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        async with http.post(f"/v2/videos/{VIDEO}/notes", json={"timestamp": "1:05"}, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            note = await resp.json()
        assert note["text"] is None and note["generated_by_ai"] is False

        async with http.get(f"/v2/videos/{VIDEO}/stream", headers=headers) as stream:
            assert stream.status == 200, await stream.text()
            events = sse_events(stream)
            seen = [await anext(events)]
            assert seen[0][0] == "snapshot" and seen[0][1]["video"]["summary"] is None
            standin.gate.set()  # the model may answer now
            seen += [frame async for frame in events]  # the stream ends after `done`

        names = [name for name, _ in seen]
        assert names[-1] == "done" and "update" in names, names
        assert set(names[1:-1]) == {"update"}, names
        video = seen[-1][1]["video"]
        assert video["summary"] == REPLY and video["transcript_available"] is True
        assert video["metadata"] == METADATA and video["title"] == METADATA["title"]

        # The AI note is written by the same actors, independently of the summary.
        async def written() -> dict | None:
            async with http.get(f"/v2/videos/{VIDEO}/notes", headers=headers) as resp:
                [listed] = await resp.json()
            return listed if listed["text"] is not None else None

        listed = await eventually(written, "the AI note", timeout=DEADLINE, interval=0.1)
        assert listed["text"] == REPLY and listed["generated_by_ai"] is True

    prompts = {call.system_text: call.last_user_text for call in standin.calls}
    assert len(standin.calls) == 2  # one note, one (single-chunk) summary
    note_prompt = next(text for system, text in prompts.items() if "notes" in system)
    assert "first we feed the starter" in note_prompt and "Sourdough at home" in note_prompt
    assert await tree.signal_and_wait(signal.SIGTERM) == 0
    await tree.assert_no_leftovers()
