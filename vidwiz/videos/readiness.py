"""A video as clients see it (`VideoRead`, docs/api.md §3.2) and its readiness (docs/api.md §4.1).

"Ready" is (metadata present, transcript available, summary present). The committed state is
published on the video's channel (vidwiz/unit_of_work.py) and fanned out to its SSE streams.
"""

from __future__ import annotations

import json
from typing import Any

from vidwiz.db import JsonFields, as_json
from vidwiz.videos.models import Video

VIDEO_FIELDS: JsonFields = (
    "id",
    "video_id",
    "title",
    ("metadata", "video_metadata"),
    "transcript_available",
    "summary",
    "created_at",
    "updated_at",
)


def render_video(video: Video) -> dict[str, Any]:
    """The `VideoRead` object."""
    return as_json(video, VIDEO_FIELDS)


def readiness_state(video: Video) -> tuple[bool, bool, bool]:
    """(metadata present, transcript available, summary present)."""
    return (video.video_metadata is not None, bool(video.transcript_available), video.summary is not None)


def is_ready(video: Video) -> bool:
    return all(readiness_state(video))


def readiness_message(video: Video) -> str:
    """The message on the video's channel that every ReadinessHub fans out to its streams."""
    return json.dumps({"video": render_video(video), "state": list(readiness_state(video))})
