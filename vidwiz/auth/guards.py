"""Who is calling: JWT user, long-term token user, guest, or the admin (docs/api.md §2.2–2.5).

Each function takes the request and either returns the identity or raises the exact
APIError of the contract. Handlers call them first, so auth errors win over body 422s.
"""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web
from sqlalchemy import select

from config.settings import IPNetwork
from vidwiz.auth import tokens
from vidwiz.auth.identity import Viewer
from vidwiz.auth.models import User
from vidwiz.context import SESSIONS, SETTINGS, VIEWER_KIND
from vidwiz.errors import Forbidden, InternalError, Unauthorized, ValidationFailed

MISSING_HEADER = "Missing or invalid Authorization header"
MAX_GUEST_ID_LENGTH = 256


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise Unauthorized(MISSING_HEADER)
    return header.split(" ", 1)[1]


def _secret_key(request: web.Request) -> str:
    key = request.app[SETTINGS].secret_key
    if not key:
        raise InternalError("SECRET_KEY is not configured")
    return key


def require_user(request: web.Request) -> int:
    """JWT-only routes: the user id from a valid access token (the row is not loaded)."""
    token = bearer_token(request)
    try:
        claims = tokens.decode(_secret_key(request), token)
    except tokens.TokenError:
        raise Unauthorized("Invalid or expired token") from None
    if claims.get("type") == tokens.LONG_TERM:
        raise Unauthorized("Long-term tokens are not allowed for this endpoint")
    user_id = tokens.claim_user_id(claims)
    if user_id is None:
        raise Unauthorized("Invalid token payload")
    request[VIEWER_KIND] = "user"
    return user_id


async def require_user_or_long_term(request: web.Request) -> int:
    """`POST /v2/videos/{id}/notes`: an access JWT, or a long-term token that is still the user's current one."""
    token = bearer_token(request)
    try:
        claims = tokens.decode(_secret_key(request), token)
    except tokens.TokenError:
        claims = None
    if claims is not None:
        user_id = tokens.claim_user_id(claims)
        if user_id is None:
            raise Unauthorized("Invalid token payload")
        if claims.get("type") != tokens.LONG_TERM:
            request[VIEWER_KIND] = "user"
            return user_id  # access tokens need no lookup
        async with request.app[SESSIONS]() as session:
            stored = await session.scalar(select(User.long_term_token).where(User.id == user_id))
        if stored is None or not hmac.compare_digest(stored.encode(), token.encode()):
            raise Unauthorized("Invalid or revoked long-term token")
        request[VIEWER_KIND] = "user"
        return user_id
    # Fallback of the reference: a raw token equal to some user's stored long-term token.
    # Stored tokens are ASCII JWTs; undecodable header bytes must not reach the database.
    if token.isascii():
        async with request.app[SESSIONS]() as session:
            found = await session.scalar(select(User.id).where(User.long_term_token == token))
        if found is not None:
            request[VIEWER_KIND] = "user"
            return found
    raise Unauthorized("Invalid or expired token")


def resolve_viewer(request: web.Request) -> Viewer:
    """JWT user if a valid access token is presented; else the guest id; else 401."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        secret = _secret_key(request)
        try:
            claims = tokens.decode(secret, header.split(" ", 1)[1])
        except tokens.TokenError:
            claims = None
        if claims is not None and claims.get("type") != tokens.LONG_TERM:
            user_id = tokens.claim_user_id(claims)
            if user_id is not None:
                request[VIEWER_KIND] = "user"
                return Viewer(user_id=user_id)
    guest = request.headers.get("X-Guest-Session-ID", "")
    if guest:
        if len(guest) > MAX_GUEST_ID_LENGTH or not guest.isprintable():
            raise ValidationFailed(
                [
                    {
                        "field": "header.X-Guest-Session-ID",
                        "message": f"Guest session id must be 1..{MAX_GUEST_ID_LENGTH} printable characters",
                        "type": "value_error",
                    }
                ]
            )
        request[VIEWER_KIND] = "guest"
        return Viewer(guest_session_id=guest)
    raise Unauthorized("Missing Auth or Guest ID")


def require_admin(request: web.Request) -> None:
    """`/v2/internal/*`: the admin bearer token, compared in constant time (docs/api.md D13)."""
    token = bearer_token(request)
    expected = request.app[SETTINGS].admin_token
    if not expected:
        raise InternalError("Admin token is not configured")
    # surrogateescape: header bytes that are not UTF-8 arrive as lone surrogates.
    if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")):
        raise Forbidden("Invalid admin token")
    request[VIEWER_KIND] = "admin"


def client_address(request: web.Request) -> str:
    """The peer address; behind a TRUSTED_PROXIES proxy, the nearest untrusted X-Forwarded-For
    hop (the ones further left are the client's to invent)."""
    trusted_proxies = request.app[SETTINGS].trusted_proxies
    peer = request.remote or "unknown"
    if not trusted_proxies or not _is_trusted(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for hop in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


def _is_trusted(address: str, trusted_proxies: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_proxies)
