"""Wiz conversations: ownership, chat turns and what a turn leaves in the database.

A chat turn (API.md §4.2) runs in this order: ownership (404) -> quota reservation (429)
-> video (404) -> transcript available, else 202 with a fetch_transcript task ensured ->
transcript loaded (404) -> provider configured (500 `Gemini API key not configured`, as the
reference) -> user message stored and committed -> reply streamed.

What a turn stores (API.md D10):
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

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import Settings
from vidwiz.auth.identity import Viewer
from vidwiz.conversations.models import Conversation, Message
from vidwiz.conversations.quota import FAILED, DailyQuota, QuotaUsage, Reservation
from vidwiz.errors import InternalError, NotFound
from vidwiz.llm import ChatMessage, ChatModel, format_transcript
from vidwiz.storage import TranscriptStore
from vidwiz.tasks.service import schedule_video_tasks
from vidwiz.videos.models import Video
from vidwiz.videos.service import get_video, upsert_video

HISTORY_MESSAGES = 10
# ~75k tokens: a five-hour talk fits; beyond that the prompt says where it was cut.
MAX_TRANSCRIPT_CHARS = 300_000


class TranscriptPending(Exception):
    """The video has no transcript yet (the 202 answer); `created` = task types scheduled now."""

    def __init__(self, created: list[str]):
        super().__init__("Transcript processing")
        self.created = created
        self.usage: QuotaUsage | None = None  # the viewer's quota once the reservation is given back


@dataclass(frozen=True)
class Turn:
    """Everything the streaming phase needs; it holds no database session."""

    conversation_id: int
    user_message_id: int
    system: str
    history: list[ChatMessage]
    message: str
    reservation: Reservation


def _owned_by(viewer: Viewer):
    if viewer.is_guest:
        return Conversation.guest_session_id == viewer.guest_session_id
    return Conversation.user_id == viewer.user_id


async def create_conversation(session: AsyncSession, viewer: Viewer, video_id: str) -> tuple[Conversation, list[str]]:
    """Upsert the video, ensure its fetch tasks and add the conversation, in one transaction.

    Returns the conversation and the task types created (to notify after the commit)."""
    video = await upsert_video(session, video_id)
    created = await schedule_video_tasks(session, video)
    conversation = Conversation(video_id=video_id, user_id=viewer.user_id, guest_session_id=viewer.guest_session_id)
    session.add(conversation)
    await session.commit()
    return conversation, created


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
    configured` (API.md §4.2 step 6), or `OpenAI API key not configured` when LLM_PROVIDER
    names OpenAI without its key."""
    if chat_model is not None:
        return
    raise InternalError(f"{'OpenAI' if settings.chat_provider == 'openai' else 'Gemini'} API key not configured")


async def start_turn(
    session: AsyncSession,
    *,
    viewer: Viewer,
    address: str,
    conversation: Conversation,
    text: str,
    quota: DailyQuota,
    transcripts: TranscriptStore,
    chat_model: ChatModel | None,
    settings: Settings,
) -> Turn:
    """Admit and store the user's message; raises the API errors of §4.2 or TranscriptPending.

    `address` is the client's: guests also share a daily quota per address."""
    reservation = await quota.reserve(session, viewer, address)
    try:
        video = await get_video(session, conversation.video_id)
        if video is None:
            raise NotFound("Video not found")
        if not video.transcript_available:
            created = await schedule_video_tasks(session, video)
            await session.commit()
            raise TranscriptPending(created)
        transcript = await transcripts.load(video.video_id)
        if not transcript:
            raise NotFound("Transcript data missing")
        ensure_chat_configured(chat_model, settings)
        system = wiz_system_instruction(video, transcript)
        history = await _recent_history(session, conversation.id)  # read in the same transaction as the insert
        user_message = Message(conversation_id=conversation.id, role="user", content=text)
        session.add(user_message)
        await session.commit()
    except TranscriptPending as pending:
        pending.usage = await quota.release(reservation)
        raise
    except BaseException:
        await quota.release(reservation)
        raise
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


async def complete_turn(sessions: async_sessionmaker[AsyncSession], turn: Turn, reply: str) -> Message:
    """Store the whole reply as the assistant message."""
    async with sessions() as session:
        message = Message(conversation_id=turn.conversation_id, role="assistant", content=reply)
        session.add(message)
        await session.commit()
        return message


async def fail_turn(sessions: async_sessionmaker[AsyncSession], quota: DailyQuota, turn: Turn, reason: str) -> None:
    """A turn that sent nothing does not count: give the reservation back, mark the message.

    Release first: if the process dies in between, the counter is low against the table,
    which the reconciler raises; the other order could leave it high for a while."""
    await quota.release(turn.reservation)
    async with sessions() as session:
        message = await session.get(Message, turn.user_message_id)
        message.metadata_ = {"status": FAILED, "reason": reason}
        await session.commit()


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
