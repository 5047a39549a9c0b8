"""Request validation and response shapes for auth and users (API.md §3.1)."""
from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load

from vidwiz.auth.models import User
from vidwiz.db import format_datetime
from vidwiz.validation import StrictBoolean, StrictString, length


class Email(StrictString):
    """An email address, trimmed and lower-cased after validation."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        try:
            validate_email(value.strip(), check_deliverability=False)
        except EmailNotValidError as exc:
            raise ValidationError(f"value is not a valid email address: {exc}") from None
        return value.strip().lower()


class RegisterSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    email = Email(required=True)
    password = StrictString(required=True, validate=length(7))
    name = StrictString(required=True, validate=length(2, 100))

    @post_load
    def _trim_name(self, data, **kwargs):
        data["name"] = data["name"].strip()
        if not data["name"]:
            raise ValidationError("Value error, Name cannot be empty", "name")
        return data


class LoginSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    email = Email(required=True)
    password = StrictString(required=True, validate=length(1))


class GoogleLoginSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    credential = StrictString(required=True, validate=length(1))


class ProfileUpdateSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    name = StrictString(allow_none=True, load_default=None)
    ai_notes_enabled = StrictBoolean(allow_none=True, load_default=None)

    @post_load
    def _check_name(self, data, **kwargs):
        name = data.get("name")
        if name is not None:
            name = name.strip()
            if len(name) < 2:
                raise ValidationError("Value error, Name must be at least 2 characters long", "name")
            if len(name) > 100:
                raise ValidationError("Value error, Name must be less than 100 characters", "name")
            data["name"] = name
        return data


class TokenResponse(Schema):
    token = fields.String(required=True)


class MessageResponse(Schema):
    message = fields.String(required=True)


class LongTermTokenResponse(Schema):
    message = fields.String(required=True)
    token = fields.String(required=True)


class ProfileSchema(Schema):
    id = fields.Integer(required=True)
    email = fields.String(required=True)
    name = fields.String(allow_none=True)
    profile_image_url = fields.String(allow_none=True)
    ai_notes_enabled = fields.Boolean(required=True)
    token_exists = fields.Boolean(required=True)
    long_term_token = fields.String(allow_none=True)
    created_at = fields.String(required=True)


def render_profile(user: User, *, include_token: bool) -> dict:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "profile_image_url": user.profile_image_url,
        "ai_notes_enabled": user.ai_notes_enabled,
        "token_exists": user.long_term_token is not None,
        "long_term_token": user.long_term_token if include_token else None,
        "created_at": format_datetime(user.created_at),
    }
