"""Request validation for the videos routes (API.md §1.5, §3.2)."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema

from vidwiz.validation import StrictInteger, StrictString, int_range
from vidwiz.videos.ids import VideoIdField


class VideoPathSchema(Schema):
    """`{video_id}` path segment: a raw id or URL, normalised; bad ones are 422 `path.video_id` (D1)."""

    video_id = VideoIdField(required=True)


class VideoListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    q = StrictString(load_default="")
    page = StrictInteger(from_text=True, load_default=1, validate=int_range(1))
    per_page = StrictInteger(from_text=True, load_default=10, validate=int_range(1, 50))
    # Checked by the service: an unknown value is a 400, not a 422 (API.md §3.2).
    sort = StrictString(load_default="created_at_desc")
