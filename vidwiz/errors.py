"""The errors every layer raises and the envelope they are answered in (docs/api.md §1.2).

No web framework here: services and actors raise these; vidwiz/middleware.py renders them.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, details: Any = None, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequest(APIError):
    status, code = 400, "BAD_REQUEST"


class Unauthorized(APIError):
    status, code = 401, "UNAUTHORIZED"


class Forbidden(APIError):
    status, code = 403, "FORBIDDEN"


class NotFound(APIError):
    status, code = 404, "NOT_FOUND"


class Conflict(APIError):
    status, code = 409, "CONFLICT"


class ValidationFailed(APIError):
    status, code = 422, "VALIDATION_ERROR"

    def __init__(self, details: list[dict[str, Any]]):
        super().__init__("Request validation failed", details)


class RateLimited(APIError):
    status, code = 429, "RATE_LIMIT_EXCEEDED"


class InternalError(APIError):
    status, code = 500, "INTERNAL_ERROR"


class ServiceUnavailable(APIError):
    status, code = 503, "SERVICE_UNAVAILABLE"


# Framework errors (raised by aiohttp's router, body reader and HTTP parser) mapped onto the envelope.
_HTTP_CODES = {
    400: ("BAD_REQUEST", "Bad Request"),
    404: ("NOT_FOUND", "Not Found"),
    405: ("METHOD_NOT_ALLOWED", "Method Not Allowed"),
    413: ("PAYLOAD_TOO_LARGE", "Request body is too large"),
    415: ("UNSUPPORTED_MEDIA_TYPE", "Unsupported Media Type"),
    500: ("INTERNAL_ERROR", "Internal Server Error"),
}


def envelope(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def framework_error(status: int, reason: str) -> dict[str, Any]:
    """The envelope for an error aiohttp itself raised (never with its text, which may quote the request)."""
    return envelope(*_HTTP_CODES.get(status, ("HTTP_ERROR", reason)))
