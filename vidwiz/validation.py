"""Marshmallow helpers: load body / query / path and turn failures into 422 details (API.md §1.3)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError, fields, validate

from vidwiz.errors import ValidationFailed

# Marshmallow's default messages mapped to the Pydantic-style message/type pairs clients see.
_KNOWN = {
    "Missing data for required field.": ("Field required", "missing"),
    "Unknown field.": ("Extra inputs are not permitted", "extra_forbidden"),
    "Not a valid integer.": ("Input should be a valid integer, unable to parse string as an integer", "int_parsing"),
    "Not a valid string.": ("Input should be a valid string", "string_type"),
    "Not a valid boolean.": ("Input should be a valid boolean", "bool_parsing"),
    "Field may not be null.": ("Input should not be null", "none_forbidden"),
    "Not a valid mapping type.": ("Input should be a valid dictionary", "dict_type"),
    "Not a valid list.": ("Input should be a valid list", "list_type"),
    "Invalid input type.": ("Input should be a valid dictionary", "dict_type"),
    "Not a valid email address.": ("value is not a valid email address", "value_error"),
}
_PATTERNS = (
    (re.compile(r"^String should have at least"), "string_too_short"),
    (re.compile(r"^String should have at most"), "string_too_long"),
    (re.compile(r"^Input should be greater than or equal"), "greater_than_equal"),
    (re.compile(r"^Input should be less than or equal"), "less_than_equal"),
    (re.compile(r"^Value error, "), "value_error"),
    (re.compile(r"^value is not a valid email"), "value_error"),
)


def _detail(field: str, message: str) -> dict[str, Any]:
    if message in _KNOWN:
        text, kind = _KNOWN[message]
        return {"field": field, "message": text, "type": kind}
    for pattern, kind in _PATTERNS:
        if pattern.match(message):
            return {"field": field, "message": message, "type": kind}
    return {"field": field, "message": message, "type": "value_error"}


def flatten_errors(messages: Any, location: str) -> list[dict[str, Any]]:
    """Nested marshmallow messages -> one detail per failing leaf, field joined with '.'."""
    out: list[dict[str, Any]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            field = location if key == "_schema" else f"{location}.{key}"
            out.extend(flatten_errors(value, field))
    elif isinstance(messages, list):
        for message in messages:
            out.extend(flatten_errors(message, location))
    else:
        out.append(_detail(location, str(messages)))
    return out


def _load(schema: Schema, data: Mapping[str, Any], location: str) -> dict[str, Any]:
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed(flatten_errors(exc.messages, location)) from None


async def load_body(request: web.Request, schema: Schema) -> dict[str, Any]:
    """Parse and validate a JSON object body. Empty, malformed or non-object bodies are 422s."""
    content_type = request.headers.get("Content-Type", "")
    if content_type and "json" not in content_type.lower():
        raise ValidationFailed(
            [{"field": "body", "message": "Content-Type must be application/json", "type": "content_type"}]
        )
    raw = await request.read()  # aiohttp raises 413 past client_max_size
    if not raw.strip():
        raise ValidationFailed([{"field": "body", "message": "Field required", "type": "missing"}])
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise ValidationFailed([{"field": "body.0", "message": "JSON decode error", "type": "json_invalid"}]) from None
    if data is None:
        raise ValidationFailed([{"field": "body", "message": "Field required", "type": "missing"}])
    if not isinstance(data, dict):
        raise ValidationFailed(
            [{"field": "body", "message": "Input should be a valid dictionary", "type": "dict_type"}]
        )
    return _load(schema, data, "body")


def load_query(request: web.Request, schema: Schema) -> dict[str, Any]:
    return _load(schema, dict(request.query), "query")


def load_path(request: web.Request, schema: Schema) -> dict[str, Any]:
    return _load(schema, dict(request.match_info), "path")


# -- field helpers with Pydantic-style messages ------------------------------------------------


def length(minimum: int | None = None, maximum: int | None = None) -> list[validate.Validator]:
    out: list[validate.Validator] = []
    if minimum is not None:
        out.append(validate.Length(min=minimum, error=f"String should have at least {minimum} characters"))
    if maximum is not None:
        out.append(validate.Length(max=maximum, error=f"String should have at most {maximum} characters"))
    return out


def int_range(minimum: int | None = None, maximum: int | None = None) -> list[validate.Validator]:
    out: list[validate.Validator] = []
    if minimum is not None:
        out.append(validate.Range(min=minimum, error=f"Input should be greater than or equal to {minimum}"))
    if maximum is not None:
        out.append(validate.Range(max=maximum, error=f"Input should be less than or equal to {maximum}"))
    return out


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# The same rules as JSON Schema patterns for the OpenAPI document: ECMA-262 syntax with \uXXXX escapes,
# which Python's re, JavaScript and Rust's regex (schemathesis validates with it) read alike. No pattern
# can name lone surrogates portably (Rust strings cannot hold them, and schemathesis drops a pattern it
# cannot compile), so only NUL is excluded here and the document's description states the surrogate
# rule. No unbounded quantifier overlaps what follows it, so matching never backtracks far.


def _char(excluded: str = "") -> str:
    """A class: any character but NUL and `excluded` (a regex class body)."""
    return rf"[^\u0000{excluded}]"


# What str.strip() removes (str.isspace()), spelled out: `\s` differs between regex engines.
_SPACE = r"\t-\r\u001c- \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CHAR, _SOLID = _char(), _char(_SPACE)
STORABLE_TEXT = rf"^{_CHAR}*$"
NON_BLANK_TEXT = rf"^[{_SPACE}]*{_SOLID}{_CHAR}*$"  # not empty once stripped


def stripped(pattern: str) -> str:
    """Pattern: `pattern` once the surrounding whitespace is stripped."""
    return rf"^[{_SPACE}]*(?:{pattern})[{_SPACE}]*$"


def trimmed_text(minimum: int, maximum: int) -> str:
    """minimum..maximum characters once the surrounding whitespace is stripped (minimum >= 2)."""
    return rf"^[{_SPACE}]*{_SOLID}{_CHAR}{{{minimum - 2},{maximum - 2}}}{_SOLID}[{_SPACE}]*$"


def _timestamp_text() -> str:
    """A ':' and two ASCII digits anywhere (notes' loose timestamp rule), by which comes first."""
    other, other_or_digit, other_or_colon = _char("0-9:"), _char(":"), _char("0-9")
    first_digits_then_colon = rf"{other}*[0-9]{other}*[0-9]{other_or_digit}*:"
    colon_then_two_digits = rf"{other}*:{other_or_colon}*[0-9]{other_or_colon}*[0-9]"
    digit_colon_digit = rf"{other}*[0-9]{other}*:{other_or_colon}*[0-9]"
    return rf"^(?:{first_digits_then_colon}|{colon_then_two_digits}|{digit_colon_digit}){_CHAR}*$"


TIMESTAMP_TEXT = _timestamp_text()


def holds_unstorable_text(value: Any) -> bool:
    """Whether a string anywhere in a JSON value (object keys included) has what StrictString
    rejects. PostgreSQL keeps such JSON but fails when a query reads text out of it."""
    pending = [value]
    while pending:  # iterative: nesting as deep as json.loads allows must not overflow the stack
        item = pending.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class StrictString(fields.String):
    """A string that never coerces numbers or other JSON types, and that both databases can
    store: PostgreSQL text holds no NUL, and no driver encodes an unpaired surrogate (JSON
    "\\ud800" decodes to one). Either would otherwise fail at insert time as a 500.

    The document states it as the field's `pattern`; a subclass with stricter rules sets its own
    (which must imply this one)."""

    pattern = STORABLE_TEXT

    def __init__(self, **kwargs):
        metadata = kwargs.pop("metadata", None) or {}
        super().__init__(metadata={"pattern": self.pattern, **metadata}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("invalid")
        if _UNSTORABLE.search(value):
            raise ValidationError("Value error, string must not contain NUL characters or unpaired surrogates")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """JSON true/false only ("yes", 1 and friends are rejected)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class StrictInteger(fields.Integer):
    """A JSON integer (bools and floats rejected); query/path strings parse as base-10 ints."""

    def __init__(self, *, from_text: bool = False, **kwargs):
        super().__init__(strict=not from_text, **kwargs)
        self.from_text = from_text

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if self.from_text and isinstance(value, str) and not re.fullmatch(r"\s*[+-]?\d+\s*", value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)
