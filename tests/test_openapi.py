"""The OpenAPI document: complete (every route), valid, and served only in local/staging."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp import web
from marshmallow import Schema, ValidationError
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from config import load_settings
from tests.conftest import ADMIN_TOKEN, SECRET_KEY, assert_error
from vidwiz.app import create_app
from vidwiz.auth.guards import MAX_GUEST_ID_LENGTH
from vidwiz.auth.schemas import LoginSchema, ProfileUpdateSchema, RegisterSchema
from vidwiz.conversations.schemas import CreateConversationSchema, SendMessageSchema
from vidwiz.internal.schemas import MAX_POLL_TIMEOUT, MetadataWriteSchema, SummaryWriteSchema, TaskResultSchema
from vidwiz.notes.schemas import NoteCreateSchema
from vidwiz.system.openapi import build_spec
from vidwiz.videos.schemas import VideoListQuerySchema


@pytest.fixture
def env(env):
    return {**env, "ENVIRONMENT": "local"}


def _registered_operations(app: web.Application) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route, without HEAD twins and static docs assets."""
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD" or isinstance(route.resource, web.StaticResource):
            continue
        info = route.resource.get_info()
        path = info.get("path") or info["formatter"]
        out.add((route.method.lower(), re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)))
    return out


async def test_every_route_is_documented_and_the_document_validates(client):
    resp = await client.get("/v2/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    spec = await resp.json()
    validate(spec)
    documented = {(method, path) for path, item in spec["paths"].items() for method in item}
    registered = _registered_operations(client.app)
    assert registered - documented == set()
    assert documented == registered
    assert len(registered) > 30  # the whole API, not an accident of an empty router


async def test_operations_describe_auth_errors_and_the_envelope(client):
    spec = await (await client.get("/v2/openapi.json")).json()
    assert set(spec["components"]["securitySchemes"]) == {"bearerJWT", "longTermToken", "adminToken"}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op["responses"]["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
            for status, response in op["responses"].items():
                if status != "default" and int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"
                    }, (method, path, status)
            schemes = {name for requirement in op["security"] for name in requirement}
            if path.startswith("/v2/internal/") and not path.startswith(
                "/v2/internal/queue/ui"
            ):  # the page asks for the token
                assert schemes == {"adminToken"}, (method, path)
                assert {"401", "403"} <= set(op["responses"]), (method, path)
            elif schemes:
                assert "401" in op["responses"], (method, path)
    note_create = spec["paths"]["/v2/videos/{video_id}/notes"]["post"]
    assert note_create["security"] == [{"bearerJWT": []}, {"longTermToken": []}]
    stream = spec["paths"]["/v2/videos/{video_id}/stream"]["get"]
    # A guest is no credential that can be "invalid": any well-formed id is a guest session.
    assert stream["security"] == [{"bearerJWT": []}, {}]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            guest = [parameter for parameter in op["parameters"] if parameter["name"] == "X-Guest-Session-ID"]
            if {} in op["security"]:
                assert guest and guest[0]["in"] == "header" and guest[0]["required"] is False, (method, path)
            else:
                assert not guest, (method, path)
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert "204" in spec["paths"]["/v2/internal/tasks"]["get"]["responses"]


async def test_docs_page_renders_in_local(client):
    resp = await client.get("/v2/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert "swagger-ui" in page and "/v2/openapi.json" in page
    asset = await client.get("/v2/docs/static/swagger-ui-bundle.js")
    assert asset.status == 200
    assert "SwaggerUIBundle" in await asset.text()


async def test_docs_served_in_staging(make_client):
    staging = await make_client(environment="staging")
    assert (await staging.get("/v2/openapi.json")).status == 200
    assert (await staging.get("/v2/docs")).status == 200


@pytest.mark.parametrize("environment", ["production", "test"])
async def test_docs_absent_elsewhere(make_client, environment):
    other = await make_client(environment=environment)
    for path in ("/v2/openapi.json", "/v2/docs", "/v2/docs/static/swagger-ui-bundle.js"):
        resp = await other.get(path)
        assert resp.status == 404, path
        assert_error(await resp.json(), "NOT_FOUND")


# -- the document states what the server enforces ---------------------------------------------------


@pytest.fixture(scope="module")
def document() -> dict:
    settings = load_settings(
        {"ENVIRONMENT": "local", "SECRET_KEY": SECRET_KEY, "ADMIN_TOKEN": ADMIN_TOKEN}, env_file=None
    )
    return json.loads(json.dumps(build_spec(create_app(settings))))


def _documented(document: dict, schema: dict, value: Any) -> bool:
    return OAS30Validator({**schema, "components": document["components"]}).is_valid(value)


def _accepted(schema: Schema, field: str, value: Any, **others: Any) -> bool:
    try:
        schema.load({**others, field: value}, partial=True)
    except ValidationError as exc:
        assert set(exc.messages) == {field}, exc.messages
        return False
    return True


LONG = "x" * 101
# (component, marshmallow schema, field, values): the document accepts exactly what the server accepts.
AGREEMENT = [
    ("Register", RegisterSchema(), "name", ["a", "ab", "  ", " a", "a\x00", "😀😀", LONG[:100], LONG]),
    (
        "Register",
        RegisterSchema(),
        "email",
        [
            "ann@example.com",
            "Ann@Example.COM",
            "ann@b.test",
            "ann@b.Local",
            "ann@localhost",
            "ann@b.c1",
            "ann@b.onion",
            "a\x00@example.com",
        ],
    ),
    ("Register", RegisterSchema(), "password", ["secret1", "short", "secret\x001"]),
    ("Login", LoginSchema(), "password", ["", "x", "a\x00"]),
    (
        "ProfileUpdate",
        ProfileUpdateSchema(),
        "name",
        [
            None,
            "a",
            " a ",
            "ab",
            " ab ",
            "\u3000ab\u3000",
            "a b",
            "a\x00b",
            "😀😀",
            LONG[:100],
            f" {LONG[:100]}\t",
            LONG,
        ],
    ),
    ("SendMessage", SendMessageSchema(), "message", ["", "   ", "\t\n", " hi ", "a\x00", "😀"]),
    (
        "NoteCreate",
        NoteCreateSchema(),
        "timestamp",
        ["1:02", "01:02:03", "12:", ":1a2", "1:", "12", ":", "a\x001:2", "1 : 2"],
    ),
    ("NoteCreate", NoteCreateSchema(), "text", [None, "", "a note", "a\x00"]),
    ("NoteCreate", NoteCreateSchema(), "video_title", [None, "", "A song", "a\x00"]),
    (
        "CreateConversation",
        CreateConversationSchema(),
        "video_id",
        [
            "dQw4w9WgXcQ",
            " dQw4w9WgXcQ\n",
            "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
            "youtu.be/dQw4w9WgXcQ",
            "youtube.com/shorts/dQw4w9WgXcQ",
            "youtube",
            "youtu.be",
            "dQw4w9WgXc",
            "dQw4w9WgXcQ\x00",
        ],
    ),
    ("SummaryWrite", SummaryWriteSchema(), "summary", [None, "ok", "a\x00"]),
    (
        "MetadataWrite",
        MetadataWriteSchema(),
        "metadata",
        [{}, {"title": "A"}, {"title": "a\x00b"}, {"n": None}, {"deep": [{"text": "\x00"}, 1, True]}, [], "x", None],
    ),
    ("TaskResult", TaskResultSchema(), "metadata", [None, {"title": "A"}, {"title": ["\x00"]}]),
]


@pytest.mark.parametrize(
    ("component", "schema", "field", "values"),
    AGREEMENT,
    ids=[f"{component}.{field}" for component, _, field, _ in AGREEMENT],
)
def test_field_rules_are_stated_in_the_document(document, component, schema, field, values):
    # Before: NUL anywhere, blank or 1-character names, blank chat messages and special-use email
    # domains were valid in the document and 422 from the server.
    property_schema = document["components"]["schemas"][component]["properties"][field]
    others = {"NoteCreate": {"timestamp": "1:02", "text": None, "video_title": None}}.get(component, {})
    for value in values:
        assert _documented(document, property_schema, value) == _accepted(schema, field, value, **others), (
            field,
            value,
        )


def test_search_query_states_the_nul_rule(document):
    q = next(p for p in document["paths"]["/v2/videos"]["get"]["parameters"] if p["name"] == "q")
    for value in ("", "song", "a\x00"):
        assert _documented(document, q["schema"], value) == _accepted(VideoListQuerySchema(), "q", value), value


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        ({}, False),
        ({"text": None}, False),
        ({"text": None, "generated_by_ai": None}, False),
        ({"text": ""}, True),
        ({"generated_by_ai": False}, True),
        ({"text": None, "generated_by_ai": True}, True),
    ],
)
def test_note_edit_needs_a_non_null_field(document, body, accepted):
    # The server answers 400 "No fields provided for update" (docs/api.md §3.3); the document said `{}` was fine.
    request = document["paths"]["/v2/notes/{note_id}"]["patch"]["requestBody"]["content"]["application/json"]
    assert _documented(document, request["schema"], body) is accepted
    internal = document["paths"]["/v2/internal/notes/{note_id}"]["patch"]["requestBody"]["content"]["application/json"]
    assert _documented(document, internal["schema"], body)  # {} is a no-op there


@pytest.mark.parametrize(
    "guest", ["7f0c1e5a-3d4b-4c7e-9a51-2b8d6f0e4c13", "a", "a b", "x" * 256, "x" * 257, "a\tb", ""]
)
def test_guest_session_header_states_what_the_server_takes(document, guest):
    header = next(
        p for p in document["paths"]["/v2/conversations"]["post"]["parameters"] if p["name"] == "X-Guest-Session-ID"
    )
    accepted = 1 <= len(guest) <= MAX_GUEST_ID_LENGTH and guest.isprintable()
    assert _documented(document, header["schema"], guest) is accepted


def test_long_poll_timeout_clamp_is_stated(document):
    timeout = next(p for p in document["paths"]["/v2/internal/tasks"]["get"]["parameters"] if p["name"] == "timeout")
    assert "maximum" not in timeout["schema"]  # larger values are accepted, not refused
    assert f"clamped to {MAX_POLL_TIMEOUT}" in timeout["description"]


def test_every_string_a_request_takes_states_the_nul_rule(document):
    """Request strings (bodies, queries, paths, headers) all carry a pattern that refuses NUL."""

    def strings(schema: Any, seen: set[str]) -> Any:
        if isinstance(schema, dict):
            ref = schema.get("$ref")
            if ref:
                if ref not in seen:
                    seen.add(ref)
                    yield from strings(document["components"]["schemas"][ref.rsplit("/", 1)[1]], seen)
                return
            if schema.get("type") == "string" and "enum" not in schema:
                yield schema
            children = [*schema.get("properties", {}).values(), schema.get("additionalProperties"), schema.get("items")]
            if "properties" not in schema:  # an object's anyOf only adds rules to its properties (NoteEdit)
                children += [*schema.get("anyOf", []), *schema.get("allOf", []), *schema.get("oneOf", [])]
            for child in children:
                yield from strings(child, seen)

    checked = 0
    for path, item in document["paths"].items():
        for method, op in item.items():
            schemas = [p["schema"] for p in op["parameters"]]
            if "requestBody" in op:
                schemas.append(op["requestBody"]["content"]["application/json"]["schema"])
            for string in (s for schema in schemas for s in strings(schema, set())):
                assert "pattern" in string and not re.search(string["pattern"], "a\x00b"), (method, path, string)
                checked += 1
    assert checked > 20
