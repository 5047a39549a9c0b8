"""Request validation and response shapes of the /v2/internal API (docs/api.md §5.2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Unpack

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from vidwiz.fields import StrictBoolean, StrictInteger, StrictString, holds_unstorable_text, int_range, length
from vidwiz.notes.schemas import NoteSchema
from vidwiz.system.openapi import STORABLE_JSON_OBJECT
from vidwiz.tasks.service import TASK_TYPES, ClaimedTask
from vidwiz.videos.models import MAX_SUMMARY_LENGTH

if TYPE_CHECKING:
    from marshmallow.fields import _BaseFieldKwargs

DEFAULT_POLL_TIMEOUT = 30
MAX_POLL_TIMEOUT = 60

# Marshmallow messages that validation.py maps to Pydantic's `dict_type` / `list_type`.
_NOT_A_DICT = "Not a valid mapping type."
_NOT_A_LIST = "Not a valid list."


class JsonObject(fields.Field[dict[str, Any]]):
    """A JSON object, kept exactly as sent (null is rejected unless allow_none)."""

    default_error_messages = {"invalid": _NOT_A_DICT, "null": _NOT_A_DICT}

    def __init__(self, **kwargs: Unpack[_BaseFieldKwargs]) -> None:
        kwargs["metadata"] = {**STORABLE_JSON_OBJECT, **(kwargs.get("metadata") or {})}
        super().__init__(**kwargs)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        if holds_unstorable_text(value):
            raise ValidationError("Value error, strings must not contain NUL characters or unpaired surrogates")
        return value


class Transcript(fields.Field[list[dict[str, Any]]]):
    """A list of segment objects, each with a `text` key; kept exactly as sent (docs/api.md §8)."""

    default_error_messages = {"invalid": _NOT_A_LIST, "null": _NOT_A_LIST}

    def __init__(self, **kwargs: Unpack[_BaseFieldKwargs]) -> None:
        item = {"type": "object", "required": ["text"]}
        kwargs["metadata"] = {"type": "array", "items": item, **(kwargs.get("metadata") or {})}
        super().__init__(**kwargs)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        for item in value:
            if not isinstance(item, dict):
                raise ValidationError("Value error, transcript items must be dictionaries")
            if "text" not in item:
                raise ValidationError("Value error, transcript items must contain 'text' field")
        return value


class TaskPollQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    # Checked against TASK_TYPES by the handler: an unknown type is a 400, not a 422.
    type = StrictString(
        required=True,
        metadata={"enum": list(TASK_TYPES), "description": "Any other value is a 400 `Invalid task type`"},
    )
    timeout = StrictInteger(
        from_text=True,
        load_default=DEFAULT_POLL_TIMEOUT,
        validate=int_range(1),
        metadata={
            "description": f"Seconds to wait for a task; larger values are accepted and clamped to {MAX_POLL_TIMEOUT}"
        },
    )

    @post_load
    def _clamp_timeout(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["timeout"] = min(data["timeout"], MAX_POLL_TIMEOUT)
        return data


class TaskPathSchema(Schema):
    task_id = StrictInteger(from_text=True, required=True)


class InternalNotePathSchema(Schema):
    # Any integer: 0 or negative ids are simply not found (docs/api.md §5.2).
    note_id = StrictInteger(from_text=True, required=True)


class TaskResultSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    video_id = StrictString(required=True)  # compared verbatim, not normalised
    success = StrictBoolean(required=True)
    transcript = Transcript(allow_none=True, load_default=None)
    metadata = JsonObject(allow_none=True, load_default=None)
    error_message = StrictString(allow_none=True, load_default=None)


class TranscriptWriteSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    transcript = Transcript(required=True)


class MetadataWriteSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    metadata = JsonObject(required=True)


class SummaryWriteSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    summary = StrictString(allow_none=True, load_default=None, validate=length(maximum=MAX_SUMMARY_LENGTH))


class ClaimedTaskSchema(Schema):
    task_id = fields.Integer(required=True)
    task_type = fields.String(required=True, validate=validate.OneOf(list(TASK_TYPES.values())))
    task_details = fields.Dict(required=True, allow_none=True, metadata={"description": '{"video_id": str}'})
    retry_count = fields.Integer(required=True)
    message = fields.String(required=True)


class TaskResultResponseSchema(Schema):
    message = fields.String(required=True)
    task_id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["completed", "pending", "failed"]))


class AiNotesSchema(Schema):
    video_id = fields.String(required=True)
    notes = fields.List(fields.Nested(NoteSchema), required=True)
    message = fields.String(required=True)


def render_claimed_task(task: ClaimedTask) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "task_type": task.task_type,
        "task_details": task.task_details,
        "retry_count": task.retry_count,
        "message": "Task retrieved successfully",
    }
