"""OpenAPI 3 document built from the marshmallow schemas that the handlers already use.

Handlers declare what they take and answer with `@operation(...)`; `build_spec(app)` walks
the router, so a route without docs is visible (and a test fails). Served with a Swagger UI
page (assets from the swagger-ui-bundle wheel: no CDN) only in local/staging.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls
from marshmallow import Schema, fields, validate

from vidwiz.context import SETTINGS
from vidwiz.fields import STORABLE_TEXT

SECURITY_SCHEMES = {
    "bearerJWT": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Access token from /v2/auth/login or /v2/auth/google",
    },
    "longTermToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Long-term token from POST /v2/auth/tokens (note creation only)",
    },
    "adminToken": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN for /v2/internal"},
}
# Which schemes each auth style accepts (alternatives are separate requirement objects). A viewer is
# a user or a guest: the guest session id is a parameter (GUEST_SESSION), not a credential that
# could be "invalid": any well-formed id opens (or continues) a guest session.
AUTH: dict[str, list[dict[str, list[str]]]] = {
    "none": [],
    "jwt": [{"bearerJWT": []}],
    "jwt_or_long_term": [{"bearerJWT": []}, {"longTermToken": []}],
    "viewer": [{"bearerJWT": []}, {}],
    "admin": [{"adminToken": []}],
}
# vidwiz/auth/viewer.py: 1..256 printable characters. Stated as visible ASCII (spaces inside), what an
# HTTP client sends as is; servers strip the spaces around a header value.
GUEST_SESSION = {
    "in": "header",
    "name": "X-Guest-Session-ID",
    "required": False,
    "description": "Guest session id (e.g. a UUID), used when no valid access token is sent: the guest's "
    "conversations and quota belong to it. Ignored when a valid access token is sent.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 256,
        "pattern": "^[!-~](?:[ -~]*[!-~])?$",
        "example": "7f0c1e5a-3d4b-4c7e-9a51-2b8d6f0e4c13",
    },
}
# A JSON object kept as sent (metadata): any JSON, but no string in it may hold what StrictString
# rejects. OpenAPI 3.0 has no `propertyNames`, so the same rule for keys is stated in words.
STORABLE_JSON = {
    "description": "Any JSON value whose strings (object keys included) hold no NUL character and no "
    "unpaired surrogate",
    "anyOf": [
        {"type": "string", "pattern": STORABLE_TEXT},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "array", "items": {"$ref": "#/components/schemas/StorableJson"}},
        {"type": "object", "nullable": True, "additionalProperties": {"$ref": "#/components/schemas/StorableJson"}},
    ],
}
STORABLE_JSON_OBJECT = {
    "type": "object",
    "additionalProperties": {"$ref": "#/components/schemas/StorableJson"},
    "description": "Keys and strings hold no NUL character and no unpaired surrogate",
}
# Errors every route of an auth style can answer (docs/api.md §2), documented without repeating them per route.
AUTH_ERRORS = {
    "none": {},
    "jwt": {401: "Missing, invalid or expired access token (UNAUTHORIZED)"},
    "jwt_or_long_term": {401: "Missing, invalid, expired or revoked token (UNAUTHORIZED)"},
    "viewer": {
        401: "Neither a valid access token nor a guest session id (UNAUTHORIZED)",
        422: "Malformed X-Guest-Session-ID, or invalid input (VALIDATION_ERROR)",
    },
    "admin": {401: "Missing bearer header (UNAUTHORIZED)", 403: "Wrong admin token (FORBIDDEN)"},
}
VALIDATION_ERROR = "Request validation failed (VALIDATION_ERROR; `details` names each failing field)"


class ErrorDetailSchema(Schema):
    field = fields.String(allow_none=True)
    message = fields.String(required=True)
    type = fields.String(allow_none=True)


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Raw(
        allow_none=True, required=True, metadata={"description": "null, a list of details, or an object"}
    )


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.Equal("ok"))


class ReadySchema(Schema):
    status = fields.String(required=True, validate=validate.Equal("ready"))
    database = fields.String(required=True, validate=validate.Equal("ok"))
    redis = fields.String(required=True, validate=validate.Equal("ok"))
    fingerprint = fields.String(
        required=True,
        metadata={
            "description": "digest of SECRET_KEY, ADMIN_TOKEN and REDIS_KEY_PREFIX: equal on every host of a fleet"
        },
    )


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    auth: str = "none"
    body: type[Schema] | Schema | None = None
    query: type[Schema] | Schema | None = None
    path: type[Schema] | Schema | None = None
    # status -> Schema (JSON body) | "description" (errors get the envelope)
    #           | (content_type, description) | (content_type, description, JSON schema of the body or of one SSE event)
    responses: dict[int, Any] = field(default_factory=dict)


_Handler = TypeVar("_Handler", bound=Callable[..., Any])
_DOC_ATTRIBUTE = "__openapi__"


def operation(summary: str, tag: str, **kwargs: Any) -> Callable[[_Handler], _Handler]:
    """Attach OpenAPI facts to a handler (no behaviour change)."""
    doc = Operation(summary=summary, tag=tag, **kwargs)
    if doc.auth not in AUTH:
        raise ValueError(f"unknown auth style {doc.auth!r}")

    def decorate(handler: _Handler) -> _Handler:
        setattr(handler, _DOC_ATTRIBUTE, doc)
        return handler

    return decorate


def operation_of(handler: Callable[..., Any]) -> Operation | None:
    """The facts `@operation` attached to a handler, if any."""
    doc: Operation | None = getattr(handler, _DOC_ATTRIBUTE, None)
    return doc


_ERROR_CONTENT = {"application/json": {"schema": "Error"}}


def _response(status: int, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"description": value, **({"content": _ERROR_CONTENT} if status >= 400 else {})}
    if isinstance(value, tuple):
        content_type, description, *schema = value
        return {"description": description, "content": {content_type: {"schema": schema[0]} if schema else {}}}
    return {"description": "OK" if status < 300 else "Error", "content": {"application/json": {"schema": value}}}


def _responses(doc: Operation) -> dict[str, Any]:
    statuses: dict[int, Any] = dict(AUTH_ERRORS[doc.auth])
    if doc.body is not None or doc.query is not None or doc.path is not None:
        statuses.setdefault(422, VALIDATION_ERROR)
    statuses.update(doc.responses)
    out = {str(status): _response(status, value) for status, value in sorted(statuses.items())}
    out["default"] = {"description": "Any other error, in the error envelope", "content": _ERROR_CONTENT}
    return out


def _parameters(location: str, schema: Any) -> list[dict[str, Any]]:
    return [{"in": location, "schema": schema}] if schema is not None else []


class _Plugin(MarshmallowPlugin):
    """A schema may add JSON Schema keywords that no single field states, as `Meta.json_schema`
    (e.g. "at least one of these fields is not null")."""

    # apispec's MarshmallowPlugin renames BasePlugin's `definition` parameter to `_` (and leaves its
    # schema_helper unannotated): no signature matches both, this one keeps BasePlugin's.
    def schema_helper(  # type: ignore[override]
        self, name: str, definition: dict[str, Any], schema: type[Schema] | Schema | None = None, **kwargs: Any
    ) -> dict[str, Any] | None:
        json_schema: dict[str, Any] | None = super().schema_helper(  # type: ignore[no-untyped-call]
            name, definition, schema=schema, **kwargs
        )
        if json_schema is not None and schema is not None:
            json_schema.update(getattr(getattr(resolve_schema_cls(schema), "Meta", None), "json_schema", {}))
        return json_schema


def _route_path(route: web.AbstractRoute) -> str | None:
    info = route.resource.get_info() if route.resource else {}
    path = info.get("path") or info.get("formatter")
    return re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path) if path else None


def build_spec(app: web.Application) -> dict[str, Any]:
    spec = APISpec(
        title="VidWiz API",
        version="2.0.0",
        openapi_version="3.0.3",
        plugins=[_Plugin()],
        info={
            "description": "VidWiz backend: notes on YouTube videos, readiness streams, Wiz chat, "
            "and the internal API for task workers. Errors always use the envelope "
            '`{"error": {"code", "message", "details"}}`. No string '
            "input may hold a NUL character (each string's `pattern` says so) or an "
            'unpaired surrogate such as JSON `"\\ud800"` (no pattern can say that '
            "portably): either is a 422."
        },
    )
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    spec.components.schema("Error", schema=ErrorSchema)
    spec.components.schema("StorableJson", component=STORABLE_JSON)
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for route in app.router.routes():
        path = _route_path(route)
        doc = operation_of(route.handler)
        if route.method in ("HEAD", "*") or doc is None or path is None:
            continue
        operation_id = f"{doc.tag}_{route.handler.__name__}"
        if operation_id in operation_ids:
            raise ValueError(f"duplicate operationId {operation_id}")
        operation_ids.add(operation_id)
        op: dict[str, Any] = {
            "summary": doc.summary,
            "tags": [doc.tag],
            "operationId": operation_id,
            "security": AUTH[doc.auth],
            "parameters": _parameters("path", doc.path)
            + _parameters("query", doc.query)
            + ([GUEST_SESSION] if doc.auth == "viewer" else []),
            "responses": _responses(doc),
        }
        if doc.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": doc.body}}}
        paths.setdefault(path, {})[route.method.lower()] = op
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    return spec.to_dict()


_DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>VidWiz API</title>
<link rel="stylesheet" href="/v2/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/v2/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/v2/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"""

# The document is built once per app, at the first request (routes are fixed by then).
_SPEC_CACHE = web.AppKey("openapi_spec_cache", dict)


@operation(
    "This OpenAPI document (local/staging only)",
    "docs",
    responses={200: ("application/json", "OpenAPI 3 document", {"type": "object"})},
)
async def openapi_json(request: web.Request) -> web.Response:
    cache = request.app[_SPEC_CACHE]
    if "text" not in cache:
        cache["text"] = json.dumps(build_spec(request.app))
    return web.Response(text=cache["text"], content_type="application/json")


@operation(
    "Interactive API docs (Swagger UI; local/staging only)", "docs", responses={200: ("text/html", "Swagger UI page")}
)
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_DOCS_PAGE, content_type="text/html")


def setup_docs(app: web.Application) -> None:
    """Serve /v2/openapi.json and /v2/docs only where the old system did (local, staging)."""
    if not app[SETTINGS].docs_enabled:
        return
    import swagger_ui_bundle

    app[_SPEC_CACHE] = {}
    app.router.add_get("/v2/openapi.json", openapi_json)
    app.router.add_get("/v2/docs", docs_page)
    app.router.add_static("/v2/docs/static", swagger_ui_bundle.swagger_ui_path)
