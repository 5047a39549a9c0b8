"""Request validation and response shapes of the videos routes (docs/api.md §1.5, §3.2)."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields

from vidwiz.fields import DateTimeText, StrictInteger, StrictString, int_range, stripped
from vidwiz.videos.ids import VideoIdField
from vidwiz.videos.service import SORTS

EXAMPLE_VIDEO_ID = "dQw4w9WgXcQ"
# For a body field that also takes URLs: a raw id or the usual URL forms (vidwiz/videos/ids.py also
# takes a few rarer spellings, e.g. more query parameters).
VIDEO_ID_OR_URL_DOC = {
    "description": "An 11-character YouTube video id, or a YouTube URL (normalised)",
    "example": EXAMPLE_VIDEO_ID,
    "pattern": stripped(
        r"(?:(?:https?://)?(?:www\.)?(?:youtube\.com/(?:watch\?v=|shorts/|live/|embed/)|youtu\.be/))?"
        r"[A-Za-z0-9_-]{11}"
    ),
}


class VideoPathSchema(Schema):
    """`{video_id}` path segment: a raw id or URL, normalised; bad ones are 422 `path.video_id` (D1)."""

    # Clients send raw ids in paths (an encoded URL's slashes would not route, docs/api.md §3).
    video_id = VideoIdField(
        required=True,
        metadata={
            "description": "An 11-character YouTube video id",
            "example": EXAMPLE_VIDEO_ID,
            "pattern": r"^[A-Za-z0-9_-]{11}$",
        },
    )


class VideoListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    q = StrictString(load_default="")
    page = StrictInteger(from_text=True, load_default=1, validate=int_range(1))
    per_page = StrictInteger(from_text=True, load_default=10, validate=int_range(1, 50))
    # Checked by the service: an unknown value is a 400, not a 422 (docs/api.md §3.2).
    sort = StrictString(
        load_default="created_at_desc",
        metadata={"enum": list(SORTS), "description": "Any other value is a 400 `Invalid sort parameter`"},
    )


class VideoSchema(Schema):
    """`VideoRead` (docs/api.md §3.2)."""

    id = fields.Integer(required=True)
    video_id = fields.String(required=True)
    title = fields.String(required=True, allow_none=True)
    metadata = fields.Dict(required=True, allow_none=True)
    transcript_available = fields.Boolean(required=True)
    summary = fields.String(required=True, allow_none=True)
    created_at = DateTimeText(required=True)
    updated_at = DateTimeText(required=True)


class VideoListItemSchema(Schema):
    video_id = fields.String(required=True)
    title = fields.String(required=True, allow_none=True)
    metadata = fields.Dict(required=True, allow_none=True)


class VideoPageSchema(Schema):
    videos = fields.List(fields.Nested(VideoListItemSchema), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    total_pages = fields.Integer(required=True)
