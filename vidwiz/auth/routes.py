"""Auth and users handlers: parse -> service -> render."""
from __future__ import annotations

from aiohttp import web

from vidwiz.auth import schemas, service
from vidwiz.auth.google import GoogleCertsUnavailable, GoogleTokenError
from vidwiz.auth.viewer import Viewer, require_user
from vidwiz.context import GOOGLE, KEYS, REDIS, SESSIONS, SETTINGS
from vidwiz.conversations.quota import DailyQuota
from vidwiz.errors import InternalError, Unauthorized
from vidwiz.validation import load_body

routes = web.RouteTableDef()


@routes.post("/v2/auth/register")
async def register(request: web.Request) -> web.Response:
    body = await load_body(request, schemas.RegisterSchema())
    async with request.app[SESSIONS]() as session:
        await service.register(session, **body)
    return web.json_response({"message": "User created successfully"}, status=201)


@routes.post("/v2/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await load_body(request, schemas.LoginSchema())
    async with request.app[SESSIONS]() as session:
        token = await service.login(session, request.app[SETTINGS], **body)
    return web.json_response({"token": token})


@routes.post("/v2/auth/google")
async def google_login(request: web.Request) -> web.Response:
    body = await load_body(request, schemas.GoogleLoginSchema())
    verifier = request.app[GOOGLE]
    if verifier is None:
        raise InternalError("Google OAuth not configured")
    try:
        claims = await verifier.verify(body["credential"])
    except GoogleTokenError:
        raise Unauthorized("Invalid Google credential") from None
    except GoogleCertsUnavailable:  # our problem, not the client's credential (logged by the verifier)
        raise InternalError("Google certificates are unavailable") from None
    async with request.app[SESSIONS]() as session:
        token = await service.google_login(session, request.app[SETTINGS], claims)
    return web.json_response({"token": token})


@routes.post("/v2/auth/tokens")
async def create_long_term_token(request: web.Request) -> web.Response:
    user_id = require_user(request)
    async with request.app[SESSIONS]() as session:
        token = await service.create_long_term_token(session, request.app[SETTINGS], user_id)
    return web.json_response({"message": "Long-term token generated successfully", "token": token})


@routes.delete("/v2/auth/tokens")
async def revoke_long_term_token(request: web.Request) -> web.Response:
    user_id = require_user(request)
    async with request.app[SESSIONS]() as session:
        await service.revoke_long_term_token(session, user_id)
    return web.json_response({"message": "Long-term token revoked successfully"})


@routes.get("/v2/users/me")
async def get_me(request: web.Request) -> web.Response:
    user_id = require_user(request)
    quota = DailyQuota(request.app[REDIS], request.app[KEYS], request.app[SETTINGS])
    async with request.app[SESSIONS]() as session:
        user = await service.get_user(session, user_id)
        usage = await quota.usage(session, Viewer(user_id=user_id))
    # `wiz_quota` is an addition to the reference's Profile (every other field unchanged).
    return web.json_response({**schemas.render_profile(user, include_token=True), "wiz_quota": usage.as_dict()})


@routes.patch("/v2/users/me")
async def update_me(request: web.Request) -> web.Response:
    user_id = require_user(request)
    body = await load_body(request, schemas.ProfileUpdateSchema())
    async with request.app[SESSIONS]() as session:
        user = await service.update_profile(session, user_id, **body)
    return web.json_response(schemas.render_profile(user, include_token=False))
