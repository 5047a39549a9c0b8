"""Request validation and response shapes for conversations (docs/api.md §3.4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from vidwiz.conversations.models import Conversation, Message
from vidwiz.db import JsonFields, as_json
from vidwiz.fields import NON_BLANK_TEXT, DateTimeText, StrictInteger, StrictString, int_range, length
from vidwiz.videos.ids import VideoIdField
from vidwiz.videos.schemas import VIDEO_ID_OR_URL_DOC

# Hardening beyond the reference (which has no limit): a chat question, not a document.
MAX_MESSAGE_CHARS = 4000
MAX_ID = 2**31 - 1  # an INTEGER column; larger ids would be a database error, not a 404


class CreateConversationSchema(Schema):
    class Meta:
        unknown = RAISE

    video_id = VideoIdField(required=True, metadata=VIDEO_ID_OR_URL_DOC)


class ConversationPathSchema(Schema):
    conversation_id = StrictInteger(from_text=True, required=True, validate=int_range(1, MAX_ID))


class ChatText(StrictString):
    """The user's message: trimmed, must not be blank; validators see the trimmed text."""

    pattern = NON_BLANK_TEXT

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if not text:
            raise ValidationError("Value error, message cannot be empty")
        return text


class SendMessageSchema(Schema):
    class Meta:
        unknown = RAISE

    message = ChatText(required=True, validate=length(maximum=MAX_MESSAGE_CHARS))


class ConversationSchema(Schema):
    id = fields.Integer(required=True)
    video_id = fields.String(required=True)
    created_at = DateTimeText(required=True)
    updated_at = DateTimeText(required=True)


class MessageSchema(Schema):
    id = fields.Integer(required=True)
    conversation_id = fields.Integer(required=True)
    role = fields.String(required=True, validate=validate.OneOf(["user", "assistant"]))
    content = fields.String(required=True)
    metadata = fields.Dict(required=True, allow_none=True)
    created_at = DateTimeText(required=True)


class ProcessingSchema(Schema):
    status = fields.String(required=True, validate=validate.Equal("processing"))
    message = fields.String(required=True)


# One chat SSE event as the OpenAPI document describes it: data-only frames.
CHAT_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"event": {"type": "string", "enum": ["message"]}, "data": {"type": "string"}},
}


CONVERSATION_FIELDS: JsonFields = ("id", "video_id", "created_at", "updated_at")
MESSAGE_FIELDS: JsonFields = ("id", "conversation_id", "role", "content", ("metadata", "metadata_"), "created_at")


def render_conversation(conversation: Conversation) -> dict[str, Any]:
    return as_json(conversation, CONVERSATION_FIELDS)


def render_message(message: Message) -> dict[str, Any]:
    return as_json(message, MESSAGE_FIELDS)
