"""OpenAPI 3 document built from the marshmallow schemas that the handlers already use.

Handlers declare what they take and answer with `@operation(...)`; `build_spec(app)` walks
the router, so a route without docs is visible (and a test fails). Served with a Swagger UI
page (assets from the swagger-ui-bundle wheel: no CDN) only in local/staging.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from vidwiz.context import SETTINGS

SECURITY_SCHEMES = {
    "bearerJWT": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                  "description": "Access token from /v2/auth/login or /v2/auth/google"},
    "longTermToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                      "description": "Long-term token from POST /v2/auth/tokens (note creation only)"},
    "guestSession": {"type": "apiKey", "in": "header", "name": "X-Guest-Session-ID",
                     "description": "Guest session id (any opaque string, e.g. a UUID)"},
    "adminToken": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN for /v2/internal"},
}
# Which schemes each auth style accepts (alternatives are separate requirement objects).
AUTH = {
    "none": [],
    "jwt": [{"bearerJWT": []}],
    "jwt_or_long_term": [{"bearerJWT": []}, {"longTermToken": []}],
    "viewer": [{"bearerJWT": []}, {"guestSession": []}],
    "admin": [{"adminToken": []}],
}


class ErrorDetailSchema(Schema):
    field = fields.String(allow_none=True)
    message = fields.String(required=True)
    type = fields.String(allow_none=True)


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Raw(allow_none=True, required=True, metadata={"description": "null, a list of details, or an object"})


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    auth: str = "none"
    body: type[Schema] | Schema | None = None
    query: type[Schema] | Schema | None = None
    path: type[Schema] | Schema | None = None
    responses: dict[int, Any] = field(default_factory=dict)  # status -> Schema | "description" | (content_type, description)


def operation(summary: str, tag: str, **kwargs: Any) -> Callable:
    """Attach OpenAPI facts to a handler (no behaviour change)."""
    doc = Operation(summary=summary, tag=tag, **kwargs)

    def decorate(handler: Callable) -> Callable:
        handler.__openapi__ = doc
        return handler

    return decorate


def _response(spec_status: int, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"description": value}
    if isinstance(value, tuple):
        content_type, description = value
        return {"description": description, "content": {content_type: {"schema": {"type": "string"}}}}
    return {"description": "OK" if spec_status < 300 else "Error", "content": {"application/json": {"schema": value}}}


def _parameters(location: str, schema: Any) -> list[dict[str, Any]]:
    return [{"in": location, "schema": schema}] if schema is not None else []


def build_spec(app: web.Application) -> dict[str, Any]:
    spec = APISpec(title="VidWiz API", version="2.0.0", openapi_version="3.0.3", plugins=[MarshmallowPlugin()])
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    spec.components.schema("Error", schema=ErrorSchema)
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        doc: Operation | None = getattr(route.handler, "__openapi__", None)
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if doc is None or path is None:
            continue
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)
        op: dict[str, Any] = {
            "summary": doc.summary,
            "tags": [doc.tag],
            "operationId": route.handler.__name__ + "_" + route.method.lower(),
            "security": AUTH[doc.auth],
            "parameters": _parameters("path", doc.path) + _parameters("query", doc.query),
            "responses": {str(status): _response(status, value) for status, value in doc.responses.items()},
        }
        op["responses"]["default"] = {"description": "Error envelope", "content": {"application/json": {"schema": "Error"}}}
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


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(build_spec(request.app)), content_type="application/json")


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_DOCS_PAGE, content_type="text/html")


def setup_docs(app: web.Application) -> None:
    """Serve /v2/openapi.json and /v2/docs only where the old system did (local, staging)."""
    if not app[SETTINGS].docs_enabled:
        return
    import swagger_ui_bundle

    app.router.add_get("/v2/openapi.json", openapi_json)
    app.router.add_get("/v2/docs", docs_page)
    app.router.add_static("/v2/docs/static", swagger_ui_bundle.swagger_ui_path)
