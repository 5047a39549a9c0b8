"""Structured logs: one access line per request (vidwiz/access_log.py) with request id, method,
canonical route, status, latency and viewer kind; JSON outside `local`; never a token or a
password, not even from a request aiohttp's parser refuses; the request id of a 500 in its
error log and in the X-Request-ID header. The app is served by vidwiz/http_server.py's
runner, as vidwiz/web.py serves it."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import ADMIN, ADMIN_TOKEN, assert_error, auth
from vidwiz.constants import PROBE_USER_AGENT
from vidwiz.http_server import app_runner
from vidwiz.logs import log_handler

PASSWORD = "correct-horse-battery"
FIELDS = {"request_id", "method", "route", "status", "latency_ms", "viewer"}


@pytest.fixture
def env(env, request):
    """ENVIRONMENT=test (JSON) unless a test asks for another with indirect parametrization."""
    return {**env, **getattr(request, "param", {})}


@pytest.fixture
def log_output(settings):
    """What the process's log handler writes, for the root logger at INFO."""
    stream = io.StringIO()
    handler = log_handler(settings, "web", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


class ServedLikeWeb(TestServer):
    """aiohttp's test server, running the app through vidwiz/web.py's runner."""

    async def _make_runner(self, **kwargs) -> web.AppRunner:
        return app_runner(self.app, **kwargs)


async def serve(aiohttp_client, app: web.Application):
    return await aiohttp_client(ServedLikeWeb(app))


@pytest.fixture
async def client(aiohttp_client, app, log_output):
    return await serve(aiohttp_client, app)


def json_records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def access_records(stream: io.StringIO) -> list[dict]:
    return [record for record in json_records(stream) if record["name"] == "vidwiz.access"]


async def test_one_json_access_line_per_request_with_the_viewer_kind(client, factory, log_output):
    token, _ = await factory.user(email="logged@example.com", password=PASSWORD)
    calls = [
        ("GET", "/v2/users/me", auth(token), "/v2/users/me", 200, "user"),
        (
            "GET",
            "/v2/conversations/12345",
            {"X-Guest-Session-ID": "g-1"},
            "/v2/conversations/{conversation_id}",
            404,
            "guest",
        ),
        ("GET", "/v2/internal/videos/aaaaaaaaaaa", ADMIN, "/v2/internal/videos/{video_id}", 404, "admin"),
        ("GET", "/v2/videos/aaaaaaaaaaa", {}, "/v2/videos/{video_id}", 401, "anonymous"),
        ("GET", "/v2/users/me", auth("not.a.jwt"), "/v2/users/me", 401, "anonymous"),
        ("DELETE", "/nowhere", {}, "unmatched", 404, "anonymous"),
    ]
    ids = []
    for method, path, headers, _, status, _ in calls:
        resp = await client.request(method, path, headers=headers)
        assert resp.status == status, await resp.text()
        ids.append(resp.headers["X-Request-ID"])
    records = access_records(log_output)
    # register + login + /users/me of factory, then the calls: exactly one line each.
    assert [(r["method"], r["route"], r["status"]) for r in records[:3]] == [
        ("POST", "/v2/auth/register", 201),
        ("POST", "/v2/auth/login", 200),
        ("GET", "/v2/users/me", 200),
    ]
    assert len(records) == 3 + len(calls)
    for record, request_id, (method, _, _, route, status, viewer) in zip(records[3:], ids, calls):
        assert FIELDS <= set(record)
        assert (record["request_id"], record["method"], record["route"], record["status"], record["viewer"]) == (
            request_id,
            method,
            route,
            status,
            viewer,
        )
        assert isinstance(record["latency_ms"], float) and record["latency_ms"] >= 0
        assert record["levelname"] == "INFO" and record["process_name"] == "web"
    text = log_output.getvalue()
    for secret in (PASSWORD, token, ADMIN_TOKEN, "Bearer", "logged@example.com"):
        assert secret not in text


async def test_a_client_request_id_is_kept(client, log_output):
    resp = await client.get("/health", headers={"X-Request-ID": "trace-abc-123"})
    assert resp.headers["X-Request-ID"] == "trace-abc-123"
    [record] = access_records(log_output)
    assert (record["request_id"], record["route"], record["status"]) == ("trace-abc-123", "/health", 200)


async def test_supervisor_probes_are_not_logged(client, log_output):
    assert (await client.get("/health", headers={"User-Agent": PROBE_USER_AGENT})).status == 200
    assert (await client.get("/health")).status == 200
    assert len(access_records(log_output)) == 1


async def test_a_500_logs_its_request_id(aiohttp_client, app, log_output):
    async def explode(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app.router.add_get("/explode", explode)
    client = await serve(aiohttp_client, app)
    resp = await client.get("/explode", headers={"Authorization": "Bearer secret-token-value"})
    assert resp.status == 500
    assert_error(await resp.json(), "INTERNAL_ERROR", "Internal Server Error")
    request_id = resp.headers["X-Request-ID"]
    [error] = [r for r in json_records(log_output) if r["levelname"] == "ERROR"]
    assert error["request_id"] == request_id and request_id in error["message"]
    assert "RuntimeError: boom" in error["exc_info"]
    [access] = access_records(log_output)
    assert (access["request_id"], access["route"], access["status"]) == (request_id, "/explode", 500)
    assert "secret-token-value" not in log_output.getvalue()


@pytest.mark.parametrize("env", [{"ENVIRONMENT": "local"}], indirect=True)
async def test_plain_text_in_local(client, log_output):
    resp = await client.get("/v2/videos/aaaaaaaaaaa")
    assert resp.status == 401
    [line] = log_output.getvalue().splitlines()
    assert " INFO vidwiz.access: GET /v2/videos/{video_id} 401 " in line
    assert line.endswith(f"ms viewer=anonymous request_id={resp.headers['X-Request-ID']}")


TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJlLXZhbHVl"


async def raw_exchange(client, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send bytes as they are (no client library would send these); the status line, the
    headers and the body of the answer."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 20)  # the server closes after a parse error
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return status_line, headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v2/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\x01\r\n\r\n",
        b"GET /v2/users/me?token=" + TOKEN.encode() + b"\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v2/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() * 300 + b"\r\n\r\n",
    ],
    ids=["control-char-in-header", "control-char-in-request-line", "header-too-long"],
)
async def test_a_request_the_parser_refuses_answers_the_envelope_and_logs_no_credentials(
    client, log_output, caplog, request_bytes
):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    status_line, headers, body = await raw_exchange(client, request_bytes)
    assert status_line.startswith("HTTP/1.") and status_line.split()[1] == "400", status_line
    assert headers["content-type"].startswith("application/json")
    assert "server" not in headers
    assert_error(json.loads(body), "BAD_REQUEST", "Bad Request")

    assert caplog.records, "the refusal is logged"
    for record in caplog.records:
        assert record.exc_info is None and record.exc_text is None, record
        assert TOKEN[:20] not in record.getMessage(), record
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING and len(warning.getMessage()) < 120, warning.getMessage()
    text = log_output.getvalue()
    assert TOKEN[:20] not in text and "Traceback" not in text
    [access] = access_records(log_output)  # the access logger copes with a request never routed
    assert (access["route"], access["status"], access["viewer"]) == ("unmatched", 400, "anonymous")


async def test_no_server_version_banner(client):
    for path in ("/health", "/nowhere", "/v2/users/me"):
        resp = await client.get(path)
        assert "Server" not in resp.headers, (path, resp.headers)
