"""Request validation and the Note response shape (docs/api.md §3.3)."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validates
from sqlalchemy import Row

from vidwiz.db import JsonFields, as_json
from vidwiz.fields import TIMESTAMP_TEXT, DateTimeText, StrictBoolean, StrictInteger, StrictString, int_range, length
from vidwiz.notes.models import Note

MAX_ID = 2**31 - 1  # an INTEGER column: a larger id would be a driver error, not a 404
# Caps on what a client may store (each a 422 `string_too_long` beyond, and `maxLength` in the OpenAPI document).
MAX_NOTE_TEXT_LENGTH = 20_000
MAX_TIMESTAMP_LENGTH = 16  # "01:02:03" and friends; stored verbatim
MAX_VIDEO_TITLE_LENGTH = 255  # D9: a user-supplied title is every viewer's until metadata replaces it


class NoteCreateSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    timestamp = StrictString(
        required=True,
        validate=length(maximum=MAX_TIMESTAMP_LENGTH),
        metadata={
            "description": "Must contain ':' and at least two digits, e.g. 1:02 or 01:02:03 (stored verbatim)",
            "pattern": TIMESTAMP_TEXT,
            "example": "1:02",
        },
    )
    text = StrictString(allow_none=True, load_default=None, validate=length(maximum=MAX_NOTE_TEXT_LENGTH))
    video_title = StrictString(allow_none=True, load_default=None, validate=length(maximum=MAX_VIDEO_TITLE_LENGTH))

    @validates("timestamp")
    def _check_timestamp(self, value: str, **kwargs: Any) -> None:
        # Stored verbatim; only loosely shaped like "1:02" / "01:02:03".
        if ":" not in value:
            raise ValidationError("Value error, timestamp must contain at least one ':'")
        if sum(char.isdigit() for char in value) < 2:
            raise ValidationError("Value error, timestamp must contain at least two numbers")

    @post_load
    def _normalise_text(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if data["text"] is not None:
            data["text"] = data["text"].strip() or None
        return data


class NoteUpdateSchema(Schema):
    class Meta:
        unknown = RAISE

    # "" is a valid update and stored as is (not trimmed, unlike creation).
    text = StrictString(allow_none=True, load_default=None, validate=length(maximum=MAX_NOTE_TEXT_LENGTH))
    generated_by_ai = StrictBoolean(allow_none=True, load_default=None)


class NoteEditSchema(NoteUpdateSchema):
    """PATCH /v2/notes/{id}: with no non-null field the service answers 400 (docs/api.md §3.3); stated here."""

    class Meta(NoteUpdateSchema.Meta):
        json_schema = {
            "anyOf": [
                {"required": ["text"], "properties": {"text": {"type": "string"}}},
                {"required": ["generated_by_ai"], "properties": {"generated_by_ai": {"type": "boolean"}}},
            ]
        }


class NotePathSchema(Schema):
    note_id = StrictInteger(from_text=True, required=True, validate=int_range(1, MAX_ID))


class NoteSchema(Schema):
    """`NoteRead` (docs/api.md §3.3)."""

    id = fields.Integer(required=True)
    video_id = fields.String(required=True)
    timestamp = fields.String(required=True)
    text = fields.String(required=True, allow_none=True)
    generated_by_ai = fields.Boolean(required=True)
    created_at = DateTimeText(required=True)
    updated_at = DateTimeText(required=True)
    user_id = fields.Integer(required=True)


class NoteDeletedSchema(Schema):
    message = fields.String(required=True)


NOTE_FIELDS: JsonFields = (
    "id",
    "video_id",
    "timestamp",
    "text",
    "generated_by_ai",
    "created_at",
    "updated_at",
    "user_id",
)


def render_note(note: Note | Row[*tuple[Any, ...]]) -> dict[str, Any]:
    """The `NoteRead` object (of a Note, or of a row of its columns)."""
    return as_json(note, NOTE_FIELDS)
