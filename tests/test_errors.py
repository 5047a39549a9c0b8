"""The error envelope and transport conventions (docs/api.md §1, D2): 404/405/413/422/500 envelopes,
malformed and oversized bodies, content types, CORS, response headers, /health and /ready."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from config import Settings
from tests.conftest import assert_error, closed_port
from vidwiz.db import create_engine

REGISTER = "/v2/auth/register"
VALID = b'{"email": "e@example.com", "password": "password1", "name": "Err Or"}'


@pytest.fixture
def env(env):
    return {**env, "MAX_BODY_BYTES": "2048"}


@pytest.fixture
def app(app):
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail: SELECT * FROM users")

    app.router.add_get("/v2/test-only/boom", boom)
    return app


async def details_of(resp, status: int = 422) -> list:
    body = await resp.json()
    assert resp.status == status, body
    assert_error(body, "VALIDATION_ERROR", "Request validation failed")
    return [(d["field"], d["message"], d["type"]) for d in body["error"]["details"]]


async def post_raw(client, data: bytes | str, content_type: str | None = "application/json"):
    headers = {"Content-Type": content_type} if content_type else {}
    skip = () if content_type else ("Content-Type",)
    return await client.post(REGISTER, data=data, headers=headers, skip_auto_headers=skip)


async def test_unknown_route_is_404_envelope(client):
    for path in ("/", "/v2", "/v2/nope", "/api/v2/users/me", "/v2/users/me/"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert_error(await resp.json(), "NOT_FOUND", "Not Found")
        assert resp.headers["Content-Type"].startswith("application/json")
        assert resp.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


async def test_wrong_method_is_405_envelope(client):
    for method, path in (
        ("PUT", "/v2/auth/login"),
        ("GET", "/v2/auth/register"),
        ("POST", "/v2/users/me"),
        ("DELETE", "/health"),
    ):
        resp = await client.request(method, path)
        assert resp.status == 405, (method, path)
        assert_error(await resp.json(), "METHOD_NOT_ALLOWED", "Method Not Allowed")
        assert resp.headers["Allow"]


async def test_malformed_json(client):
    for data in ("{bad json", "not json", '{"email": "a@b.co",}', b"\xff\xfe{}", "[" * 1020 + "]" * 1020):
        resp = await post_raw(client, data)
        assert await details_of(resp) == [("body.0", "JSON decode error", "json_invalid")]


async def test_empty_or_null_body_is_field_required(client):
    for data in ("", "   ", "null"):
        resp = await post_raw(client, data)
        assert await details_of(resp) == [("body", "Field required", "missing")]


async def test_body_must_be_an_object(client):
    for data in ("[]", "[1]", '"text"', "42", "true"):
        resp = await post_raw(client, data)
        assert [(f, t) for f, _, t in await details_of(resp)] == [("body", "dict_type")]


async def test_content_type(client):
    resp = await post_raw(client, VALID, "text/plain")
    assert [f for f, _, _ in await details_of(resp)] == ["body"]
    resp = await post_raw(client, "email=e@example.com", "application/x-www-form-urlencoded")
    assert [f for f, _, _ in await details_of(resp)] == ["body"]
    # A JSON body with no Content-Type, or a JSON flavour with parameters, is read as JSON.
    for content_type in (None, "application/json; charset=utf-8", "application/merge-patch+json"):
        resp = await post_raw(client, VALID.replace(b"e@", f"e{len(content_type or '')}@".encode()), content_type)
        assert resp.status == 201, (content_type, await resp.text())


async def test_oversized_body_is_413_envelope(client):
    padding = "x" * 4096
    resp = await client.post(REGISTER, json={"email": "big@example.com", "password": padding, "name": "Big"})
    assert resp.status == 413
    assert_error(await resp.json(), "PAYLOAD_TOO_LARGE")
    assert resp.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"

    async def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(8):
            yield b" " * 1024

    resp = await client.post(REGISTER, data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert_error(await resp.json(), "PAYLOAD_TOO_LARGE")
    # Just under the limit is fine.
    resp = await client.post(REGISTER, json={"email": "ok@example.com", "password": "p" * 1024, "name": "Ok"})
    assert resp.status == 201


async def test_unhandled_exception_is_500_envelope_without_details(client, caplog):
    caplog.set_level(logging.ERROR)
    resp = await client.get("/v2/test-only/boom", headers={"X-Request-ID": "req-12345"})
    assert resp.status == 500
    body = await resp.json()
    assert body == {"error": {"code": "INTERNAL_ERROR", "message": "Internal Server Error", "details": None}}
    assert "SELECT" not in await resp.text()
    assert resp.headers["X-Request-ID"] == "req-12345"
    logged = [r for r in caplog.records if "req-12345" in r.getMessage()]
    assert logged and logged[0].exc_info is not None


async def test_request_id_is_generated_or_echoed(client):
    resp = await client.get("/health")
    assert len(resp.headers["X-Request-ID"]) == 32
    resp = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get("/health", headers={"X-Request-ID": "x" * 500})
    assert resp.headers["X-Request-ID"] != "x" * 500


async def test_referrer_policy_on_every_kind_of_response(client):
    for method, path, body in (
        ("GET", "/health", None),
        ("POST", REGISTER, {}),
        ("GET", "/v2/users/me", None),
        ("GET", "/nowhere", None),
        ("PATCH", "/health", None),
        ("GET", "/v2/test-only/boom", None),
    ):
        resp = await client.request(method, path, json=body)
        assert resp.headers["Referrer-Policy"] == "strict-origin-when-cross-origin", (method, path, resp.status)


# -- CORS ----------------------------------------------------------------------------------------

ORIGIN = "chrome-extension://abcdefghijklmnop"


async def test_cors_preflight(client):
    for path in ("/v2/auth/login", "/v2/videos/dQw4w9WgXcQ/notes", "/v2/does-not-exist"):
        resp = await client.options(
            path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "authorization,content-type,x-guest-session-id",
            },
        )
        assert resp.status == 200, path
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        assert "PATCH" in resp.headers["Access-Control-Allow-Methods"]
        assert resp.headers["Access-Control-Allow-Headers"] == "authorization,content-type,x-guest-session-id"
        assert "Origin" in resp.headers.getall("Vary")
        assert resp.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


async def test_cors_simple_and_error_responses_carry_the_origin(client):
    for method, path in (("GET", "/health"), ("GET", "/v2/users/me"), ("GET", "/missing"), ("POST", REGISTER)):
        resp = await client.request(method, path, headers={"Origin": "https://vidwiz.online"})
        assert resp.headers["Access-Control-Allow-Origin"] == "https://vidwiz.online", (method, path)
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        assert "Origin" in resp.headers.getall("Vary")
        # Credentialed requests ignore a "*" here: the readable headers are named.
        exposed = [name.strip() for name in resp.headers["Access-Control-Expose-Headers"].split(",")]
        assert {"X-Request-ID", "Retry-After", "X-Quota-Remaining", "X-Quota-Reset"} <= set(exposed)
    resp = await client.get("/health")
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_options_without_origin_is_not_a_preflight(client):
    resp = await client.options("/v2/auth/login", headers={"Access-Control-Request-Method": "POST"})
    assert resp.status == 405
    assert_error(await resp.json(), "METHOD_NOT_ALLOWED")


@pytest.fixture
async def restricted_client(make_client):
    return await make_client(cors_origins=("https://vidwiz.online",))


async def test_cors_restricted_origins(restricted_client):
    preflight = {"Access-Control-Request-Method": "POST"}
    resp = await restricted_client.options("/v2/auth/login", headers={"Origin": "https://vidwiz.online", **preflight})
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "https://vidwiz.online"
    resp = await restricted_client.options("/v2/auth/login", headers={"Origin": "https://evil.example", **preflight})
    assert resp.status == 400
    assert_error(await resp.json(), "BAD_REQUEST", "Disallowed CORS origin")
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await restricted_client.get("/health", headers={"Origin": "https://evil.example"})
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers


# -- health and readiness ------------------------------------------------------------------------


async def test_health_and_ready(client, settings: Settings):
    resp = await client.get("/health")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    resp = await client.get("/ready")
    assert resp.status == 200
    assert await resp.json() == {
        "status": "ready",
        "database": "ok",
        "redis": "ok",
        "fingerprint": settings.fingerprint,
    }


async def test_ready_names_what_is_down(make_client, settings: Settings, tmp_path):
    dead_redis = aioredis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1)
    client = await make_client(redis=dead_redis)
    resp = await client.get("/ready")
    body = await resp.json()
    assert resp.status == 503
    assert_error(body, "SERVICE_UNAVAILABLE")
    assert "redis" in body["error"]["message"] and "database" not in body["error"]["message"]
    assert body["error"]["details"] == {"down": ["redis"]}
    assert (await client.get("/health")).status == 200

    missing_db = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    dead_engine = create_engine(dataclasses.replace(settings, db_url=missing_db))
    client = await make_client(db_url=missing_db, engine=dead_engine)
    resp = await client.get("/ready")
    body = await resp.json()
    assert resp.status == 503
    assert body["error"]["details"] == {"down": ["database"]}
    await dead_engine.dispose()
    await dead_redis.aclose()
