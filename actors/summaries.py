"""`summarize_video(video_id)`: the built-in summary writer's job (vidwiz/videos/summaries.py).

`video_changed` enqueues it (one job id per video) once a video has its transcript and no
summary. The stored summary changes the video, so its streams get `update`/`done`. A
provider failure stores nothing and is retried by arq with backoff; after SUMMARY_TRIES the
job ends without a result, so the next change to the video can request it again.
"""

from __future__ import annotations

import logging
from typing import Any

from arq import Retry

from actors.resources import resources
from vidwiz.llm import LLMError
from vidwiz.videos.service import get_video
from vidwiz.videos.summaries import chunks_of, store_if_missing, summaries_enabled, write_summary

log = logging.getLogger(__name__)

# Several model calls per job: its own timeout, well above a single call's.
SUMMARY_JOB_TIMEOUT = 600.0
SUMMARY_TRIES = 5
RETRY_BASE_SECONDS = 5


async def summarize_video(ctx: dict[str, Any], video_id: str) -> dict[str, Any]:
    res = resources(ctx)
    if not summaries_enabled(res.settings, res.chat_model):
        return {"video_id": video_id, "stored": False, "reason": "built-in summaries are off"}
    assert res.chat_model is not None
    async with res.sessions() as session:
        video = await get_video(session, video_id)
    if video is None or not video.transcript_available:
        return {"video_id": video_id, "stored": False, "reason": "no transcript"}
    if video.summary is not None:
        return {"video_id": video_id, "stored": False, "reason": "already summarised"}
    transcript = await res.transcripts.load(video_id)
    if not transcript:  # the store hiccuped: the row says the transcript is there
        return retry_or_give_up(ctx, video_id, "the transcript could not be read")
    chunks = chunks_of(transcript)
    if not chunks:
        return {"video_id": video_id, "stored": False, "reason": "the transcript has no text"}
    try:
        summary = await write_summary(res.chat_model, video.title, chunks)
    except LLMError as exc:
        return retry_or_give_up(ctx, video_id, str(exc))
    async with res.units() as work:
        stored = await store_if_missing(work.session, work.effects, video_id, summary)
    if stored is None:
        return {"video_id": video_id, "stored": False, "reason": "already summarised"}
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
