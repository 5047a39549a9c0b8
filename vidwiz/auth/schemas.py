"""Request validation and response shapes for auth and users (docs/api.md §3.1)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Unpack

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from marshmallow import EXCLUDE, Schema, ValidationError, fields

from vidwiz.auth.models import User
from vidwiz.db import as_json, format_datetime
from vidwiz.fields import NON_BLANK_TEXT, DateTimeText, StrictBoolean, StrictString, length, trimmed_text

if TYPE_CHECKING:
    from marshmallow.fields import _BaseFieldKwargs

# Pydantic's "Display Name <address>" form, which the reference's EmailStr accepts (keeping the address).
_PRETTY_EMAIL = re.compile(
    r'\s*(?:((?:[\w.!#$%&\'*+\-/=?^_`{|}~]+\s+)*[\w.!#$%&\'*+\-/=?^_`{|}~]+)|"((?:[^"]|\")+)")?\s*<(.+)>\s*'
)
MAX_EMAIL_LENGTH = 2048
MAX_ADDRESS_LENGTH = 254  # email_validator's limit for the address (the document's `format: email` value)
# What email_validator refuses beyond `format: email`: special-use domains (.test, ...), a domain
# without a dot, a top-level domain not ending in a letter. The document states it as a `not` pattern.
_UNDELIVERABLE = r"(?:[.@](?:{})|[^A-Za-z]|@[^.]*)$".format(
    "|".join("".join(f"[{c.upper()}{c}]" for c in name) for name in SPECIAL_USE_DOMAIN_NAMES)
)
# Far beyond any passphrase; refused before anything is hashed (argon2 reads all of it).
MAX_PASSWORD_LENGTH = 1024


class Email(StrictString):
    """An email address validated like Pydantic's EmailStr, then trimmed and lower-cased."""

    def __init__(self, **kwargs: Unpack[_BaseFieldKwargs]) -> None:
        metadata = {"format": "email", "maxLength": MAX_ADDRESS_LENGTH, "not": {"pattern": _UNDELIVERABLE}}
        kwargs["metadata"] = {**metadata, **(kwargs.get("metadata") or {})}
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        value = super()._deserialize(value, attr, data, **kwargs)
        if len(value) > MAX_EMAIL_LENGTH:
            raise ValidationError(
                f"value is not a valid email address: Length must not exceed {MAX_EMAIL_LENGTH} characters"
            )
        pretty = _PRETTY_EMAIL.fullmatch(value)
        address = pretty.group(3) if pretty else value
        try:
            parts = validate_email(address.strip(), check_deliverability=False)
        except EmailNotValidError as exc:
            raise ValidationError(f"value is not a valid email address: {exc}") from None
        return parts.normalized.strip().lower()


class RegisteredName(StrictString):
    """Raw length 2..100 (whitespace counts), then trimmed; must not be blank."""

    pattern = NON_BLANK_TEXT

    def __init__(self, **kwargs: Unpack[_BaseFieldKwargs]) -> None:
        # Trimmed after the type and raw-length checks (post_load runs after the validators).
        kwargs["validate"] = length(2, 100)
        kwargs["post_load"] = _trimmed_name
        super().__init__(**kwargs)


def _trimmed_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ValidationError("Value error, Name cannot be empty")
    return name


class ProfileName(StrictString):
    """PATCH /users/me name: trimmed, then 2..100 characters (the reference's own messages)."""

    pattern = trimmed_text(2, 100)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        name = super()._deserialize(value, attr, data, **kwargs).strip()
        if len(name) < 2:
            raise ValidationError("Value error, Name must be at least 2 characters long")
        if len(name) > 100:
            raise ValidationError("Value error, Name must be less than 100 characters")
        return name


class RegisterSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    email = Email(required=True)
    password = StrictString(required=True, validate=length(7, MAX_PASSWORD_LENGTH))
    name = RegisteredName(required=True)


class LoginSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    email = Email(required=True)
    password = StrictString(required=True, validate=length(1, MAX_PASSWORD_LENGTH))


class GoogleLoginSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    credential = StrictString(required=True, validate=length(1))


class ProfileUpdateSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    name = ProfileName(allow_none=True, load_default=None)
    ai_notes_enabled = StrictBoolean(allow_none=True, load_default=None)


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
    name = fields.String(required=True, allow_none=True)
    profile_image_url = fields.String(required=True, allow_none=True)
    ai_notes_enabled = fields.Boolean(required=True)
    token_exists = fields.Boolean(required=True)
    long_term_token = fields.String(required=True, allow_none=True)
    created_at = DateTimeText(required=True)


class WizQuotaSchema(Schema):
    limit = fields.Integer(required=True)
    used = fields.Integer(required=True)
    remaining = fields.Integer(required=True)
    reset_in_seconds = fields.Integer(required=True)


class ProfileWithQuotaSchema(ProfileSchema):
    """GET /users/me: the Profile plus today's Wiz chat usage (an addition to the reference)."""

    wiz_quota = fields.Nested(WizQuotaSchema, required=True)


def render_profile(user: User, *, include_token: bool) -> dict[str, Any]:
    return {
        **as_json(user, ("id", "email", "name", "profile_image_url", "ai_notes_enabled")),
        "token_exists": user.long_term_token is not None,
        "long_term_token": user.long_term_token if include_token else None,
        "created_at": format_datetime(user.created_at),
    }
