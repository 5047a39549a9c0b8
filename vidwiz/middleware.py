"""Cross-cutting middlewares: request ids, CORS (docs/api.md §1.1), response security headers, and
the error middleware that renders every failure in the envelope (docs/api.md §1.2)."""

from __future__ import annotations

import logging
import os
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from vidwiz.context import CORS_ORIGIN, REQUEST_ID, SETTINGS
from vidwiz.errors import APIError, envelope, framework_error
from vidwiz.logs import current_request_id

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# What a browser client may read besides the CORS-safelisted headers (quota usage, retry hints, ids).
EXPOSED_HEADERS = ", ".join(
    (
        REQUEST_ID_HEADER,
        "Retry-After",
        "X-Quota-Limit",
        "X-Quota-Used",
        "X-Quota-Remaining",
        "X-Quota-Reset",
    )
)


def _new_request_id() -> str:
    # 32 random hex digits, as uuid4().hex gave, at a quarter of its cost (no UUID object per request).
    return os.urandom(16).hex()


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request[REQUEST_ID] = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else _new_request_id()
    current_request_id.set(request[REQUEST_ID])  # every log line of this request carries it
    return await handler(request)


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    if not origin:
        return None
    allowed = request.app[SETTINGS].cors_origins
    return origin if "*" in allowed or origin in allowed else None


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    is_preflight = (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )
    origin = _allowed_origin(request)
    if is_preflight:
        if not origin:  # this middleware sits outside error_middleware: render the envelope here
            return error_response(400, "BAD_REQUEST", "Disallowed CORS origin")
        # Any method and the requested headers, with credentials (so the origin is echoed, never "*").
        return web.Response(
            text="OK",
            headers={
                "Vary": "Origin",
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT",
                "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "*"),
                "Access-Control-Max-Age": "600",
            },
        )
    if origin:
        request[CORS_ORIGIN] = origin
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: also reaches SSE streams and error responses."""
    # Runs after aiohttp set its defaults: no `Server: Python/… aiohttp/…` version banner.
    response.headers.popall(hdrs.SERVER, None)
    response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    if REQUEST_ID in request:
        response.headers.setdefault(REQUEST_ID_HEADER, request[REQUEST_ID])
    origin = request.get(CORS_ORIGIN)
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        # Named, not "*": browsers ignore the wildcard on credentialed requests.
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.headers.add("Vary", "Origin")


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(envelope(code, message, details), status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure answered in the envelope (docs/api.md §1.2): ours, aiohttp's, and bugs (500)."""
    try:
        return await handler(request)
    except APIError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response(framework_error(exc.status, exc.reason), status=exc.status, headers=headers)
    except Exception:
        log.exception("unhandled error request_id=%s %s %s", request.get(REQUEST_ID), request.method, request.path)
        return error_response(500, "INTERNAL_ERROR", "Internal Server Error")
