"""Marshmallow field types and validators with the contract's rules and Pydantic-style
messages (docs/api.md §1.3), shared by every domain's schemas. No web framework here."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Unpack

from marshmallow import ValidationError, fields, validate

if TYPE_CHECKING:
    # The keyword arguments every marshmallow field takes (private, but what its own signatures use).
    from marshmallow.fields import _BaseFieldKwargs


def length(minimum: int | None = None, maximum: int | None = None) -> list[validate.Validator]:
    return _bounds(
        validate.Length,
        minimum,
        maximum,
        "String should have at least {} characters",
        "String should have at most {} characters",
    )


def int_range(minimum: int | None = None, maximum: int | None = None) -> list[validate.Validator]:
    return _bounds(
        validate.Range,
        minimum,
        maximum,
        "Input should be greater than or equal to {}",
        "Input should be less than or equal to {}",
    )


def _bounds(
    kind: type[validate.Length] | type[validate.Range],
    minimum: int | None,
    maximum: int | None,
    too_small: str,
    too_large: str,
) -> list[validate.Validator]:
    """The validators of a lower and/or upper bound, with Pydantic's messages."""
    bounds: list[validate.Validator] = []
    if minimum is not None:
        bounds.append(kind(min=minimum, error=too_small.format(minimum)))
    if maximum is not None:
        bounds.append(kind(max=maximum, error=too_large.format(maximum)))
    return bounds


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

    def __init__(self, **kwargs: Unpack[_BaseFieldKwargs]) -> None:
        kwargs["metadata"] = {"pattern": self.pattern, **(kwargs.get("metadata") or {})}
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        if _UNSTORABLE.search(value):
            raise ValidationError("Value error, string must not contain NUL characters or unpaired surrogates")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """JSON true/false only ("yes", 1 and friends are rejected)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class StrictInteger(fields.Integer):
    """A JSON integer (bools and floats rejected); query/path strings parse as base-10 ints."""

    def __init__(self, *, from_text: bool = False, **kwargs: Unpack[_BaseFieldKwargs]) -> None:
        super().__init__(strict=not from_text, **kwargs)
        self.from_text = from_text

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if self.from_text and isinstance(value, str) and not re.fullmatch(r"\s*[+-]?\d+\s*", value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


# Datetimes of docs/api.md §1.4: always UTC, no fractions, offset without a colon.
DATETIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+0000$"


def DateTimeText(**kwargs: Any) -> fields.String:
    """A rendered datetime (`2025-01-31T09:23:17+0000`) in a response schema."""
    return fields.String(metadata={"pattern": DATETIME_PATTERN, "example": "2025-01-31T09:23:17+0000"}, **kwargs)
