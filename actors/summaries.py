"""`summarize_video(video_id)`: the built-in summary writer, for deployments without the
ai-summary Lambda (on unless BUILTIN_SUMMARIES=0, and only with an LLM provider).

`video_changed` enqueues it (one job id per video) once a video has its transcript and no
summary. A long transcript is summarised in bounded chunks whose summaries are then
combined, so no request carries more than CHUNK_CHARS of transcript. The summary is stored
through the internal API's writer only if the video still has none by then (a Lambda's or
the internal endpoint's summary wins), and readiness is published on the video's channel
so its streams get `update`/`done`. A provider failure stores nothing and is retried by arq
with backoff; after SUMMARY_TRIES the job ends without a result, so the next change to the
video can request it again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Any

from arq import Retry
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from actors.ai_notes import clip
from vidwiz.events import RedisKeys, enqueue_job
from vidwiz.internal.schemas import MAX_SUMMARY_LENGTH
from vidwiz.llm import ChatModel, LLMError
from vidwiz.videos.models import Video
from vidwiz.videos.service import get_video, publish_readiness, store_summary

log = logging.getLogger(__name__)

CHUNK_CHARS = 12_000  # transcript per request (~3k tokens)
MAX_CHUNKS = 24  # ~290k characters, about five hours of speech; the rest is left out
PARALLEL_CHUNKS = 4
CHUNK_MAX_TOKENS = 1024
CHUNK_SUMMARY_MAX_CHARS = 3000  # bounds the combining request: MAX_CHUNKS of these
SUMMARY_MAX_TOKENS = 2048
# Several model calls per job: its own timeout, well above a single call's.
SUMMARY_JOB_TIMEOUT = 600.0
SUMMARY_TRIES = 5
RETRY_BASE_SECONDS = 5

SYSTEM_PROMPT = (
    "You summarise videos from their transcripts for a reader who has not watched them. Write "
    "plain prose: a short paragraph, or a few short bullet points for a long video, covering "
    "the main points in order. No preamble, no markdown headings."
)


def summaries_enabled(ctx: dict[str, Any]) -> bool:
    return ctx["settings"].builtin_summaries and ctx.get("chat_model") is not None


def summary_job_id(keys: RedisKeys, video_id: str) -> str:
    # arq's job ids are global to the Redis: name the queue so deployments never collide.
    return f"{keys.arq_queue}:summarize_video:{video_id}"


async def request_summary(ctx: dict[str, Any], video: Video) -> bool:
    """Enqueue `summarize_video` when the built-in writer is on and the video needs one."""
    if not (summaries_enabled(ctx) and video.transcript_available and video.summary is None):
        return False
    await enqueue_job(
        ctx["redis"], ctx["keys"], "summarize_video", video.video_id, job_id=summary_job_id(ctx["keys"], video.video_id)
    )
    return True


async def summarize_video(ctx: dict[str, Any], video_id: str) -> dict[str, Any]:
    if not summaries_enabled(ctx):
        return {"video_id": video_id, "stored": False, "reason": "built-in summaries are off"}
    async with ctx["sessions"]() as session:
        video = await get_video(session, video_id)
    if video is None or not video.transcript_available:
        return {"video_id": video_id, "stored": False, "reason": "no transcript"}
    if video.summary is not None:
        return {"video_id": video_id, "stored": False, "reason": "already summarised"}
    transcript = await ctx["transcripts"].load(video_id)
    if not transcript:  # the store hiccuped: the row says the transcript is there
        return retry_or_give_up(ctx, video_id, "the transcript could not be read")
    chunks = transcript_chunks(transcript)
    if not chunks:
        return {"video_id": video_id, "stored": False, "reason": "the transcript has no text"}
    try:
        summary = await write_summary(ctx["chat_model"], video.title, chunks)
    except LLMError as exc:
        return retry_or_give_up(ctx, video_id, str(exc))
    stored = await store_if_missing(ctx["sessions"], video_id, summary)
    if stored is None:
        return {"video_id": video_id, "stored": False, "reason": "already summarised"}
    await publish_readiness(ctx["redis"], ctx["keys"], stored)
    return {"video_id": video_id, "stored": True, "chars": len(summary)}


def retry_or_give_up(ctx: dict[str, Any], video_id: str, error: str) -> dict[str, Any]:
    """Raise arq's Retry (5 s, 10 s, 20 s … by try), or after the last try return a failure.

    Returning (rather than letting arq fail the job) keeps no result under the job id, which
    would otherwise block the next request for this video for an hour."""
    job_try = ctx.get("job_try", 1)
    if job_try >= SUMMARY_TRIES:
        log.error("video %s: no summary after %d tries, giving up until it changes again: %s", video_id, job_try, error)
        return {"video_id": video_id, "stored": False, "reason": error}
    log.warning("video %s: summary failed (try %d), retrying: %s", video_id, job_try, error)
    raise Retry(defer=RETRY_BASE_SECONDS * 2 ** (job_try - 1))


async def store_if_missing(sessions: async_sessionmaker[AsyncSession], video_id: str, summary: str) -> Video | None:
    """Store the summary unless the video got one meanwhile; the stored video, or None."""
    async with sessions() as session:
        # A no-op UPDATE takes the row lock (PostgreSQL) or the write lock (SQLite) first, so a
        # summary written concurrently is seen below rather than overwritten.
        await session.execute(
            update(Video)
            .where(Video.video_id == video_id)
            .values(updated_at=Video.updated_at)
            .execution_options(synchronize_session=False)
        )
        if await session.scalar(select(Video.summary).where(Video.video_id == video_id)) is not None:
            return None
        video = await store_summary(session, video_id, summary)
        await session.commit()
        return video


async def write_summary(model: ChatModel, title: str | None, chunks: Sequence[str]) -> str:
    """One request for a single chunk; for more, a summary per chunk, then one combining
    them. Raises LLMError (nothing partial is returned)."""
    heading = f"Video title: {title}\n\n" if title else ""
    if len(chunks) == 1:
        prompt = f"{heading}Transcript:\n{chunks[0]}\n\nSummarise this video."
        return clip(await model.complete(SYSTEM_PROMPT, prompt, SUMMARY_MAX_TOKENS), MAX_SUMMARY_LENGTH)
    limit = asyncio.Semaphore(PARALLEL_CHUNKS)

    async def summarise_part(number: int, chunk: str) -> str:
        prompt = (
            f"{heading}Part {number} of {len(chunks)} of the transcript:\n{chunk}\n\n"
            "Summarise the main points of this part in a few sentences."
        )
        async with limit:
            return clip(await model.complete(SYSTEM_PROMPT, prompt, CHUNK_MAX_TOKENS), CHUNK_SUMMARY_MAX_CHARS)

    try:
        async with asyncio.TaskGroup() as group:  # one failure cancels the other parts
            parts = [group.create_task(summarise_part(number, chunk)) for number, chunk in enumerate(chunks, 1)]
    except* LLMError as failures:
        raise failures.exceptions[0]
    joined = "\n\n".join(f"Part {number}: {part.result()}" for number, part in enumerate(parts, 1))
    prompt = (
        f"{heading}Summaries of the {len(chunks)} consecutive parts of the video:\n\n{joined}\n\n"
        "Combine them into one summary of the whole video."
    )
    return clip(await model.complete(SYSTEM_PROMPT, prompt, SUMMARY_MAX_TOKENS), MAX_SUMMARY_LENGTH)


def transcript_chunks(transcript: Sequence[Any]) -> list[str]:
    """The transcript as `m:ss text` lines (no time when a segment has none), cut into chunks
    of at most CHUNK_CHARS; at most MAX_CHUNKS of them."""
    chunks: list[str] = []
    lines: list[str] = []
    size = 0
    for line in _lines(transcript):
        line = line[:CHUNK_CHARS]
        if lines and size + len(line) > CHUNK_CHARS:  # `size` counts each kept line's newline
            chunks.append("\n".join(lines))
            if len(chunks) == MAX_CHUNKS:
                return chunks
            lines, size = [], 0
        lines.append(line)
        size += len(line) + 1
    if lines:
        chunks.append("\n".join(lines))
    return chunks


def _lines(transcript: Sequence[Any]):
    for segment in transcript:
        if not isinstance(segment, dict) or not isinstance(segment.get("text"), str) or not segment["text"].strip():
            continue
        text = " ".join(segment["text"].split())
        try:
            offset = float(segment.get("offset"))
        except (TypeError, ValueError):
            offset = math.nan
        yield f"{int(offset // 60)}:{int(offset % 60):02d} {text}" if math.isfinite(offset) and offset >= 0 else text
