"""The built-in summary writer, for deployments without the ai-summary Lambda (on unless
BUILTIN_SUMMARIES=0, and only with an LLM provider).

A long transcript is summarised in bounded chunks whose summaries are then combined, so no
request carries more than CHUNK_CHARS of transcript. The summary is stored only if the video
still has none by then (a Lambda's or the internal endpoint's summary wins).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from config import Settings
from vidwiz.llm import ChatModel, LLMError
from vidwiz.notes.ai_writer import clip
from vidwiz.transcripts import transcript_chunks
from vidwiz.unit_of_work import Effects
from vidwiz.videos.models import MAX_SUMMARY_LENGTH, Video
from vidwiz.videos.service import store_summary

CHUNK_CHARS = 12_000  # transcript per request (~3k tokens)
MAX_CHUNKS = 24  # ~290k characters, about five hours of speech; the rest is left out
PARALLEL_CHUNKS = 4
CHUNK_MAX_TOKENS = 1024
CHUNK_SUMMARY_MAX_CHARS = 3000  # bounds the combining request: MAX_CHUNKS of these
SUMMARY_MAX_TOKENS = 2048

SYSTEM_PROMPT = (
    "You summarise videos from their transcripts for a reader who has not watched them. Write "
    "plain prose: a short paragraph, or a few short bullet points for a long video, covering "
    "the main points in order. No preamble, no markdown headings."
)


def summaries_enabled(settings: Settings, model: ChatModel | None) -> bool:
    return settings.builtin_summaries and model is not None


def needs_summary(video: Video) -> bool:
    return bool(video.transcript_available) and video.summary is None


def chunks_of(transcript: Sequence[object]) -> list[str]:
    return transcript_chunks(transcript, CHUNK_CHARS, MAX_CHUNKS)


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
        raise failures.exceptions[0] from None
    joined = "\n\n".join(f"Part {number}: {part.result()}" for number, part in enumerate(parts, 1))
    prompt = (
        f"{heading}Summaries of the {len(chunks)} consecutive parts of the video:\n\n{joined}\n\n"
        "Combine them into one summary of the whole video."
    )
    return clip(await model.complete(SYSTEM_PROMPT, prompt, SUMMARY_MAX_TOKENS), MAX_SUMMARY_LENGTH)


async def store_if_missing(session: AsyncSession, effects: Effects, video_id: str, summary: str) -> Video | None:
    """Store the summary unless the video got one meanwhile; the stored video, or None."""
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
    return await store_summary(session, effects, video_id, summary)
