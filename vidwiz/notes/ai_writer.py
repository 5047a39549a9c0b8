"""The built-in AI-note writer: the outbox's delivery (vidwiz/notes/outbox.py) when SQS is not
configured and an LLM provider is.

For each claimed request (the docs/api.md §3.3 body; only its note `id` is read, the note row is
the truth) it keeps the transcript lines around the note's moment, asks the model for a
sentence or two, and stores the text with `generated_by_ai = true` in one UPDATE that only
fills a note whose text is still empty: a user's text is never overwritten, and a second
delivery of the same request (at-least-once) finds the note filled and changes nothing.

A provider failure, an empty reply or an unreadable transcript leaves the note untouched
and the row pending (the relay backs off). A request that can never be served — a
timestamp that is not `MM:SS` or `HH:MM:SS` (as the Lambda requires), no transcript text
near that moment — is rejected for good, the reason kept in `outbox.last_error`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from vidwiz.db import rowcount
from vidwiz.llm import ChatModel, LLMError
from vidwiz.notes.models import Note
from vidwiz.notes.outbox import ClaimedMessage, Outcome, Rejected
from vidwiz.storage import TranscriptStore
from vidwiz.transcripts import transcript_window
from vidwiz.unit_of_work import UnitsOfWork
from vidwiz.videos.models import Video

log = logging.getLogger(__name__)

TIMESTAMP = re.compile(r"(?:([0-9]+):)?([0-9]+):([0-9]+)")
# Notes are usually taken just after the words they are about: look back further than ahead.
SECONDS_BEFORE = 60.0
SECONDS_AFTER = 20.0
CONTEXT_MAX_CHARS = 6000  # bounded prompt, whatever a segment holds
NOTE_MAX_TOKENS = 1024  # room for a reasoning model's thinking; the note itself is short
NOTE_MAX_CHARS = 1000

SYSTEM_PROMPT = (
    "You write short notes for someone watching a video. You are given the transcript lines "
    "around one moment of the video, each starting with its time. Write one or two plain "
    "sentences saying what is being said or explained at that moment. No preamble, no "
    "quotation marks, no markdown, no timestamps."
)


def parse_timestamp(value: str) -> int | None:
    """Seconds for `MM:SS` or `HH:MM:SS` (whole numbers, surrounding spaces allowed), else None."""
    match = TIMESTAMP.fullmatch(value.strip())
    if match is None:
        return None
    hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def transcript_around(transcript: Sequence[Any], seconds: float) -> str:
    """The `m:ss text` lines of the segments starting near `seconds` (bounded), or ""."""
    return transcript_window(transcript, seconds - SECONDS_BEFORE, seconds + SECONDS_AFTER, CONTEXT_MAX_CHARS)


def note_prompt(title: str | None, timestamp: str, context: str) -> str:
    video = f"Video: {title}\n" if title else ""
    return f"{video}Moment: {timestamp}\n\nTranscript around that moment:\n{context}\n\nWrite the note."


def clip(text: str, limit: int) -> str:
    """`text` stripped, cut at a word boundary to at most `limit` characters."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(None, 1)[0].rstrip() + "…"


async def fill_empty_note(session: AsyncSession, note_id: int, text: str) -> bool:
    """Store an AI text only where the note's text is still empty. Does not commit."""
    result = await session.execute(
        update(Note)
        .where(Note.id == note_id, or_(Note.text.is_(None), Note.text == ""))
        .values(text=text, generated_by_ai=True)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


class AiNoteDelivery:
    name = "ai_notes"

    def __init__(
        self,
        model: ChatModel,
        units: UnitsOfWork,
        transcripts: TranscriptStore,
        *,
        timeout: float,
    ) -> None:
        self.model = model
        self.units = units
        self.transcripts = transcripts
        self.timeout = timeout  # per model call: a batch must end well inside the claim lease

    async def deliver(self, messages: Sequence[ClaimedMessage]) -> Outcome:
        outcomes = await asyncio.gather(*(self._write(message) for message in messages))
        return {message.id: outcome for message, outcome in zip(messages, outcomes)}

    async def _write(self, message: ClaimedMessage) -> str | Rejected | None:
        note_id = message.body.get("id")
        if not isinstance(note_id, int) or isinstance(note_id, bool):
            return Rejected(f"malformed AI-note request: no integer note id in {message.body!r}")
        try:
            return await self._write_note(note_id)
        except SQLAlchemyError as exc:
            return f"database error: {type(exc).__name__}: {exc}"

    async def _write_note(self, note_id: int) -> str | Rejected | None:
        async with self.units.sessions() as session:
            row = (
                await session.execute(
                    select(Note.text, Note.timestamp, Note.video_id, Video.title)
                    .join(Video, Video.video_id == Note.video_id)
                    .where(Note.id == note_id)
                )
            ).first()
        if row is None or row.text:
            return None  # deleted, or the user wrote it: nothing to do
        seconds = parse_timestamp(row.timestamp)
        if seconds is None:
            return Rejected(f"note {note_id}: timestamp {row.timestamp!r} is not MM:SS or HH:MM:SS")
        transcript = await self.transcripts.load(row.video_id)
        if not transcript:
            return f"transcript of {row.video_id} could not be read"
        context = transcript_around(transcript, seconds)
        if not context:
            return Rejected(f"note {note_id}: no transcript text near {row.timestamp}")
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self.model.complete(
                    SYSTEM_PROMPT, note_prompt(row.title, row.timestamp, context), NOTE_MAX_TOKENS
                )
        except TimeoutError:
            return f"{self.model.provider} did not answer within {self.timeout:g} s"
        except LLMError as exc:
            return str(exc)
        async with self.units() as work:
            filled = await fill_empty_note(work.session, note_id, clip(reply, NOTE_MAX_CHARS))
        if not filled:
            log.info("note %d got text while its AI note was being written; kept the user's", note_id)
        return None


def ai_note_delivery(
    model: ChatModel | None,
    units: UnitsOfWork,
    transcripts: TranscriptStore,
    *,
    job_timeout: float,
) -> AiNoteDelivery | None:
    """The built-in writer (None without a provider); each model call gets a third of the job's time."""
    if model is None:
        return None
    return AiNoteDelivery(model, units, transcripts, timeout=max(1.0, job_timeout / 3))
