"""Marshmallow helpers: load body / query / path and turn failures into 422 details (docs/api.md §1.3)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError

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


@functools.cache
def _shared(schema_class: type[Schema]) -> Schema:
    # Loading keeps no state on a schema, and building one costs more than loading with it.
    return schema_class()


def _load(schema: type[Schema], data: Mapping[str, Any], location: str) -> dict[str, Any]:
    """Validate with the schema class's one shared instance (built on first use)."""
    try:
        loaded: dict[str, Any] = _shared(schema).load(data)  # one object (many=False): a dict
        return loaded
    except ValidationError as exc:
        raise ValidationFailed(flatten_errors(exc.messages, location)) from None


async def load_body(request: web.Request, schema: type[Schema]) -> dict[str, Any]:
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


def load_query(request: web.Request, schema: type[Schema]) -> dict[str, Any]:
    return _load(schema, dict(request.query), "query")


def load_path(request: web.Request, schema: type[Schema]) -> dict[str, Any]:
    return _load(schema, dict(request.match_info), "path")
