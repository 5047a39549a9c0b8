"""Schemathesis against the running app, from the app's own OpenAPI document.

Every operation (public and internal) runs through schemathesis' examples, coverage and fuzzing
phases with all of its checks: among them, valid requests must be accepted and invalid ones
refused (so the document must state every rule the server enforces), no 5xx, statuses, content
types and bodies as documented, auth enforced. Credentials come from an auth provider (the user's
JWT, the long-term token, the admin token; or none, so that a viewer is a guest); schemathesis
leaves them out where it tests their absence. On top: every status explicitly documented and every
error in the envelope. Checks are turned off only where the contract differs from them on purpose,
per operation, with the reason (see `schema` below). Bounded: a fixed number of examples per
operation, a deterministic seed, and short stream/long-poll limits on the fuzzed app.

The app runs in a real aiohttp server on 127.0.0.1:<free port> in its own thread and event
loop (schemathesis calls it through a blocking HTTP client), on SQLite + fakeredis (or
PostgreSQL + Redis when VIDWIZ_TEST_BACKENDS=postgres), fully configured: Google
certificates and the LLM are local stand-ins, so no 5xx is excusable.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
import requests
import schemathesis
from aiohttp import web
from schemathesis.core.parameters import ParameterLocation
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from config import load_settings
from tests.conftest import ADMIN, ADMIN_TOKEN, BACKENDS, PG_URL, REDIS_URL, SECRET_KEY, assert_error, auth
from tests.google_certs import CLIENT_ID, GoogleCerts
from tests.standins import LLMStandin
from vidwiz.app import create_app
from vidwiz.context import HUB
from vidwiz.db import create_engine
from vidwiz.models import Base
from vidwiz.system.openapi import build_spec
from vidwiz.videos.schemas import EXAMPLE_VIDEO_ID

# One backend keeps the run inside its time budget: SQLite + fakeredis unless the run is PostgreSQL-only.
FUZZ_BACKEND = "sqlite" if "sqlite" in BACKENDS else "postgres"
# VIDWIZ_FUZZ_EXAMPLES=500 for a deeper local hunt; the suite's budget is the default.
EXAMPLES_PER_OPERATION = int(os.environ.get("VIDWIZ_FUZZ_EXAMPLES", "200"))
SEED = int(os.environ.get("VIDWIZ_FUZZ_SEED", "20250131"))
SEEDED_VIDEO = EXAMPLE_VIDEO_ID  # the documented example id: fully ready, with notes and conversations
GUEST = "fuzz-guest-session"
STREAM_SECONDS = 0.3  # readiness streams of videos that are not ready end this fast here
REQUEST_TIMEOUT = 15
# The whole run's budget: past it, remaining cases are generated but not sent (and counted as skipped),
# so a slow machine shortens the fuzzing instead of the suite's patience. Normally it takes ~55 s.
BUDGET_SECONDS = float(os.environ.get("VIDWIZ_FUZZ_BUDGET_SECONDS", "180"))


class FuzzServer:
    """The app in a background thread with its own event loop, plus its local stand-ins."""

    def __init__(self, tmp: Path, backend: str):
        self.tmp = tmp
        self.backend = backend
        self.schema = f"fuzz_{uuid.uuid4().hex[:12]}"  # PostgreSQL: a fresh schema, dropped at the end
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-server", daemon=True)
        self.url = ""
        self.deadline = float("inf")

    def start(self) -> None:
        self.thread.start()
        self._run(self._start())

    def stop(self) -> None:
        try:
            self._run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def _run(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _start(self) -> None:
        self.llm = await LLMStandin().start()
        self.certs = GoogleCerts()
        self.certs_runner = web.AppRunner(self.certs.app())
        await self.certs_runner.setup()
        await web.TCPSite(self.certs_runner, "127.0.0.1", 0).start()
        certs_port = self.certs_runner.addresses[0][1]
        self.settings = load_settings(
            {
                "ENVIRONMENT": "local",  # docs (and the queue page) are served
                "SECRET_KEY": SECRET_KEY,
                "ADMIN_TOKEN": ADMIN_TOKEN,
                "DB_URL": f"sqlite:///{self.tmp}/fuzz.db" if self.backend == "sqlite" else PG_URL,
                "DATA_DIR": str(self.tmp / "data"),
                "TRANSCRIPT_DIR": str(self.tmp / "transcripts"),
                "REDIS_KEY_PREFIX": f"{self.schema}:",
                "GOOGLE_CLIENT_ID": CLIENT_ID,
                "GOOGLE_CERTS_URL": f"http://127.0.0.1:{certs_port}/oauth2/v1/certs",
                "LOGIN_MAX_DELAY_SECONDS": "0.01",  # throttling still refuses (429); it just does not slow the run
                **self.llm.env("gemini"),
            },
            env_file=None,
        )
        if self.backend == "sqlite":
            self.redis = fakeredis.aioredis.FakeRedis()
            self.engine = create_engine(self.settings)
        else:
            self.redis = aioredis.from_url(REDIS_URL)
            await self._admin(f'CREATE SCHEMA "{self.schema}"')
            self.engine = create_engine(self.settings, search_path=self.schema)
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        app = create_app(self.settings, redis=self.redis, engine=self.engine)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        app[HUB].stream_timeout = STREAM_SECONDS
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.engine.dispose()
        await self.certs_runner.cleanup()
        await self.llm.close()
        if self.backend == "postgres":
            await self._admin(f'DROP SCHEMA "{self.schema}" CASCADE')
            keys = [key async for key in self.redis.scan_iter(match=f"{self.schema}:*", count=500)]
            if keys:
                await self.redis.delete(*keys)
        await self.redis.aclose()

    async def _admin(self, statement: str) -> None:
        admin = create_async_engine(self.settings.async_db_url)
        async with admin.begin() as conn:
            await conn.execute(text(statement))
        await admin.dispose()


def _seed(http: requests.Session, url: str) -> dict[str, str]:
    """A user with notes, a ready video, conversations: so that generated ids often hit real rows."""

    def call(method: str, path: str, expect: int, token: str | None = None, headers: dict | None = None, **kwargs):
        headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        resp = http.request(method, url + path, headers=headers, timeout=REQUEST_TIMEOUT, **kwargs)
        assert resp.status_code == expect, (method, path, resp.status_code, resp.text)
        return resp.json() if resp.content else None

    account = {"email": "fuzz@example.com", "password": "password123"}
    call("POST", "/v2/auth/register", 201, json={**account, "name": "Fuzz User"})
    jwt = call("POST", "/v2/auth/login", 200, json=account)["token"]
    long_term = call("POST", "/v2/auth/tokens", 200, jwt)["token"]
    call("PATCH", "/v2/users/me", 200, jwt, json={"ai_notes_enabled": True})
    call("POST", f"/v2/videos/{SEEDED_VIDEO}/notes", 201, jwt, json={"timestamp": "0:42"})
    call("POST", f"/v2/videos/{SEEDED_VIDEO}/notes", 201, jwt, json={"timestamp": "1:23", "text": "a note"})
    call(
        "POST",
        f"/v2/internal/videos/{SEEDED_VIDEO}/transcript",
        200,
        ADMIN_TOKEN,
        json={"transcript": [{"text": "Never gonna give you up", "offset": 1.0, "duration": 2.0}]},
    )
    call(
        "POST", f"/v2/internal/videos/{SEEDED_VIDEO}/metadata", 200, ADMIN_TOKEN, json={"metadata": {"title": "A song"}}
    )
    call("POST", f"/v2/internal/videos/{SEEDED_VIDEO}/summary", 200, ADMIN_TOKEN, json={"summary": "A song."})
    call("POST", "/v2/conversations", 201, jwt, json={"video_id": SEEDED_VIDEO})
    call("POST", "/v2/conversations", 201, headers={"X-Guest-Session-ID": GUEST}, json={"video_id": SEEDED_VIDEO})
    # A second user for the long-term token routes, so that revoking it leaves the first one's working.
    other = {"email": "fuzz-tokens@example.com", "password": "password123"}
    call("POST", "/v2/auth/register", 201, json={**other, "name": "Token Fuzzer"})
    token_user_jwt = call("POST", "/v2/auth/login", 200, json=other)["token"]
    return {"jwt": jwt, "long_term": long_term, "token_user_jwt": token_user_jwt}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, request):
    server = FuzzServer(tmp_path_factory.mktemp("fuzz"), FUZZ_BACKEND)
    server.start()
    started = time.perf_counter()
    server.deadline = started + BUDGET_SECONDS
    yield server
    server.stop()
    # The example count and duration, shown even under -q (outside output capture).
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(
            f"\nfuzz: {sum(CALLS.values())} requests over {len(CALLS)} operations in "
            f"{time.perf_counter() - started:.1f}s (up to {EXAMPLES_PER_OPERATION} generated examples per "
            f"operation plus schemathesis' coverage cases); statuses: {dict(sorted(STATUSES.items()))}"
            + (f"; {SKIPPED} cases not sent: time budget of {BUDGET_SECONDS:.0f}s spent" if SKIPPED else "")
        )


@pytest.fixture(scope="module")
def http(fuzz_server):
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def tokens(fuzz_server, http) -> dict[str, str]:
    # The fuzzed document is the one the running app serves.
    assert http.get(f"{fuzz_server.url}/v2/openapi.json", timeout=REQUEST_TIMEOUT).json() == SPEC
    seeded = _seed(http, fuzz_server.url)
    TOKENS.update(seeded)
    yield TOKENS
    for name in seeded:
        del TOKENS[name]


def _document() -> dict[str, Any]:
    settings = load_settings(
        {"ENVIRONMENT": "local", "SECRET_KEY": SECRET_KEY, "ADMIN_TOKEN": ADMIN_TOKEN}, env_file=None
    )
    return json.loads(json.dumps(build_spec(create_app(settings))))


def _expecting(check: str, *statuses: str) -> dict[str, Any]:
    """A check's default expected statuses plus `statuses`."""
    default = getattr(schemathesis.Config().projects.default.checks, check).expected_statuses
    return {check: {"expected-statuses": [*default, *statuses]}}


SPEC = _document()
# All of schemathesis' checks (every check is on unless turned off here), in its examples, coverage
# and fuzzing phases. The only exceptions are where the contract differs from a check on purpose:
# each names the operation, the check and the reason.
schema = schemathesis.openapi.from_dict(
    SPEC,
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "request-timeout": REQUEST_TIMEOUT,
            "generation": {
                "max-examples": EXAMPLES_PER_OPERATION,
                "deterministic": True,
                "database": "none",
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "operations": [
                # Each failed login costs an argon2 verification (as it must): fewer examples there.
                {
                    "include-operation-id": ["auth_login", "auth_register"],
                    "generation": {"max-examples": max(1, EXAMPLES_PER_OPERATION // 3)},
                },
                # docs/api.md §3.1: a second long-term token is a 400 "A long-term token already exists" (the state, not
                # the input, decides), so a valid request may be refused with that 400.
                {
                    "include-operation-id": "auth_create_long_term_token",
                    "checks": _expecting("positive_data_acceptance", "400"),
                },
                # docs/api.md §5.2: a valid result for a task that is not in progress, or for another video, or of the
                # wrong kind, is a 400 "Task is not in progress" / "Task video_id mismatch" (task state decides).
                {
                    "include-operation-id": "internal_submit_task_result",
                    "checks": _expecting("positive_data_acceptance", "400"),
                },
            ],
            "suppress-health-check": ["all"],  # a loaded CI machine must not turn "slow data generation" into a failure
        }
    ),
)

TOKENS: dict[str, str] = {"admin": ADMIN_TOKEN}  # plus the seeded users' tokens, from the `tokens` fixture
CALLS: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()
SKIPPED = 0


@schema.auth(refresh_interval=None)
class Credentials:
    """Valid credentials for the operation's security scheme, set where schemathesis wants auth (it
    leaves them out where it tests their absence). Viewer operations (JWT or guest) take turns: the
    user's JWT, or none, so that the generated X-Guest-Session-ID makes a guest. Some cases are made
    at collection, before the server has seeded its users: the header names a TOKENS key until
    `_resolve_credentials` puts the token in just before the call."""

    def get(self, case, ctx) -> str | None:
        schemes = [name for requirement in case.operation.definition.raw["security"] for name in requirement]
        if not schemes:
            return None
        viewer = {} in case.operation.definition.raw["security"]
        turn = CALLS[case.operation.label]
        # With a valid JWT the server ignores X-Guest-Session-ID (docs/api.md §2.4): a malformed one is
        # refused only from guests, so such cases go without the JWT.
        if viewer and (turn % 2 or case.meta is None or case.meta.is_negative_at(ParameterLocation.HEADER)):
            return None
        scheme = schemes[turn % len(schemes)]
        if case.operation.path == "/v2/auth/tokens":  # its own user: revoking must not break longTermToken
            return "token_user_jwt"
        return {"bearerJWT": "jwt", "longTermToken": "long_term", "adminToken": "admin"}[scheme]

    def set(self, case, data: str, ctx) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN_REFERENCE}{data}"}


TOKEN_REFERENCE = "$token:"


def _resolve_credentials(case) -> None:
    header = (case.headers or {}).get("Authorization", "")
    if header.startswith(f"Bearer {TOKEN_REFERENCE}"):
        case.headers["Authorization"] = "Bearer " + TOKENS[header.removeprefix(f"Bearer {TOKEN_REFERENCE}")]


@schema.hook
def filter_body(ctx, body) -> bool:
    """The document's free-form objects (metadata, `StorableJson`) say that their keys hold no NUL,
    but in words: OpenAPI 3.0 has no `propertyNames` to say it to schemathesis. Bodies breaking only
    that rule are left out here rather than counted as valid requests the server refuses."""
    pending = [body]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if any(isinstance(key, str) and "\x00" in key for key in item):
                return False
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def status_is_documented(ctx, response, case) -> None:
    """Stricter than status_code_conformance, which any status passes once `default` exists."""
    if case.method.upper() != case.operation.method.upper():  # schemathesis probing an unlisted method
        assert response.status_code == 405 and response.headers.get("allow"), response.status_code
        return
    documented = case.operation.definition.raw["responses"]
    assert str(response.status_code) in documented, (
        f"{response.status_code} is not documented for {case.operation.label} (documented: {sorted(documented)})"
    )


def error_is_the_envelope(ctx, response, case) -> None:
    """docs/api.md §1.2: every error has exactly {"error": {"code", "message", "details"}}."""
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str), body


@schema.parametrize()
def test_api(case, fuzz_server, http, tokens):
    global SKIPPED
    if time.perf_counter() > fuzz_server.deadline:
        SKIPPED += 1
        return
    if case.operation.path == "/v2/internal/tasks":
        case.query = case.query if isinstance(case.query, dict) else {}
        _shorten_long_poll(case.query)
    _resolve_credentials(case)
    response = case.call_and_validate(
        base_url=fuzz_server.url,
        session=http,
        additional_checks=[status_is_documented, error_is_the_envelope],
    )
    CALLS[case.operation.label] += 1
    STATUSES[response.status_code] += 1


def _shorten_long_poll(query: dict[str, Any]) -> None:
    """A poll waits at most 1 s here: an absent or valid `timeout` becomes 1 (invalid ones stay: they are 422s)."""
    values = query.get("timeout", [])
    values = values if isinstance(values, list) else [values]
    if not values or all(re.fullmatch(r"\s*\+?\d+\s*", str(value)) and int(value) >= 1 for value in values):
        query["timeout"] = 1


# -- what the fuzzing found, pinned on every backend ------------------------------------------------


@pytest.mark.parametrize("metadata", [{"title": "a\u0000b"}, {"title\ud800": "x"}, {"deep": [{"text": "\udfff"}]}])
async def test_metadata_strings_a_database_cannot_read_back_are_rejected(client, factory, metadata):
    # PostgreSQL stored such JSON, then failed every title search over it with a 500.
    token, _ = await factory.user()
    resp = await client.post(f"/v2/videos/{SEEDED_VIDEO}/notes", headers=auth(token), json={"timestamp": "0:01"})
    assert resp.status == 201
    writes = (
        (f"/v2/internal/videos/{SEEDED_VIDEO}/metadata", {"metadata": metadata}),
        ("/v2/internal/tasks/1/result", {"video_id": SEEDED_VIDEO, "success": True, "metadata": metadata}),
    )
    for path, body in writes:
        resp = await client.post(path, headers=ADMIN, json=body)
        assert resp.status == 422
        error = await resp.json()
        assert_error(error, "VALIDATION_ERROR")
        assert error["error"]["details"][0]["field"] == "body.metadata"
    resp = await client.get("/v2/videos", headers=auth(token), params={"q": "ab"})
    assert resp.status == 200
