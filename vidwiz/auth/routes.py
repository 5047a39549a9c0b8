"""Auth and users handlers: parse -> service -> render."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError

from vidwiz.auth import schemas, service
from vidwiz.auth.google import GoogleCertsUnavailable, GoogleTokenError
from vidwiz.auth.guards import client_address, require_user
from vidwiz.auth.identity import Viewer
from vidwiz.auth.throttle import Throttle
from vidwiz.context import GOOGLE, KEYS, REDIS, SESSIONS, SETTINGS, UNITS
from vidwiz.conversations.quota import DailyQuota
from vidwiz.errors import InternalError, Unauthorized
from vidwiz.system.openapi import operation
from vidwiz.validation import load_body

routes = web.RouteTableDef()
THROTTLED = "Too many attempts from this address or for this account; retry later (RATE_LIMIT_EXCEEDED)"


def _throttle(request: web.Request) -> Throttle:
    return Throttle(request.app[REDIS], request.app[KEYS], request.app[SETTINGS])


@routes.post("/v2/auth/register")
@operation(
    "Create an account with email and password",
    "auth",
    body=schemas.RegisterSchema,
    responses={201: schemas.MessageResponse, 409: "Email already exists (CONFLICT)", 429: THROTTLED},
)
async def register(request: web.Request) -> web.Response:
    body = await load_body(request, schemas.RegisterSchema)
    await _throttle(request).signup_attempt("register", client_address(request))
    async with request.app[UNITS]() as work:
        await service.register(work.session, **body)
    return web.json_response({"message": "User created successfully"}, status=201)


@routes.post("/v2/auth/login")
@operation(
    "Log in with email and password: an access token",
    "auth",
    body=schemas.LoginSchema,
    responses={200: schemas.TokenResponse, 401: "Invalid email or password (UNAUTHORIZED)", 429: THROTTLED},
)
async def login(request: web.Request) -> web.Response:
    body = await load_body(request, schemas.LoginSchema)
    async with _throttle(request).login_attempt(body["email"], client_address(request)):
        async with request.app[SESSIONS]() as session:
            login = await service.login(session, request.app[SETTINGS], **body)
        if login.new_hash:  # a legacy hash is upgraded at the first login
            async with request.app[UNITS]() as work:
                await service.store_password_hash(work.session, login.user_id, login.new_hash)
    return web.json_response({"token": login.token})


@routes.post("/v2/auth/google")
@operation(
    "Log in with a Google ID token: an access token",
    "auth",
    body=schemas.GoogleLoginSchema,
    responses={
        200: schemas.TokenResponse,
        400: "The Google token carries no email (BAD_REQUEST)",
        401: "Invalid Google credential (UNAUTHORIZED)",
        429: THROTTLED,
        500: "Google login is not configured, or Google's certificates are unreachable (INTERNAL_ERROR)",
    },
)
async def google_login(request: web.Request) -> web.Response:
    body = await load_body(request, schemas.GoogleLoginSchema)
    await _throttle(request).signup_attempt("google", client_address(request))
    verifier = request.app[GOOGLE]
    if verifier is None:
        raise InternalError("Google OAuth not configured")
    try:
        claims = await verifier.verify(body["credential"])
    except GoogleTokenError:
        raise Unauthorized("Invalid Google credential") from None
    except GoogleCertsUnavailable:  # our problem, not the client's credential (logged by the verifier)
        raise InternalError("Google certificates are unavailable") from None
    try:
        token = await _google_login(request.app, claims)
    except IntegrityError:  # a concurrent first sign-in with this identity created the row: use it
        token = await _google_login(request.app, claims)
    return web.json_response({"token": token})


async def _google_login(app: web.Application, claims: dict[str, Any]) -> str:
    async with app[UNITS]() as work:
        return await service.google_login(work.session, app[SETTINGS], claims)


@routes.post("/v2/auth/tokens")
@operation(
    "Create the long-term token (for the browser extension)",
    "auth",
    auth="jwt",
    responses={
        200: schemas.LongTermTokenResponse,
        400: "A long-term token already exists (BAD_REQUEST)",
        404: "User not found (NOT_FOUND)",
    },
)
async def create_long_term_token(request: web.Request) -> web.Response:
    user_id = require_user(request)
    async with request.app[UNITS]() as work:
        token = await service.create_long_term_token(work.session, request.app[SETTINGS], user_id)
    return web.json_response({"message": "Long-term token generated successfully", "token": token})


@routes.delete("/v2/auth/tokens")
@operation(
    "Revoke the long-term token",
    "auth",
    auth="jwt",
    responses={200: schemas.MessageResponse, 404: "User not found, or no long-term token (NOT_FOUND)"},
)
async def revoke_long_term_token(request: web.Request) -> web.Response:
    user_id = require_user(request)
    async with request.app[UNITS]() as work:
        await service.revoke_long_term_token(work.session, user_id)
    return web.json_response({"message": "Long-term token revoked successfully"})


@routes.get("/v2/users/me")
@operation(
    "The caller's profile and today's Wiz chat usage",
    "users",
    auth="jwt",
    responses={200: schemas.ProfileWithQuotaSchema, 404: "User not found (NOT_FOUND)"},
)
async def get_me(request: web.Request) -> web.Response:
    user_id = require_user(request)
    quota = DailyQuota(request.app[REDIS], request.app[KEYS], request.app[SETTINGS])
    async with request.app[SESSIONS]() as session:
        user = await service.get_user(session, user_id)
        usage = await quota.usage(session, Viewer(user_id=user_id))
    # `wiz_quota` is an addition to the reference's Profile (every other field unchanged).
    return web.json_response({**schemas.render_profile(user, include_token=True), "wiz_quota": usage.as_dict()})


@routes.patch("/v2/users/me")
@operation(
    "Update name and/or the AI-notes preference ({} is a no-op)",
    "users",
    auth="jwt",
    body=schemas.ProfileUpdateSchema,
    responses={200: schemas.ProfileSchema, 404: "User not found (NOT_FOUND)"},
)
async def update_me(request: web.Request) -> web.Response:
    user_id = require_user(request)
    body = await load_body(request, schemas.ProfileUpdateSchema)
    async with request.app[UNITS]() as work:
        user = await service.update_profile(work.session, user_id, **body)
    return web.json_response(schemas.render_profile(user, include_token=False))
