"""`video_changed(video_id)`: publish a video's readiness to its SSE streams, then start the
follow-up work its new state allows: AI notes that were waiting for the transcript (D6), and
the built-in summary.

Enqueued after a unit of work changed the video. The web process that committed has already
published the state it committed (streams get it without waiting for the queue); this
publish is the re-read that makes a lost or out-of-order message harmless. Idempotent: arq
delivers at least once.
"""

from __future__ import annotations

import logging
from typing import Any

from arq import Retry
from sqlalchemy.exc import DBAPIError

from actors.resources import resources
from vidwiz.notes.outbox import has_waiting_ai_notes, request_waiting_ai_notes
from vidwiz.unit_of_work import Job
from vidwiz.videos.readiness import readiness_state
from vidwiz.videos.service import get_video
from vidwiz.videos.summaries import needs_summary, summaries_enabled

log = logging.getLogger(__name__)


async def video_changed(ctx: dict[str, Any], video_id: str) -> dict[str, Any]:
    res = resources(ctx)
    try:
        async with res.sessions() as session:
            video = await get_video(session, video_id)
        if video is None:
            return {"video_id": video_id, "found": False}
        # Publish first: streams may be waiting on it; the outbox work below can take longer.
        await res.dispatcher.publish_readiness(video)
        queued = 0
        waiting = False
        if video.transcript_available:  # checked on a read session: the unit of work takes the write lock
            async with res.sessions() as session:
                waiting = await has_waiting_ai_notes(session, video_id)
        if waiting:
            async with res.units() as work:
                queued = await request_waiting_ai_notes(work.session, video_id)
                if queued:
                    work.effects.wake_relay()
                    log.info("video %s: %d AI-note request(s) waited for the transcript", video_id, queued)
    except DBAPIError as exc:
        # A database hiccup must not leave streams waiting for their timeout: try again soon.
        raise Retry(defer=2 * ctx.get("job_try", 1)) from exc
    if summaries_enabled(res.settings, res.chat_model) and needs_summary(video):
        # One job per video: a summary already queued or running is not requested twice.
        await res.dispatcher.enqueue(
            Job.SUMMARIZE_VIDEO, video_id, job_id=res.dispatcher.job_id(Job.SUMMARIZE_VIDEO, video_id)
        )
    return {"video_id": video_id, "found": True, "state": list(readiness_state(video)), "ai_notes_queued": queued}
