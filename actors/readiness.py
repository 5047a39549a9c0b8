"""`video_changed(video_id)`: publish a video's readiness to its SSE streams, then start the
follow-up work its new state allows (AI notes that were waiting for the transcript, D6; the
built-in summary, actors/summaries.py).

Enqueued by the internal API after it commits. That web process has already published the
state it committed (streams get it without waiting for the queue); this publish is the
re-read that makes a lost or out-of-order message harmless. Idempotent: arq delivers at
least once.
"""

from __future__ import annotations

import logging
from typing import Any

from arq import Retry
from sqlalchemy import exists, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from actors.summaries import request_summary
from vidwiz.auth.models import User
from vidwiz.events import enqueue_job
from vidwiz.notes.models import AI_NOTE, Note, OutboxMessage
from vidwiz.notes.service import ai_note_body
from vidwiz.videos.models import Video
from vidwiz.videos.service import get_video, publish_readiness, readiness_state

log = logging.getLogger(__name__)


async def video_changed(ctx: dict[str, Any], video_id: str) -> dict[str, Any]:
    try:
        return await _publish_and_follow_up(ctx, video_id)
    except DBAPIError as exc:
        # A database hiccup must not leave streams waiting for their timeout: try again soon.
        raise Retry(defer=2 * ctx.get("job_try", 1)) from exc


async def _publish_and_follow_up(ctx: dict[str, Any], video_id: str) -> dict[str, Any]:
    keys = ctx["keys"]
    async with ctx["sessions"]() as session:
        video = await get_video(session, video_id)
        if video is None:
            return {"video_id": video_id, "found": False}
        state = readiness_state(video)
    # Publish first: streams may be waiting on it; the outbox work below can take longer.
    await publish_readiness(ctx["redis"], keys, video)
    queued = 0
    if video.transcript_available:
        async with ctx["sessions"]() as session:
            queued = await request_waiting_ai_notes(session, video_id)
            await session.commit()
        if queued:
            await enqueue_job(ctx["redis"], keys, "relay_outbox")
        await request_summary(ctx, video)
    return {"video_id": video_id, "found": True, "state": list(state), "ai_notes_queued": queued}


async def request_waiting_ai_notes(session: AsyncSession, video_id: str) -> int:
    """Write an outbox row for every AI-note-eligible note of the video that has none yet
    (API.md §5.2 eligibility; D6: notes created before the transcript existed). Does not commit."""
    if not await _waiting_notes(session, video_id):
        return 0
    # A no-op UPDATE takes the row lock on PostgreSQL and the write lock on SQLite, so two
    # concurrent jobs for the same video cannot both see "no row yet" and write twins.
    await session.execute(
        update(Video)
        .where(Video.video_id == video_id)
        .values(updated_at=Video.updated_at)
        .execution_options(synchronize_session=False)
    )
    notes = await _waiting_notes(session, video_id)
    session.add_all(OutboxMessage(kind=AI_NOTE, note_id=note.id, body=ai_note_body(note)) for note in notes)
    if notes:
        log.info("video %s: %d AI-note request(s) waited for the transcript", video_id, len(notes))
    return len(notes)


async def _waiting_notes(session: AsyncSession, video_id: str) -> list[Note]:
    already_requested = exists().where(OutboxMessage.note_id == Note.id, OutboxMessage.kind == AI_NOTE)
    rows = await session.execute(
        select(Note, User.profile_data)
        .join(User, Note.user_id == User.id)
        .where(Note.video_id == video_id, or_(Note.text.is_(None), Note.text == ""), ~already_requested)
        .order_by(Note.created_at, Note.id)
    )
    # The JSON flag is checked in Python: portable, and truthiness as the reference has it.
    return [note for note, profile in rows if isinstance(profile, dict) and profile.get("ai_notes_enabled")]
