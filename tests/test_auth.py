"""Auth (docs/api.md §2, §3.1, D12–D14): register, login, legacy hashes, JWT rules, long-term tokens,
viewer resolution, the admin token, and Google sign-in against a local certificate endpoint."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from tests.conftest import ADMIN_TOKEN, SECRET_KEY, assert_error, auth, closed_port
from tests.google_certs import CLIENT_ID, GoogleCerts, SigningKey, google_claims
from vidwiz.auth import guards, service
from vidwiz.auth.google import GoogleTokenError, GoogleVerifier
from vidwiz.context import SETTINGS
from vidwiz.errors import Forbidden, InternalError, Unauthorized, ValidationFailed
from vidwiz.middleware import error_middleware
from vidwiz.models import User
from vidwiz.system.openapi import build_spec

INVALID_TOKEN = "Invalid or expired token"
MISSING_HEADER = "Missing or invalid Authorization header"
LONG_TERM_REFUSED = "Long-term tokens are not allowed for this endpoint"
TOKEN_EXISTS = "A long-term token already exists. Please revoke the existing token before generating a new one."


@pytest.fixture
def env(env, google_certs):
    return {**env, "GOOGLE_CLIENT_ID": CLIENT_ID, "GOOGLE_CERTS_URL": google_certs.url}


async def load_user(sessions, user_id: int | None = None, email: str | None = None) -> User | None:
    async with sessions() as session:
        if user_id is not None:
            return await session.get(User, user_id)
        return await session.scalar(select(User).where(User.email == email))


def mint(
    user_id=1, *, key: str = SECRET_KEY, algorithm: str = "HS256", expires_in: float | None = 3600, **claims
) -> str:
    payload = {"user_id": user_id, "email": "row@example.com", "name": "Row", "profile_image_url": None, **claims}
    if user_id is None:
        del payload["user_id"]
    if expires_in is not None:
        payload["exp"] = int(time.time() + expires_in)
    return jwt.encode(payload, key, algorithm=algorithm)


def b64(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def unsigned_token(payload: dict, header: object = None) -> str:
    return f"{b64(header if header is not None else {'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."


def decode(token: str) -> dict:
    return jwt.decode(token, SECRET_KEY, algorithms=["HS256"], options={"verify_exp": False})


async def error_of(resp, status: int, code: str, message: str | None = None) -> dict:
    body = await resp.json()
    assert resp.status == status, body
    assert_error(body, code, message)
    return body


# -- register ------------------------------------------------------------------------------------


async def test_register_creates_user_with_normalised_fields(client, sessions):
    resp = await client.post(
        "/v2/auth/register",
        json={
            "email": "  New.User@Example.COM ",
            "password": "seven77",
            "name": "  Ada Lovelace  ",
            "is_admin": True,
        },
    )
    assert resp.status == 201
    assert await resp.json() == {"message": "User created successfully"}
    user = await load_user(sessions, email="new.user@example.com")
    assert user.name == "Ada Lovelace"
    assert user.password_hash.startswith("$argon2id$")
    assert user.google_id is None and user.long_term_token is None and user.profile_image_url is None


async def test_register_duplicate_email_is_409_case_insensitively(client, factory):
    await factory.user_row(email="taken@example.com", name="Owner")
    for email in ("taken@example.com", "TAKEN@Example.com", " taken@EXAMPLE.com "):
        resp = await client.post("/v2/auth/register", json={"email": email, "password": "password1", "name": "Dup"})
        await error_of(resp, 409, "CONFLICT", "Email already exists")


async def test_concurrent_registrations_of_one_email_create_one_user(client, sessions):
    body = {"email": "race@example.com", "password": "password1", "name": "Racer"}
    statuses = sorted(
        [r.status for r in await asyncio.gather(*(client.post("/v2/auth/register", json=body) for _ in range(3)))]
    )
    assert statuses == [201, 409, 409]
    async with sessions() as session:
        assert len((await session.scalars(select(User).where(User.email == "race@example.com"))).all()) == 1


async def test_register_name_raw_length_counts_whitespace_then_trims(client, sessions):
    # Raw length 3 passes 2..100; trimmed "a" is non-empty, so it is stored as "a".
    resp = await client.post(
        "/v2/auth/register", json={"email": "a@example.com", "password": "password1", "name": " a "}
    )
    assert resp.status == 201
    assert (await load_user(sessions, email="a@example.com")).name == "a"


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            {"email": "x@example.com", "password": "six666", "name": "Ok"},
            [("body.password", "String should have at least 7 characters", "string_too_short")],
        ),
        (
            {"email": "x@example.com", "password": "password1", "name": "A"},
            [("body.name", "String should have at least 2 characters", "string_too_short")],
        ),
        (
            {"email": "x@example.com", "password": "password1", "name": "n" * 101},
            [("body.name", "String should have at most 100 characters", "string_too_long")],
        ),
        (
            {"email": "x@example.com", "password": "password1", "name": " " + "n" * 100},
            [("body.name", "String should have at most 100 characters", "string_too_long")],
        ),
        (
            {"email": "x@example.com", "password": "password1", "name": "   "},
            [("body.name", "Value error, Name cannot be empty", "value_error")],
        ),
        ({"email": "not-an-email", "password": "password1", "name": "Ok"}, [("body.email", None, "value_error")]),
        ({"email": "a@localhost", "password": "password1", "name": "Ok"}, [("body.email", None, "value_error")]),
        (
            {},
            [
                ("body.email", "Field required", "missing"),
                ("body.password", "Field required", "missing"),
                ("body.name", "Field required", "missing"),
            ],
        ),
        (
            {"email": 12, "password": 1234567, "name": ["Ok"]},
            [
                ("body.email", None, "string_type"),
                ("body.password", None, "string_type"),
                ("body.name", None, "string_type"),
            ],
        ),
        ({"email": None, "password": "password1", "name": "Ok"}, [("body.email", None, None)]),
        # Neither database can store NUL / unpaired surrogates: a 422, not a 500 at insert or hashing time.
        (
            {"email": "x@example.com", "password": "pass\ud800word", "name": "Nu\u0000ll"},
            [("body.password", None, "value_error"), ("body.name", None, "value_error")],
        ),
        (
            {"email": "bad", "password": "short", "name": "  "},
            [
                ("body.email", None, "value_error"),
                ("body.password", None, "string_too_short"),
                ("body.name", "Value error, Name cannot be empty", "value_error"),
            ],
        ),
    ],
)
async def test_register_validation(client, body, expected):
    resp = await client.post("/v2/auth/register", json=body)
    error = (await error_of(resp, 422, "VALIDATION_ERROR", "Request validation failed"))["error"]
    details = sorted(error["details"], key=lambda d: d["field"])
    assert [d["field"] for d in details] == sorted(field for field, _, _ in expected)
    for detail in details:
        assert set(detail) == {"field", "message", "type"}
        _, message, kind = next(e for e in expected if e[0] == detail["field"])
        if message is not None:
            assert detail["message"] == message
        if kind is not None:
            assert detail["type"] == kind
        if detail["field"] == "body.email" and kind == "value_error":
            assert detail["message"].startswith("value is not a valid email address")


async def test_register_accepts_display_name_email_form(client, sessions):
    # Pydantic's EmailStr (the reference) accepts "Name <addr>" and keeps the address.
    resp = await client.post(
        "/v2/auth/register", json={"email": "Grace Hopper <Grace@Navy.MIL>", "password": "password1", "name": "Grace"}
    )
    assert resp.status == 201
    assert await load_user(sessions, email="grace@navy.mil") is not None


# -- login ---------------------------------------------------------------------------------------


async def test_login_returns_token_with_exact_claims(client, sessions):
    await client.post(
        "/v2/auth/register", json={"email": "Login@Example.com", "password": "password1", "name": "Lo Gin"}
    )
    user = await load_user(sessions, email="login@example.com")
    before = datetime.now(UTC)
    resp = await client.post("/v2/auth/login", json={"email": " LOGIN@example.com", "password": "password1"})
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"token"}
    assert jwt.get_unverified_header(body["token"])["alg"] == "HS256"
    claims = decode(body["token"])
    assert set(claims) == {"user_id", "email", "name", "profile_image_url", "exp"}
    assert claims["user_id"] == user.id
    assert claims["email"] == "login@example.com"
    assert claims["name"] == "Lo Gin"
    assert claims["profile_image_url"] is None
    expected_exp = (before + timedelta(hours=24)).timestamp()
    assert expected_exp - 5 <= claims["exp"] <= expected_exp + 60
    me = await client.get("/v2/users/me", headers=auth(body["token"]))
    assert (await me.json())["email"] == "login@example.com"


async def test_login_rejects_wrong_password_and_unknown_email(client, factory):
    await factory.user_row(email="pw@example.com", password_hash=generate_password_hash("password1"))
    for body in (
        {"email": "pw@example.com", "password": "password2"},
        {"email": "nobody@example.com", "password": "password1"},
    ):
        resp = await client.post("/v2/auth/login", json=body)
        await error_of(resp, 401, "UNAUTHORIZED", "Invalid email or password")


async def test_login_google_only_user_cannot_use_a_password(client, factory):
    await factory.user_row(email="google@example.com", google_id="g-1", password_hash=None)
    resp = await client.post("/v2/auth/login", json={"email": "google@example.com", "password": "anything"})
    await error_of(resp, 401, "UNAUTHORIZED", "Invalid email or password")


async def test_login_validation(client):
    resp = await client.post("/v2/auth/login", json={"email": "a@example.com", "password": ""})
    body = await error_of(resp, 422, "VALIDATION_ERROR")
    assert body["error"]["details"] == [
        {"field": "body.password", "message": "String should have at least 1 characters", "type": "string_too_short"}
    ]
    resp = await client.post("/v2/auth/login", json={"email": "nope", "password": "x", "remember": True})
    body = await error_of(resp, 422, "VALIDATION_ERROR")
    assert [d["field"] for d in body["error"]["details"]] == ["body.email"]


async def test_passwords_over_1024_characters_are_refused_before_any_hashing(client, sessions, monkeypatch):
    hashed: list[str] = []
    real_hash, real_verify = service.hash_password, service.verify_password

    async def recording_hash(password):
        hashed.append(password)
        return await real_hash(password)

    async def recording_verify(stored, password):
        hashed.append(password)
        return await real_verify(stored, password)

    monkeypatch.setattr(service, "hash_password", recording_hash)
    monkeypatch.setattr(service, "verify_password", recording_verify)
    too_long = {
        "field": "body.password",
        "message": "String should have at most 1024 characters",
        "type": "string_too_long",
    }
    for password in ("p" * 1025, "p" * 5_000_000):
        for path, body in (
            ("/v2/auth/register", {"email": "long@example.com", "password": password, "name": "Long"}),
            ("/v2/auth/login", {"email": "long@example.com", "password": password}),
        ):
            resp = await client.post(path, json=body)
            assert (await error_of(resp, 422, "VALIDATION_ERROR"))["error"]["details"] == [too_long]
    assert hashed == [] and await load_user(sessions, email="long@example.com") is None

    creds = {"email": "long@example.com", "password": "p" * 1024}
    assert (await client.post("/v2/auth/register", json={**creds, "name": "Long"})).status == 201
    assert (await client.post("/v2/auth/login", json=creds)).status == 200
    assert len(hashed) == 2
    schemas = build_spec(client.app)["components"]["schemas"]
    assert schemas["Register"]["properties"]["password"]["maxLength"] == 1024
    assert schemas["Login"]["properties"]["password"]["maxLength"] == 1024


@pytest.mark.parametrize("method", ["scrypt", "pbkdf2:sha256:1000"])
async def test_legacy_werkzeug_hash_verifies_and_is_rehashed_to_argon2id(client, sessions, method, factory):
    legacy = generate_password_hash("old-password", method=method)
    assert legacy.startswith(method.split(":")[0] + ":")
    user_id = await factory.user_row(email="legacy@example.com", name="Legacy", password_hash=legacy)

    resp = await client.post("/v2/auth/login", json={"email": "legacy@example.com", "password": "wrong-password"})
    await error_of(resp, 401, "UNAUTHORIZED", "Invalid email or password")
    assert (await load_user(sessions, user_id)).password_hash == legacy

    resp = await client.post("/v2/auth/login", json={"email": "legacy@example.com", "password": "old-password"})
    assert resp.status == 200
    upgraded = (await load_user(sessions, user_id)).password_hash
    assert upgraded.startswith("$argon2id$")

    resp = await client.post("/v2/auth/login", json={"email": "legacy@example.com", "password": "old-password"})
    assert resp.status == 200
    assert (await load_user(sessions, user_id)).password_hash == upgraded  # current hashes are kept


async def test_login_with_garbage_stored_hash_is_401(client, factory):
    await factory.user_row(email="odd@example.com", password_hash="md5$abc$def")
    resp = await client.post("/v2/auth/login", json={"email": "odd@example.com", "password": "password1"})
    await error_of(resp, 401, "UNAUTHORIZED", "Invalid email or password")


# -- access JWTs ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # forged on purpose
async def test_bad_access_tokens_are_rejected(client, factory):
    user_id = await factory.user_row("row@example.com")
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = [
        (mint(user_id, expires_in=-10), INVALID_TOKEN),
        (mint(user_id, key="another-secret-key-that-is-long-enough"), INVALID_TOKEN),
        (unsigned_token({"user_id": user_id, "exp": int(time.time()) + 3600}), INVALID_TOKEN),
        (mint(user_id, algorithm="HS512"), INVALID_TOKEN),
        (mint(user_id, key=other_rsa, algorithm="RS256"), INVALID_TOKEN),
        (mint(user_id, expires_in=None), INVALID_TOKEN),  # D13: access tokens must carry exp
        (mint(user_id)[:-3] + "abc", INVALID_TOKEN),
        ("not.a.jwt", INVALID_TOKEN),
        ("garbage", INVALID_TOKEN),
        ("é-not-ascii", INVALID_TOKEN),
        (mint(None), "Invalid token payload"),
        (mint(0), "Invalid token payload"),
        (mint(""), "Invalid token payload"),
        (mint(user_id, expires_in=None, type="long_term", iat=time.time()), LONG_TERM_REFUSED),
    ]
    for token, message in cases:
        resp = await client.get("/v2/users/me", headers=auth(token))
        await error_of(resp, 401, "UNAUTHORIZED", message)


VIDEO = "dQw4w9WgXcQ"
# One route of each kind: JWT-only (a row loaded, and not), JWT or long-term, viewer.
ROUTE_KINDS = [
    ("GET", "/v2/users/me", None),
    ("GET", "/v2/videos", None),
    ("POST", f"/v2/videos/{VIDEO}/notes", {"timestamp": "0:01", "text": "hi"}),
    ("POST", "/v2/conversations", {"video_id": VIDEO}),
]


@pytest.mark.parametrize("method, path, body", ROUTE_KINDS)
async def test_well_signed_tokens_with_impossible_claims_are_401_on_every_route_kind(
    client, method, path, body, factory
):
    user_id = await factory.user_row("row@example.com")
    cases = [
        # user_id out of the INTEGER id column (or not an id at all): a bad payload, never a 500.
        *((mint(bad), "Invalid token payload") for bad in (10**30, 2**31, -1, 1e30, float("inf"), "9" * 5000)),
        # exp/nbf/iat must be numbers (PyJWT alone takes numeric strings).
        (mint(user_id, expires_in=None, exp="9999999999"), INVALID_TOKEN),
        (mint(user_id, expires_in=None, exp=float("inf")), INVALID_TOKEN),
        (mint(user_id, expires_in=None, exp=True), INVALID_TOKEN),
        (mint(user_id, nbf="0"), INVALID_TOKEN),
        (mint(user_id, expires_in=None, type="long_term", iat=str(time.time())), INVALID_TOKEN),
    ]
    huge_long_term = mint(10**30, expires_in=None, type="long_term", iat=time.time())
    if path.endswith("/notes"):
        cases.append((huge_long_term, "Invalid token payload"))
    elif method == "GET":
        cases.append((huge_long_term, LONG_TERM_REFUSED))
    for token, message in cases:
        resp = await client.request(method, path, json=body, headers=auth(token))
        if path == "/v2/conversations":  # viewer: a token that names no user falls through to the guest id
            await error_of(resp, 401, "UNAUTHORIZED", "Missing Auth or Guest ID")
            resp = await client.request(method, path, json=body, headers={**auth(token), "X-Guest-Session-ID": "g"})
            assert resp.status == 201, await resp.text()
        else:
            await error_of(resp, 401, "UNAUTHORIZED", message)
    # The largest id the column holds is still a well-formed payload.
    resp = await client.request(method, path, json=body, headers=auth(mint(2**31 - 1)))
    assert resp.status in (200, 201, 404), await resp.text()


async def test_authorization_header_must_be_exactly_bearer(client, factory):
    token = mint(await factory.user_row("row@example.com"))
    for headers in (
        {},
        {"Authorization": token},
        {"Authorization": f"bearer {token}"},
        {"Authorization": f"Token {token}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer\t{token}"},
    ):
        resp = await client.get("/v2/users/me", headers=headers)
        await error_of(resp, 401, "UNAUTHORIZED", MISSING_HEADER)
    assert (await client.get("/v2/users/me", headers=auth(token))).status == 200


async def raw_status(client, path: str, authorization: bytes) -> int:
    """Send header bytes no HTTP client library would (aiohttp decodes them with surrogateescape)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"GET "
        + path.encode()
        + b" HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + authorization
        + b"\r\nConnection: close\r\n\r\n"
    )
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


async def test_non_utf8_authorization_header_is_401_not_500(client):
    assert await raw_status(client, "/v2/users/me", b"Bearer \xff\xfe\xc3") == 401


async def test_deleted_user_token_gives_user_not_found(client, sessions, factory):
    user_id = await factory.user_row("row@example.com")
    async with sessions() as session:
        await session.delete(await session.get(User, user_id))
        await session.commit()
    token = auth(mint(user_id))
    for method, path in (
        ("GET", "/v2/users/me"),
        ("PATCH", "/v2/users/me"),
        ("POST", "/v2/auth/tokens"),
        ("DELETE", "/v2/auth/tokens"),
    ):
        resp = await client.request(method, path, headers=token, json={} if method == "PATCH" else None)
        await error_of(resp, 404, "NOT_FOUND", "User not found")


async def test_missing_secret_key_is_500(make_client):
    client = await make_client(secret_key=None)
    resp = await client.get("/v2/users/me", headers=auth("whatever"))
    await error_of(resp, 500, "INTERNAL_ERROR", "SECRET_KEY is not configured")
    await client.post("/v2/auth/register", json={"email": "s@example.com", "password": "password1", "name": "No Key"})
    resp = await client.post("/v2/auth/login", json={"email": "s@example.com", "password": "password1"})
    await error_of(resp, 500, "INTERNAL_ERROR", "SECRET_KEY is not configured")


async def test_jwt_expiry_hours_setting(make_client, factory):
    client = await make_client(jwt_expiry_hours=2)
    await factory.user_row(
        email="exp@example.com", password_hash=generate_password_hash("pw", method="pbkdf2:sha256:1000")
    )
    resp = await client.post("/v2/auth/login", json={"email": "exp@example.com", "password": "pw"})
    exp = decode((await resp.json())["token"])["exp"]
    assert time.time() + 2 * 3600 - 60 <= exp <= time.time() + 2 * 3600 + 5


# -- long-term tokens ----------------------------------------------------------------------------


async def test_long_term_token_lifecycle(client, sessions, factory):
    user_id = await factory.user_row(email="ext@example.com", name="Ext")
    jwt_headers = auth(mint(user_id))

    resp = await client.post("/v2/auth/tokens", headers=jwt_headers)
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"message", "token"}
    assert body["message"] == "Long-term token generated successfully"
    long_term = body["token"]
    claims = decode(long_term)
    assert set(claims) == {"user_id", "email", "type", "iat"}
    assert claims["user_id"] == user_id and claims["email"] == "ext@example.com" and claims["type"] == "long_term"
    assert isinstance(claims["iat"], float)
    assert (await load_user(sessions, user_id)).long_term_token == long_term

    me = await (await client.get("/v2/users/me", headers=jwt_headers)).json()
    assert me["long_term_token"] == long_term and me["token_exists"] is True

    resp = await client.post("/v2/auth/tokens", headers=jwt_headers)
    await error_of(resp, 400, "BAD_REQUEST", TOKEN_EXISTS)

    patched = await (await client.patch("/v2/users/me", headers=jwt_headers, json={})).json()
    assert patched["long_term_token"] is None and patched["token_exists"] is True

    for method, path in (
        ("GET", "/v2/users/me"),
        ("PATCH", "/v2/users/me"),
        ("POST", "/v2/auth/tokens"),
        ("DELETE", "/v2/auth/tokens"),
    ):
        resp = await client.request(
            method, path, headers=auth(long_term), json={"name": 5} if method == "PATCH" else None
        )
        await error_of(resp, 401, "UNAUTHORIZED", LONG_TERM_REFUSED)

    resp = await client.delete("/v2/auth/tokens", headers=jwt_headers)
    assert resp.status == 200
    assert await resp.json() == {"message": "Long-term token revoked successfully"}
    me = await (await client.get("/v2/users/me", headers=jwt_headers)).json()
    assert me["long_term_token"] is None and me["token_exists"] is False

    resp = await client.delete("/v2/auth/tokens", headers=jwt_headers)
    await error_of(resp, 404, "NOT_FOUND", "No long-term token found")

    resp = await client.post("/v2/auth/tokens", headers=jwt_headers)
    assert resp.status == 200
    assert (await resp.json())["token"] != long_term


async def test_concurrent_long_term_token_creation_and_revocation_each_succeed_once(client, sessions, factory):
    user_id = await factory.user_row(email="ext@example.com")
    jwt_headers = auth(mint(user_id))
    created = await asyncio.gather(*(client.post("/v2/auth/tokens", headers=jwt_headers) for _ in range(10)))
    assert sorted(resp.status for resp in created) == [200] + [400] * 9
    for resp in created:
        if resp.status == 400:
            await error_of(resp, 400, "BAD_REQUEST", TOKEN_EXISTS)
    [token] = [(await resp.json())["token"] for resp in created if resp.status == 200]
    assert (await load_user(sessions, user_id)).long_term_token == token
    note = {"timestamp": "0:01", "text": "from the extension"}
    assert (await client.post("/v2/videos/dQw4w9WgXcQ/notes", json=note, headers=auth(token))).status == 201

    revoked = await asyncio.gather(*(client.delete("/v2/auth/tokens", headers=jwt_headers) for _ in range(10)))
    assert sorted(resp.status for resp in revoked) == [200] + [404] * 9
    for resp in revoked:
        if resp.status == 404:
            await error_of(resp, 404, "NOT_FOUND", "No long-term token found")
    resp = await client.post("/v2/videos/dQw4w9WgXcQ/notes", json=note, headers=auth(token))
    await error_of(resp, 401, "UNAUTHORIZED", "Invalid or revoked long-term token")


async def test_long_term_token_routes_for_a_deleted_user_are_404(client):
    for method in ("POST", "DELETE"):
        resp = await client.request(method, "/v2/auth/tokens", headers=auth(mint(999_999)))
        await error_of(resp, 404, "NOT_FOUND", "User not found")


async def test_token_routes_need_a_jwt(client):
    for method in ("POST", "DELETE"):
        resp = await client.request(method, "/v2/auth/tokens")
        await error_of(resp, 401, "UNAUTHORIZED", MISSING_HEADER)
        resp = await client.request(method, "/v2/auth/tokens", headers=auth("garbage"))
        await error_of(resp, 401, "UNAUTHORIZED", INVALID_TOKEN)


async def test_require_user_or_long_term(client, sessions, factory):
    """The note-creation flavour (docs/api.md §2.2), exercised directly on the running app."""
    user_id = await factory.user_row(email="lt@example.com")
    other_id = await factory.user_row(email="other@example.com")
    long_term = (await (await client.post("/v2/auth/tokens", headers=auth(mint(user_id)))).json())["token"]
    # A stored token that no longer verifies (e.g. signed before SECRET_KEY rotated) still works by lookup.
    legacy = mint(other_id, key="the-previous-secret-key-long-enough", expires_in=None, type="long_term")
    async with sessions() as session:
        (await session.get(User, other_id)).long_term_token = legacy
        await session.commit()
    stale = jwt.encode({"user_id": user_id, "email": "lt@example.com", "type": "long_term", "iat": 1.0}, SECRET_KEY)

    async def call(header: str | None) -> int:
        headers = {"Authorization": header} if header is not None else {}
        return await guards.require_user_or_long_term(make_mocked_request("POST", "/", headers=headers, app=client.app))

    assert await call(f"Bearer {mint(user_id)}") == user_id
    assert await call(f"Bearer {mint(999_999)}") == 999_999  # access tokens need no row
    assert await call(f"Bearer {long_term}") == user_id
    assert await call(f"Bearer {legacy}") == other_id
    for header, message in (
        (None, MISSING_HEADER),
        ("bearer x", MISSING_HEADER),
        (f"Bearer {stale}", "Invalid or revoked long-term token"),
        (f"Bearer {mint(None)}", "Invalid token payload"),
        (f"Bearer {mint(user_id, expires_in=-5)}", INVALID_TOKEN),
        ("Bearer garbage", INVALID_TOKEN),
        ("Bearer ünïcode", INVALID_TOKEN),
    ):
        with pytest.raises(Unauthorized) as caught:
            await call(header)
        assert caught.value.message == message

    await client.delete("/v2/auth/tokens", headers=auth(mint(user_id)))
    with pytest.raises(Unauthorized) as caught:
        await call(f"Bearer {long_term}")
    assert caught.value.message == "Invalid or revoked long-term token"


# -- viewer resolution and admin -----------------------------------------------------------------


def _request(app, **headers) -> web.Request:
    return make_mocked_request("GET", "/", headers=headers, app=app)


async def test_resolve_viewer_rules(client):
    app = client.app
    guest = {"X-Guest-Session-ID": "3f1b2c4d-guest"}
    long_term = jwt.encode({"user_id": 7, "email": "x@y.z", "type": "long_term", "iat": 1.0}, SECRET_KEY)

    found = guards.resolve_viewer(_request(app, Authorization=f"Bearer {mint(7)}", **guest))
    assert (found.user_id, found.guest_session_id, found.is_guest, found.key) == (7, None, False, "user:7")
    found = guards.resolve_viewer(_request(app, **guest))
    assert (found.user_id, found.guest_session_id, found.is_guest, found.key) == (
        None,
        "3f1b2c4d-guest",
        True,
        "guest:3f1b2c4d-guest",
    )
    # Anything that is not a usable access token silently falls through to the guest id.
    for header in (
        f"Bearer {long_term}",
        "Bearer garbage",
        f"Bearer {mint(7, expires_in=-1)}",
        f"Bearer {mint(None)}",
        f"bearer {mint(7)}",
        f"Bearer {mint(7, expires_in=None)}",
    ):
        assert guards.resolve_viewer(_request(app, Authorization=header, **guest)).guest_session_id == "3f1b2c4d-guest"
        with pytest.raises(Unauthorized) as caught:
            guards.resolve_viewer(_request(app, Authorization=header))
        assert caught.value.message == "Missing Auth or Guest ID"
    for headers in ({}, {"X-Guest-Session-ID": ""}):
        with pytest.raises(Unauthorized) as caught:
            guards.resolve_viewer(_request(app, **headers))
        assert caught.value.message == "Missing Auth or Guest ID"
    # Any id a browser makes (crypto.randomUUID) works; absurd ids are refused before they reach storage.
    assert guards.resolve_viewer(_request(app, **{"X-Guest-Session-ID": "x" * 256})).guest_session_id == "x" * 256
    with pytest.raises(ValidationFailed):
        guards.resolve_viewer(_request(app, **{"X-Guest-Session-ID": "x" * 257}))


def _bare_app(settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    return app


async def test_resolve_viewer_without_secret_key_is_500(settings):
    app = _bare_app(dataclasses.replace(settings, secret_key=None))
    with pytest.raises(InternalError) as caught:
        guards.resolve_viewer(_request(app, Authorization="Bearer x", **{"X-Guest-Session-ID": "g"}))
    assert caught.value.message == "SECRET_KEY is not configured"
    assert guards.resolve_viewer(_request(app, **{"X-Guest-Session-ID": "g"})).guest_session_id == "g"


async def test_require_admin(settings, aiohttp_client):
    app = _bare_app(settings)
    assert guards.require_admin(_request(app, Authorization=f"Bearer {ADMIN_TOKEN}")) is None
    for headers in ({}, {"Authorization": ADMIN_TOKEN}, {"Authorization": f"bearer {ADMIN_TOKEN}"}):
        with pytest.raises(Unauthorized) as caught:
            guards.require_admin(_request(app, **headers))
        assert caught.value.message == MISSING_HEADER
    for token in ("wrong", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1], "ünïcode"):
        with pytest.raises(Forbidden) as caught:
            guards.require_admin(_request(app, Authorization=f"Bearer {token}"))
        assert caught.value.message == "Invalid admin token"
    with pytest.raises(Forbidden):  # a user's JWT is not the admin token
        guards.require_admin(_request(app, Authorization=f"Bearer {mint(1)}"))
    # Header bytes that are not UTF-8 are a 403 too, through a real server.
    probe = _bare_app(settings)
    probe.middlewares.append(error_middleware)

    async def admin_only(request):
        guards.require_admin(request)
        return web.json_response({})

    probe.router.add_get("/admin-only", admin_only)
    probe_client = await aiohttp_client(probe)
    assert await raw_status(probe_client, "/admin-only", b"Bearer " + ADMIN_TOKEN.encode() + b"\xff") == 403
    assert await raw_status(probe_client, "/admin-only", f"Bearer {ADMIN_TOKEN}".encode()) == 200

    unconfigured = _bare_app(dataclasses.replace(settings, admin_token=None))
    with pytest.raises(InternalError) as caught:
        guards.require_admin(_request(unconfigured, Authorization="Bearer anything"))
    assert caught.value.message == "Admin token is not configured"


# -- Google sign-in ------------------------------------------------------------------------------


async def google_login(client, credential: str):
    return await client.post("/v2/auth/google", json={"credential": credential})


async def test_google_login_creates_user_and_signs_in_again(client, sessions, google_certs):
    claims = google_claims(email="New.Person@Gmail.com", name="New Person")
    resp = await google_login(client, google_certs.key.sign(claims))
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"token"}
    token_claims = decode(body["token"])
    assert set(token_claims) == {"user_id", "email", "name", "profile_image_url", "exp"}
    assert token_claims["email"] == "new.person@gmail.com"
    assert token_claims["name"] == "New Person"
    assert token_claims["profile_image_url"] == claims["picture"]
    user = await load_user(sessions, token_claims["user_id"])
    assert (user.email, user.google_id, user.name, user.password_hash) == (
        "new.person@gmail.com",
        claims["sub"],
        "New Person",
        None,
    )

    again = google_claims(sub=claims["sub"], email="NEW.PERSON@gmail.com", name="Renamed", picture="https://x/new.png")
    resp = await google_login(client, google_certs.key.sign(again))
    assert resp.status == 200
    assert decode((await resp.json())["token"])["user_id"] == user.id
    user = await load_user(sessions, user.id)
    assert user.name == "New Person"  # an existing name is kept
    assert user.profile_image_url == "https://x/new.png"  # a picture always overwrites

    # A user without picture keeps the stored one.
    resp = await google_login(client, google_certs.key.sign(google_claims(sub=claims["sub"], picture=None)))
    assert resp.status == 200
    assert (await load_user(sessions, user.id)).profile_image_url == "https://x/new.png"


async def test_concurrent_first_google_sign_ins_share_one_user(client, sessions, google_certs):
    credential = google_certs.sign(email="first@example.com")
    responses = await asyncio.gather(*(google_login(client, credential) for _ in range(4)))
    assert [r.status for r in responses] == [200] * 4
    user_ids = {decode((await r.json())["token"])["user_id"] for r in responses}
    async with sessions() as session:
        assert [u.id for u in (await session.scalars(select(User))).all()] == list(user_ids)


async def test_google_login_defaults_name_to_email_local_part(client, sessions, google_certs):
    resp = await google_login(client, google_certs.sign(email="Jane.Doe@Example.org", name=None, picture=None))
    assert resp.status == 200
    user = await load_user(sessions, email="jane.doe@example.org")
    assert user.name == "jane.doe" and user.profile_image_url is None


async def test_google_login_links_existing_account_only_when_email_verified(client, sessions, google_certs, factory):
    user_id = await factory.user_row(email="linked@example.com", name="Original", password_hash="scrypt:x$y$z")
    for verified in (False, None, "false"):
        resp = await google_login(client, google_certs.sign(email="Linked@Example.com", email_verified=verified))
        await error_of(resp, 401, "UNAUTHORIZED", "Invalid Google credential")
    assert (await load_user(sessions, user_id)).google_id is None

    claims = google_claims(email="Linked@Example.com", email_verified=True, name="Google Name")
    resp = await google_login(client, google_certs.key.sign(claims))
    assert resp.status == 200
    assert decode((await resp.json())["token"])["user_id"] == user_id
    user = await load_user(sessions, user_id)
    assert (user.google_id, user.name, user.password_hash) == (claims["sub"], "Original", "scrypt:x$y$z")
    assert user.profile_image_url == claims["picture"]


async def test_google_login_fills_missing_name_of_existing_account(client, sessions, google_certs, factory):
    user_id = await factory.user_row(email="noname@example.com", name=None)
    resp = await google_login(client, google_certs.sign(email="noname@example.com", name="Filled In"))
    assert resp.status == 200
    assert (await load_user(sessions, user_id)).name == "Filled In"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # forged on purpose
async def test_google_login_rejects_invalid_credentials(client, sessions, google_certs):
    now = int(time.time())
    impostor = SigningKey("google-key-1-impostor")
    cases = {
        "wrong audience": google_certs.sign(aud="someone-else.apps.googleusercontent.com"),
        "expired": google_certs.sign(iat=now - 7200, exp=now - 3600),
        "issued in the future": google_certs.sign(iat=now + 600, exp=now + 4200),
        "bad signature": impostor.sign(google_claims(), kid=google_certs.key.kid),
        "unknown key id": impostor.sign(google_claims()),
        "wrong issuer": google_certs.sign(iss="https://evil.example.com"),
        "no issuer": google_certs.sign(iss=None),
        "HS256 with a guessable key": jwt.encode(
            google_claims(), "secret", algorithm="HS256", headers={"kid": google_certs.key.kid}
        ),
        "alg none": unsigned_token(google_claims()),
        "garbage": "not-a-token",
        "key id not a string": unsigned_token(google_claims(), {"alg": "RS256", "kid": ["google-key-1"]}) + "c2ln",
        "header not an object": unsigned_token(google_claims(), [1, 2]) + "c2ln",
        "tampered payload": google_certs.sign()[:-8] + "AAAAAAAA",
    }
    for case, credential in cases.items():
        resp = await google_login(client, credential)
        body = await resp.json()
        assert resp.status == 401, (case, body)
        assert_error(body, "UNAUTHORIZED", "Invalid Google credential")
    async with sessions() as session:
        assert (await session.scalars(select(User))).all() == []


async def test_google_login_without_email_is_400(client, google_certs):
    resp = await google_login(client, google_certs.sign(email=None))
    await error_of(resp, 400, "BAD_REQUEST", "Email is required for Google Sign-In")


async def test_google_login_validation(client):
    for body, field, kind in (
        ({}, "body.credential", "missing"),
        ({"credential": ""}, "body.credential", "string_too_short"),
        ({"credential": 5}, "body.credential", "string_type"),
    ):
        resp = await client.post("/v2/auth/google", json=body)
        error = (await error_of(resp, 422, "VALIDATION_ERROR"))["error"]
        assert [(d["field"], d["type"]) for d in error["details"]] == [(field, kind)]


async def test_google_login_not_configured_is_500(make_client, google_certs):
    client = await make_client(google_client_id=None)
    resp = await google_login(client, google_certs.sign())
    await error_of(resp, 500, "INTERNAL_ERROR", "Google OAuth not configured")


async def test_google_login_with_jwks_endpoint(make_client, google_certs):
    client = await make_client(google_certs_url=google_certs.jwks_url)
    resp = await google_login(client, google_certs.sign(email="jwks@example.com"))
    assert resp.status == 200, await resp.text()


async def test_google_certificates_unreachable_is_500_not_401(make_client):
    client = await make_client(google_certs_url=f"http://127.0.0.1:{closed_port()}/certs")
    resp = await google_login(client, GoogleCerts().sign())
    await error_of(resp, 500, "INTERNAL_ERROR")


async def test_google_certificates_are_cached_and_refetched_on_rotation(google_certs):
    async with aiohttp.ClientSession() as http:
        verifier = GoogleVerifier(CLIENT_ID, google_certs.url, http, min_refresh_seconds=0)
        for _ in range(3):
            assert (await verifier.verify(google_certs.sign()))["aud"] == CLIENT_ID
        assert google_certs.fetches == 1

        google_certs.keys = [SigningKey("google-key-2")]  # Google rotated its keys
        assert (await verifier.verify(google_certs.sign()))["aud"] == CLIENT_ID
        assert google_certs.fetches == 2


async def test_google_unknown_key_ids_do_not_hammer_the_certificate_endpoint(google_certs):
    async with aiohttp.ClientSession() as http:
        verifier = GoogleVerifier(CLIENT_ID, google_certs.url, http)
        stranger = SigningKey("unknown-kid")
        for _ in range(5):
            with pytest.raises(GoogleTokenError):
                await verifier.verify(stranger.sign(google_claims()))
        assert google_certs.fetches == 1  # certificates fetched moments ago are not refetched for made-up key ids
