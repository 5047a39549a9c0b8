"""The built-in summary writer (actors/summaries.py, vidwiz/videos/summaries.py) against the LLM stand-in: requested by
video_changed once the transcript is there, chunked for long transcripts, stored through the
internal writer only when no summary exists, published to the video's streams, retried on
provider failure, and off with BUILTIN_SUMMARIES=0 or without a provider."""

from __future__ import annotations

import json

import pytest
from arq import Retry
from sqlalchemy import select

from actors.readiness import video_changed
from actors.resources import resources
from actors.summaries import SUMMARY_TRIES, summarize_video
from tests.conftest import ADMIN, eventually, queued_jobs, with_resources
from tests.standins import Reply
from vidwiz.context import KEYS, REDIS
from vidwiz.models import Video
from vidwiz.unit_of_work import Job
from vidwiz.videos.summaries import CHUNK_CHARS, MAX_CHUNKS, chunks_of, store_if_missing

A = "aaaaaaaaaaa"
SUMMARY = "A baker feeds a sourdough starter, waits, and shapes the loaf."
SHORT = [
    {"text": "first we feed the starter", "offset": 5.0, "duration": 5.0},
    {"text": "then we wait twelve hours", "offset": 75.0, "duration": 4.0},
]


@pytest.fixture
def env(env, llm_standin):
    return {**env, **llm_standin.env("openai")}


async def post(client, path: str, body: dict) -> dict:
    resp = await client.post(f"/v2/internal/videos/{A}/{path}", json=body, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def stored_summary(sessions) -> str | None:
    async with sessions() as session:
        return await session.scalar(select(Video.summary).where(Video.video_id == A))


async def queued_summary_jobs(client) -> list:
    return [job for job in await queued_jobs(client.app) if job.function == Job.SUMMARIZE_VIDEO]


# -- requesting ------------------------------------------------------------------------------------


async def test_the_transcript_requests_one_summary_job(client, actor_ctx):
    await post(client, "metadata", {"metadata": {"title": "Sourdough"}})
    await video_changed(actor_ctx, A)
    assert await queued_summary_jobs(client) == []  # no transcript yet

    await post(client, "transcript", {"transcript": SHORT})
    await video_changed(actor_ctx, A)
    await video_changed(actor_ctx, A)  # at-least-once, or another change: still one job
    [job] = await queued_summary_jobs(client)
    dispatcher = resources(actor_ctx).dispatcher
    assert job.args == (A,) and job.job_id == dispatcher.job_id(Job.SUMMARIZE_VIDEO, A)


async def test_a_video_with_a_summary_requests_none(client, actor_ctx):
    await post(client, "transcript", {"transcript": SHORT})
    await post(client, "summary", {"summary": ""})  # "" counts as present (docs/api.md §5.2)
    await video_changed(actor_ctx, A)
    assert await queued_summary_jobs(client) == []


async def test_without_a_provider_nothing_is_requested(client, actor_ctx):
    without_provider = with_resources(actor_ctx, chat_model=None, delivery=None)
    await post(client, "transcript", {"transcript": SHORT})
    await video_changed(without_provider, A)
    assert await queued_summary_jobs(client) == []
    result = await summarize_video(without_provider, A)
    assert result["stored"] is False


# -- writing ---------------------------------------------------------------------------------------


async def test_the_summary_is_stored_and_published(client, sessions, actor_ctx, llm_standin):
    await post(client, "metadata", {"metadata": {"title": "Sourdough"}})
    await post(client, "transcript", {"transcript": SHORT})
    llm_standin.queue(Reply(chunks=[SUMMARY]))
    pubsub = client.app[REDIS].pubsub()
    await pubsub.subscribe(client.app[KEYS].video_channel(A))
    try:
        assert (await summarize_video(actor_ctx, A))["stored"] is True
        message = await next_message(pubsub)
    finally:
        await pubsub.aclose()
    assert json.loads(message)["state"] == [True, True, True]
    assert json.loads(message)["video"]["summary"] == SUMMARY
    assert await stored_summary(sessions) == SUMMARY

    [call] = llm_standin.calls
    assert "Sourdough" in call.last_user_text and "1:15 then we wait twelve hours" in call.last_user_text
    # Done: a second run (at-least-once) asks nobody and changes nothing.
    assert (await summarize_video(actor_ctx, A))["stored"] is False
    assert len(llm_standin.calls) == 1


async def next_message(pubsub) -> str:
    message = await eventually(
        lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1), "a message on the video's channel"
    )
    return message["data"].decode()


async def test_a_long_transcript_is_summarised_in_chunks_then_combined(client, sessions, actor_ctx, llm_standin):
    transcript = [{"text": f"sentence number {i} " + "words " * 40, "offset": float(i * 10)} for i in range(800)]
    await post(client, "transcript", {"transcript": transcript})
    chunks = chunks_of(transcript)
    assert 1 < len(chunks) < MAX_CHUNKS
    llm_standin.default = Reply(chunks=["part summary"])
    llm_standin.queue(*[Reply(chunks=[f"part {n}"]) for n in range(1, len(chunks) + 1)])

    assert (await summarize_video(actor_ctx, A))["stored"] is True
    calls = llm_standin.calls
    assert len(calls) == len(chunks) + 1
    for call in calls[:-1]:  # every part request is bounded
        assert len(call.last_user_text) < CHUNK_CHARS + 500
    combine = calls[-1].last_user_text
    assert all(f"Part {n}: part " in combine for n in range(1, len(chunks) + 1))
    assert "sentence number" not in combine  # the combining request carries summaries only
    assert await stored_summary(sessions) == "part summary"  # the combining answer


async def test_a_provider_failure_stores_nothing_and_is_retried(client, sessions, actor_ctx, llm_standin):
    await post(client, "transcript", {"transcript": SHORT})
    llm_standin.queue(Reply(fail_before=True), Reply(chunks=[]))  # an empty reply is a failure too
    for job_try in (1, 2):
        with pytest.raises(Retry):
            await summarize_video({**actor_ctx, "job_try": job_try}, A)
        assert await stored_summary(sessions) is None
    llm_standin.queue(Reply(chunks=[SUMMARY]))
    assert (await summarize_video({**actor_ctx, "job_try": 3}, A))["stored"] is True
    assert await stored_summary(sessions) == SUMMARY


async def test_the_last_try_gives_up_without_raising(client, sessions, actor_ctx, llm_standin):
    """Ending normally keeps no arq result, so the job id is free for the next request."""
    await post(client, "transcript", {"transcript": SHORT})
    llm_standin.queue(Reply(fail_before=True))
    result = await summarize_video({**actor_ctx, "job_try": SUMMARY_TRIES}, A)
    assert result["stored"] is False and "openai request failed" in result["reason"]
    assert await stored_summary(sessions) is None


async def test_a_failed_part_stores_nothing(client, sessions, actor_ctx, llm_standin):
    await post(client, "transcript", {"transcript": [{"text": "words " * 500, "offset": float(i)} for i in range(10)]})
    llm_standin.default = Reply(fail_before=True, status=429)
    with pytest.raises(Retry):
        await summarize_video(actor_ctx, A)
    assert await stored_summary(sessions) is None
    llm_standin.default = Reply(chunks=[SUMMARY])
    assert (await summarize_video(actor_ctx, A))["stored"] is True
    assert await stored_summary(sessions) == SUMMARY


async def test_a_summary_written_meanwhile_wins(client, sessions, actor_ctx, units):
    await post(client, "transcript", {"transcript": SHORT})
    await post(client, "summary", {"summary": "from the Lambda"})
    async with units() as work:
        assert await store_if_missing(work.session, work.effects, A, "built-in") is None
    assert await stored_summary(sessions) == "from the Lambda"


class TestBuiltinSummariesOff:
    @pytest.fixture
    def env(self, env):
        return {**env, "BUILTIN_SUMMARIES": "0"}

    async def test_no_summary_is_requested_or_written(self, client, sessions, actor_ctx, llm_standin):
        await post(client, "transcript", {"transcript": SHORT})
        await video_changed(actor_ctx, A)
        assert await queued_summary_jobs(client) == []
        assert (await summarize_video(actor_ctx, A))["stored"] is False
        assert await stored_summary(sessions) is None
        assert llm_standin.calls == []


# -- chunking --------------------------------------------------------------------------------------


def test_chunks_are_bounded_in_size_and_number():
    transcript = [{"text": "x" * 100, "offset": float(i)} for i in range(10_000)] + [{"text": "y" * (3 * CHUNK_CHARS)}]
    chunks = chunks_of(transcript)
    assert len(chunks) == MAX_CHUNKS and all(len(chunk) <= CHUNK_CHARS for chunk in chunks)
    huge = chunks_of([{"text": "y" * (3 * CHUNK_CHARS)}])
    assert len(huge) == 1 and len(huge[0]) == CHUNK_CHARS


def test_chunks_keep_times_where_segments_have_them_and_skip_the_rest():
    chunks = chunks_of(
        [
            {"text": "  timed\n line ", "offset": 61.2},
            {"text": "untimed"},
            {"text": "   "},
            {"offset": 3},
            "junk",
            {"text": "negative", "offset": -1},
            {"text": "bad", "offset": "soon"},
        ]
    )
    assert chunks == ["1:01 timed line\nuntimed\nnegative\nbad"]
    assert chunks_of([]) == []
