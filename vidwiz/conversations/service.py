"""Wiz conversations: ownership, chat turns and what a turn leaves in the database.

A chat turn (docs/api.md §4.2) runs in this order: ownership (404) -> quota reservation (429)
-> video (404) -> transcript available, else 202 with a fetch_transcript task ensured ->
transcript loaded (404) -> provider configured (500 `Gemini API key not configured`, as the
reference) -> user message stored and committed -> reply streamed.

What a turn stores (docs/api.md D10):
* The user message is committed before the provider is called, so it is always visible.
* Success: the whole reply is saved as one `assistant` message, then `[DONE]` is sent.
* The provider fails before any content was sent, or returns nothing at all (a reasoning
  model that spent its token cap thinking): the turn does not count. Its reservation is
  given back and the user message is marked `{"status": "failed", "reason": …}` in its
  metadata. A failure gets the error frame; an empty reply saves nothing and ends with
  `[DONE]`, as the reference's does.
* The provider fails after content was sent: the error frame; the partial text is not
  saved and the turn counts (the viewer received an answer, if an incomplete one).
* The client disconnects: the provider call is cancelled, no assistant message is
  written, the turn counts.
Failed user messages are left out of the prompt history and of the quota count.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from config import Settings
from vidwiz.auth.identity import Viewer
from vidwiz.conversations.models import Conversation, Message
from vidwiz.conversations.quota import FAILED, DailyQuota, Reservation
from vidwiz.errors import InternalError, NotFound
from vidwiz.llm import ChatMessage, ChatModel
from vidwiz.storage import TranscriptStore
from vidwiz.tasks.service import schedule_video_tasks
from vidwiz.transcripts import format_transcript
from vidwiz.unit_of_work import Effects
from vidwiz.videos.models import Video
from vidwiz.videos.service import get_video, upsert_video

HISTORY_MESSAGES = 10
# ~75k tokens: a five-hour talk fits; beyond that the prompt says where it was cut.
MAX_TRANSCRIPT_CHARS = 300_000


@dataclass(frozen=True)
class TranscriptPending:
    """The video has no transcript yet (the 202 answer): its reservation is to be given back."""

    reservation: Reservation


@dataclass(frozen=True)
class Turn:
    """Everything the streaming phase needs; it holds no database session."""

    conversation_id: int
    user_message_id: int
    system: str
    history: list[ChatMessage]
    message: str
    reservation: Reservation


def _owned_by(viewer: Viewer) -> ColumnElement[bool]:
    if viewer.is_guest:
        return Conversation.guest_session_id == viewer.guest_session_id
    return Conversation.user_id == viewer.user_id


async def create_conversation(session: AsyncSession, effects: Effects, viewer: Viewer, video_id: str) -> Conversation:
    """Upsert the video, ensure its fetch tasks and add the conversation."""
    video = await upsert_video(session, video_id)
    effects.tasks_claimable(await schedule_video_tasks(session, video))
    conversation = Conversation(video_id=video_id, user_id=viewer.user_id, guest_session_id=viewer.guest_session_id)
    session.add(conversation)
    await session.flush()
    return conversation


async def get_conversation(session: AsyncSession, viewer: Viewer, conversation_id: int) -> Conversation:
    conversation = await session.scalar(
        select(Conversation).where(Conversation.id == conversation_id, _owned_by(viewer))
    )
    if conversation is None:
        raise NotFound("Conversation not found")
    return conversation


async def list_messages(session: AsyncSession, conversation_id: int) -> list[Message]:
    result = await session.scalars(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.created_at, Message.id)
    )
    return list(result)


def ensure_chat_configured(chat_model: ChatModel | None, settings: Settings) -> None:
    """Without a usable provider the answer is the reference's: 500 `Gemini API key not
    configured` (docs/api.md §4.2 step 6), or `OpenAI API key not configured` when LLM_PROVIDER
    names OpenAI without its key."""
    if chat_model is not None:
        return
    raise InternalError(f"{'OpenAI' if settings.chat_provider == 'openai' else 'Gemini'} API key not configured")


async def start_turn(
    session: AsyncSession,
    effects: Effects,
    *,
    viewer: Viewer,
    address: str,
    conversation: Conversation,
    text: str,
    quota: DailyQuota,
    transcripts: TranscriptStore,
    chat_model: ChatModel | None,
    settings: Settings,
) -> Turn | TranscriptPending:
    """Admit the user's message and add it; raises the API errors of §4.2. Without a
    transcript yet: its fetch task ensured, and TranscriptPending (the caller gives the
    reservation back once this unit of work committed).

    `address` is the client's: guests also share a daily quota per address."""
    reservation = await quota.reserve(session, viewer, address)
    effects.on_rollback(functools.partial(quota.release, reservation))
    video = await get_video(session, conversation.video_id)
    if video is None:
        raise NotFound("Video not found")
    if not video.transcript_available:
        effects.tasks_claimable(await schedule_video_tasks(session, video))
        return TranscriptPending(reservation)
    transcript = await transcripts.load(video.video_id)
    if not transcript:
        raise NotFound("Transcript data missing")
    ensure_chat_configured(chat_model, settings)
    system = wiz_system_instruction(video, transcript)
    history = await _recent_history(session, conversation.id)  # read in the same transaction as the insert
    user_message = Message(conversation_id=conversation.id, role="user", content=text)
    session.add(user_message)
    await session.flush()
    return Turn(
        conversation_id=conversation.id,
        user_message_id=user_message.id,
        system=system,
        history=[ChatMessage("assistant" if m.role == "assistant" else "user", m.content) for m in history],
        message=text,
        reservation=reservation,
    )


async def _recent_history(session: AsyncSession, conversation_id: int) -> list[Message]:
    """The messages that precede a new one in its window of HISTORY_MESSAGES, oldest first;
    failed turns left out."""
    result = await session.scalars(
        select(Message)
        .where(
            Message.conversation_id == conversation_id,
            func.coalesce(Message.metadata_["status"].as_string(), "") != FAILED,
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(HISTORY_MESSAGES - 1)
    )
    return list(result)[::-1]


async def complete_turn(session: AsyncSession, turn: Turn, reply: str) -> Message:
    """Add the whole reply as the assistant message."""
    message = Message(conversation_id=turn.conversation_id, role="assistant", content=reply)
    session.add(message)
    return message


async def fail_turn(session: AsyncSession, quota: DailyQuota, turn: Turn, reason: str) -> None:
    """A turn that sent nothing does not count: give the reservation back, mark the message.

    Release first: if the process dies in between, the counter is low against the table,
    which the reconciler raises; the other order could leave it high for a while."""
    await quota.release(turn.reservation)
    message = await session.get(Message, turn.user_message_id)
    if message is not None:
        message.metadata_ = {"status": FAILED, "reason": reason}


def wiz_system_instruction(video: Video, transcript: list[dict[str, Any]]) -> str:
    metadata = video.video_metadata if isinstance(video.video_metadata, dict) else {}
    title = video.title or metadata.get("title")
    subject = f'the YouTube video "{title}"' if title else "this video"
    lines, truncated = format_transcript(transcript, MAX_TRANSCRIPT_CHARS)
    parts = [
        f"You are Wiz, an assistant dedicated to {subject}.",
        "Answer only from the video's transcript below. When the transcript does not contain the "
        "answer, say so plainly instead of guessing or using outside knowledge.",
        "Cite the moments you rely on with inline [mm:ss] timestamps taken from the transcript lines.",
        "Be concise, and answer in the language of the question.",
    ]
    if truncated:
        last = lines.rsplit("\n", 1)[-1].split(" ", 1)[0] if lines else "0:00"
        parts.append(f"The transcript is long and was cut after {last}; say so when asked about later parts.")
    parts.append('Transcript (one segment per line, "minutes:seconds text"):')
    parts.append(lines)
    return "\n".join(parts)
