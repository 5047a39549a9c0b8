"""YouTube video id normalisation (docs/api.md §3, `normalize_youtube_video_id`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from marshmallow import ValidationError

from vidwiz.fields import StrictString

VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


class InvalidVideoId(ValueError):
    pass


def normalize_video_id(value: str) -> str:
    """A raw 11-char id or any YouTube watch/shorts/live/embed/youtu.be URL -> the id."""
    value = (value or "").strip()
    if not value:
        raise InvalidVideoId("video_id cannot be empty")
    if "list=" in value:
        raise InvalidVideoId("playlist URLs are not supported")
    if VIDEO_ID.match(value):
        return value
    url = value if re.match(r"^https?://", value, re.IGNORECASE) else f"https://{value}"
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        raise InvalidVideoId("video_id must be a valid YouTube video ID") from None
    host = host[4:] if host.startswith("www.") else host
    segments = [s for s in parts.path.split("/") if s]
    candidate: str | None = None
    if "youtube.com" in host:
        if parts.path == "/watch":
            candidate = next(iter(parse_qs(parts.query).get("v", [])), None)
        elif len(segments) >= 2 and segments[0] in ("shorts", "live", "embed"):
            candidate = segments[1]
    elif host == "youtu.be" and segments:
        candidate = segments[0]
    if candidate and VIDEO_ID.match(candidate):
        return candidate
    raise InvalidVideoId("video_id must be a valid YouTube video ID")


class VideoIdField(StrictString):
    """A marshmallow field that normalises a video id (errors are 422 `value_error`)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalize_video_id(text)
        except InvalidVideoId as exc:
            raise ValidationError(f"Value error, {exc}") from None
